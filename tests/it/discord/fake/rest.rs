//! The fake's REST endpoints under `/api/v10/`, with Discord's error bodies and rate-limit
//! headers.

use axum::extract::Request;
use axum::middleware::Next;

use super::*;

/// Every endpoint but the gateway URL and interaction callbacks wants the bot's token, as
/// Discord does: the layer over those routes answers 401 without it.
pub(super) async fn require_bot_token(request: Request, next: Next) -> Response {
    let authorised = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(format!("Bot {TOKEN}").as_str());
    if !authorised {
        return unauthorised();
    }
    next.run(request).await
}

fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn unauthorised() -> Response {
    error(401, 0, "401: Unauthorized")
}

/// Discord's rate-limit headers on a successful call: a bucket of 5, never empty here.
fn ok_json(value: Value) -> Response {
    let mut response = axum::Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", "5".parse().unwrap());
    headers.insert("x-ratelimit-remaining", "4".parse().unwrap());
    headers.insert("x-ratelimit-reset-after", "1.0".parse().unwrap());
    headers.insert("x-ratelimit-bucket", "fake-bucket".parse().unwrap());
    response
}

pub(super) async fn gateway_url(State(shared): State<Arc<Shared>>) -> Response {
    ok_json(json!({"url": format!("ws://{}/gateway", shared.base)}))
}

pub(super) async fn gateway_bot(State(shared): State<Arc<Shared>>) -> Response {
    ok_json(
        json!({"url": format!("ws://{}/gateway", shared.base), "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
    )
}

pub(super) async fn users_me() -> Response {
    ok_json(bot_user())
}

pub(super) async fn open_dm(
    State(shared): State<Arc<Shared>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Some(user) = body["recipient_id"]
        .as_str()
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return error(400, 50035, "Invalid Form Body");
    };
    let mut state = shared.state.lock().unwrap();
    let id = match state.dms.get(&user) {
        Some(id) => *id,
        None => {
            let id = shared.snowflake();
            state.dms.insert(user, id);
            state
                .channels
                .insert(id, ChannelKind::Dm { recipient: user });
            id
        }
    };
    ok_json(
        json!({"id": id.to_string(), "type": 1, "recipients": [state.users.get(&user).map(User::json)]}),
    )
}

pub(super) async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<u64>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut state = shared.state.lock().unwrap();
    *state.send_attempts.entry(channel).or_default() += 1;
    if let Some(index) = state
        .faults
        .iter()
        .position(|fault| fault.channel == channel || fault.channel == 0)
    {
        let fault = state.faults[index].clone();
        if fault.times <= 1 {
            state.faults.remove(index);
        } else {
            state.faults[index].times -= 1;
        }
        if fault.status == 429 {
            let retry_after = fault.retry_after.unwrap_or(1.0);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"message": "You are being rate limited.",
                    "retry_after": retry_after, "global": false})),
            )
                .into_response();
            let headers = response.headers_mut();
            headers.insert(
                "retry-after",
                format!("{}", retry_after.ceil() as u64).parse().unwrap(),
            );
            headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
            headers.insert(
                "x-ratelimit-reset-after",
                format!("{retry_after}").parse().unwrap(),
            );
            headers.insert("x-ratelimit-scope", "user".parse().unwrap());
            return response;
        }
        return error(fault.status, fault.code, &fault.message);
    }
    if !state.channels.contains_key(&channel) {
        return error(404, 10003, "Unknown Channel");
    }
    let content = body["content"].as_str().unwrap_or_default();
    if content.is_empty() && body["components"].is_null() {
        return error(400, 50006, "Cannot send an empty message");
    }
    if content.chars().map(char::len_utf16).sum::<usize>() > 2000 {
        return error(
            400,
            50035,
            "Invalid Form Body: content must be 2000 or fewer in length",
        );
    }
    // `enforce_nonce`: a message with the same nonce from the bot within a few minutes is
    // answered with the message already created, and nothing new is posted.
    if body["enforce_nonce"] == true
        && let Some(nonce) = body["nonce"].as_str()
        && let Some(existing) = state.messages.get(&channel).and_then(|messages| {
            messages
                .iter()
                .find(|message| {
                    message["nonce"] == nonce && is_id(&message["author"]["id"], BOT_ID)
                })
                .cloned()
        })
    {
        return ok_json(existing);
    }
    let id = shared.snowflake();
    let mut message = message_json(
        id,
        channel,
        bot_user(),
        content,
        Vec::new(),
        Vec::new(),
        body["components"].clone(),
    );
    message["nonce"] = body["nonce"].clone();
    state
        .messages
        .entry(channel)
        .or_default()
        .push(message.clone());
    // Discord sends the bot its own messages too.
    let dispatch = with_guild(&state, message.clone());
    if let Some(connection) = state.connection.as_ref().filter(|_| !state.deaf) {
        let _ = connection.send(Push::Dispatch("MESSAGE_CREATE", dispatch));
    }
    ok_json(message)
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<u64>,
    Query(query): Query<ListQuery>,
) -> Response {
    let state = shared.state.lock().unwrap();
    if !state.channels.contains_key(&channel) {
        return error(404, 10003, "Unknown Channel");
    }
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(50).clamp(1, 100);
    let mut page: Vec<Value> = state
        .messages
        .get(&channel)
        .into_iter()
        .flatten()
        .filter(|message| message["id"].as_str().unwrap().parse::<u64>().unwrap() > after)
        .take(limit)
        .cloned()
        .collect();
    // Discord lists newest first.
    page.reverse();
    ok_json(Value::Array(page))
}

pub(super) async fn get_message(
    State(shared): State<Arc<Shared>>,
    Path((channel, message)): Path<(u64, u64)>,
) -> Response {
    let state = shared.state.lock().unwrap();
    let found = state
        .messages
        .get(&channel)
        .into_iter()
        .flatten()
        .find(|item| is_id(&item["id"], message))
        .cloned();
    match found {
        Some(found) => ok_json(found),
        None => error(404, 10008, "Unknown Message"),
    }
}

pub(super) async fn create_thread(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<u64>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut state = shared.state.lock().unwrap();
    if state.channels.get(&channel) != Some(&ChannelKind::Text) {
        return error(404, 10003, "Unknown Channel");
    }
    if body["type"] != 12 {
        return error(400, 50035, "Invalid Form Body: only private threads here");
    }
    let id = shared.snowflake();
    state.channels.insert(
        id,
        ChannelKind::PrivateThread {
            parent: channel,
            members: BTreeSet::from([BOT_ID]),
        },
    );
    state.threads_created.push((channel, id));
    ok_json(
        json!({"id": id.to_string(), "type": 12, "guild_id": GUILD_ID.to_string(),
        "parent_id": channel.to_string(), "name": body["name"], "owner_id": BOT_ID.to_string(),
        "thread_metadata": {"archived": false, "auto_archive_duration": 10080,
            "archive_timestamp": chrono::Utc::now().to_rfc3339(), "locked": false, "invitable": false}}),
    )
}

pub(super) async fn add_thread_member(
    State(shared): State<Arc<Shared>>,
    Path((channel, user)): Path<(u64, u64)>,
) -> Response {
    let mut state = shared.state.lock().unwrap();
    match state.channels.get_mut(&channel) {
        Some(ChannelKind::PrivateThread { members, .. }) => {
            members.insert(user);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(404, 10003, "Unknown Channel"),
    }
}

pub(super) async fn interaction_callback(
    State(shared): State<Arc<Shared>>,
    Path((interaction, _token)): Path<(u64, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    // Interaction callbacks are authorised by their token, not the bot's.
    shared.state.lock().unwrap().acks.push((interaction, body));
    StatusCode::NO_CONTENT.into_response()
}
