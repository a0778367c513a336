//! The Telegram peer: the npm package `telegram-test-api` (tests/peers/telegram, installed by
//! scripts/test) run per test, behind a small proxy that gives the connector the real Bot API
//! where the emulator cuts corners. The connector is never told it talks to an emulator.
//!
//! What the proxy fixes, and why:
//! - `getUpdates` ignores `offset` and `timeout` in the emulator and hands each update out once.
//!   Telegram keeps every update until a call with a higher offset confirms it, and holds a
//!   long poll open; the proxy does both, so a crash before the offset moved re-reads.
//! - The emulator's webhook carries no `X-Telegram-Bot-Api-Secret-Token`, never retries, and
//!   dies on an unreachable URL. Telegram sends the secret and retries until it gets a 2xx; the
//!   proxy registers itself as the emulator's webhook and delivers that way.
//! - Answers lack fields Telegram always sends (`is_bot` of `getMe`, the bot as `from` of its
//!   messages, `chat_instance` of a callback) and give `date` in milliseconds.
//!
//! It also records what the bot sent, and can answer a `sendMessage` with a Telegram error
//! (429 with `retry_after`, 403) to test the connector's handling.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::free_port;

/// The emulator's bot (its `getMe`).
pub const BOT_ID: i64 = 666;
pub const BOT_USERNAME: &str = "TestNameBot";

/// A message the bot sent, as the proxy saw it accepted.
#[derive(Debug, Clone)]
pub struct BotMessage {
    pub message_id: i64,
    pub chat_id: i64,
    /// As sent (HTML-escaped).
    pub text: String,
    pub parse_mode: Option<String>,
    pub reply_to: Option<i64>,
    /// (label, callback data) of the inline keyboard's buttons.
    pub buttons: Vec<(String, String)>,
    pub raw: Value,
}

impl BotMessage {
    /// The text as the customer reads it.
    pub fn shown(&self) -> String {
        self.text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }
}

/// A Telegram error to answer the next `sendMessage` to a chat with.
#[derive(Debug, Clone)]
pub struct Fault {
    pub chat_id: i64,
    pub error_code: u16,
    pub description: String,
    pub retry_after: Option<u64>,
}

#[derive(Default)]
struct Shared {
    emulator: String,
    own_url: String,
    client: reqwest::Client,
    /// Updates fetched from the emulator and not yet confirmed by an offset, per token.
    pending: Mutex<HashMap<String, Vec<Value>>>,
    /// token -> (url, secret) from the bot's `setWebhook`.
    webhooks: Mutex<HashMap<String, (String, Option<String>)>>,
    deliveries: Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>,
    faults: Mutex<VecDeque<Fault>>,
    sent: Mutex<Vec<(String, BotMessage)>>,
    send_attempts: Mutex<HashMap<i64, usize>>,
    callback_answers: AtomicUsize,
    /// Webhook deliveries the app answered with something other than 2xx.
    refused_deliveries: AtomicUsize,
}

pub struct TelegramPeer {
    /// The Bot API URL to give the connector (`api_url`): the proxy.
    pub api_url: String,
    shared: Arc<Shared>,
    _emulator: tokio::process::Child,
    _proxy: tokio::task::JoinHandle<()>,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TelegramPeer {
    pub async fn start() -> TelegramPeer {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/telegram");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/telegram-test-api")
                .exists(),
            "the Telegram emulator is not installed: run `npm ci` in tests/peers/telegram (scripts/test does)"
        );
        let port = free_port();
        let emulator = tokio::process::Command::new("node")
            .arg("start.js")
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the Telegram emulator");
        let emulator_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let up = client
                .post(format!("{emulator_url}/bot0:probe/getMe"))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if up {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Telegram emulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let own_url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            emulator: emulator_url,
            own_url: own_url.clone(),
            client,
            ..Shared::default()
        });
        let app = axum::Router::new()
            .route("/hook/{token}", axum::routing::post(hook))
            .route("/{bot_token}/{method}", axum::routing::any(bot_method))
            .with_state(shared.clone());
        let proxy = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TelegramPeer {
            api_url: own_url,
            shared,
            _emulator: emulator,
            _proxy: proxy,
        }
    }

    /// A bot token of its own for one bot.
    pub fn token() -> String {
        format!(
            "{}:test-{}",
            rand::random::<u32>() % 1_000_000 + 1,
            uuid::Uuid::new_v4().simple()
        )
    }

    /// The user side: a message written by `user` in `chat`.
    pub async fn user_sends(&self, token: &str, mut message: Value) {
        message["botToken"] = token.into();
        if message.get("date").is_none() {
            message["date"] = now_secs().into();
        }
        let response = self
            .shared
            .client
            .post(format!("{}/sendMessage", self.shared.emulator))
            .json(&message)
            .send()
            .await
            .expect("the emulator takes the user's message");
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    pub async fn user_writes(&self, token: &str, user: &User, chat: &Value, text: &str) {
        self.user_sends(
            token,
            json!({"from": user.json(), "chat": chat, "text": text}),
        )
        .await;
    }

    /// The user presses the button with `data` under `message`.
    pub async fn press(&self, token: &str, user: &User, message: &BotMessage, data: &str) {
        let markup = message.raw["reply_markup"].clone();
        let body = json!({
            "botToken": token,
            "from": user.json(),
            "data": data,
            "message": {
                "message_id": message.message_id,
                "date": now_secs(),
                "chat": {"id": message.chat_id, "type": "private", "first_name": user.first_name},
                "from": {"id": BOT_ID, "is_bot": true, "first_name": "Test First name", "username": BOT_USERNAME},
                "text": message.text,
                "reply_markup": markup,
            },
        });
        let response = self
            .shared
            .client
            .post(format!("{}/sendCallback", self.shared.emulator))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// What the bot sent to `chat_id` so far, in order.
    pub fn bot_messages(&self, token: &str, chat_id: i64) -> Vec<BotMessage> {
        self.shared
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent_token, message)| sent_token == token && message.chat_id == chat_id)
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Wait until the bot sent at least `count` messages to `chat_id`.
    pub async fn wait_for(
        &self,
        token: &str,
        chat_id: i64,
        count: usize,
        seconds: u64,
    ) -> Vec<BotMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let messages = self.bot_messages(token, chat_id);
            if messages.len() >= count {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {seconds} s for {count} bot messages in chat {chat_id}, got {messages:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Answer the next `sendMessage` to `fault.chat_id` with a Telegram error.
    pub fn fail_next_send(&self, fault: Fault) {
        self.shared.faults.lock().unwrap().push_back(fault);
    }

    /// `sendMessage` calls to `chat_id`, failed ones included.
    pub fn send_attempts(&self, chat_id: i64) -> usize {
        self.shared
            .send_attempts
            .lock()
            .unwrap()
            .get(&chat_id)
            .copied()
            .unwrap_or_default()
    }

    /// Whether the bot registered its webhook.
    pub fn webhook_registered(&self, token: &str) -> bool {
        self.shared.webhooks.lock().unwrap().contains_key(token)
    }

    pub fn callback_answers(&self) -> usize {
        self.shared.callback_answers.load(Ordering::SeqCst)
    }

    pub fn refused_deliveries(&self) -> usize {
        self.shared.refused_deliveries.load(Ordering::SeqCst)
    }
}

/// A Telegram user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

impl User {
    pub fn new(first_name: &str, language_code: Option<&str>) -> User {
        User {
            id: i64::from(rand::random::<u32>() % 900_000_000) + 100_000,
            first_name: first_name.into(),
            username: Some(format!(
                "{}_{}",
                first_name.to_lowercase(),
                rand::random::<u16>()
            )),
            language_code: language_code.map(str::to_string),
        }
    }

    pub fn json(&self) -> Value {
        let mut user = json!({"id": self.id, "is_bot": false, "first_name": self.first_name});
        if let Some(username) = &self.username {
            user["username"] = username.clone().into();
        }
        if let Some(language) = &self.language_code {
            user["language_code"] = language.clone().into();
        }
        user
    }

    /// The private chat with the bot.
    pub fn private_chat(&self) -> Value {
        json!({"id": self.id, "type": "private", "first_name": self.first_name})
    }
}

pub fn group_chat(id: i64) -> Value {
    json!({"id": id, "type": "group", "title": "Shop fans"})
}

/// Split `/bot<token>` into the token.
fn token_of(bot_token: &str) -> Option<String> {
    bot_token.strip_prefix("bot").map(str::to_string)
}

fn telegram_error(code: u16, description: &str, retry_after: Option<u64>) -> Response {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(seconds) = retry_after {
        body["parameters"] = json!({"retry_after": seconds});
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

/// The parameters of a Bot API call: JSON body, form body or query string.
fn params(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Value {
    let json_body = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if json_body {
        return serde_json::from_slice(body).unwrap_or(json!({}));
    }
    let boundary = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once("boundary="))
        .map(|(_, boundary)| boundary.trim_matches('"').to_string());
    if let Some(boundary) = boundary {
        return multipart(&String::from_utf8_lossy(body), &boundary);
    }
    let text = if body.is_empty() {
        query.unwrap_or_default().to_string()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    let map: serde_json::Map<String, Value> = text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| {
            let value = value.replace('+', " ");
            let parsed = serde_json::from_str(&value).unwrap_or(Value::String(value));
            (key.to_string(), parsed)
        })
        .collect();
    Value::Object(map)
}

/// The text fields of a `multipart/form-data` body (teloxide sends `setWebhook` so).
fn multipart(body: &str, boundary: &str) -> Value {
    let mut map = serde_json::Map::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.trim_end_matches("\r\n");
        let parsed = serde_json::from_str(value).unwrap_or(Value::String(value.to_string()));
        map.insert(name.to_string(), parsed);
    }
    Value::Object(map)
}

async fn emulator_call(shared: &Shared, token: &str, method: &str, params: &Value) -> Value {
    shared
        .client
        .post(format!("{}/bot{token}/{method}", shared.emulator))
        .json(params)
        .send()
        .await
        .expect("emulator call")
        .json()
        .await
        .unwrap_or(json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}))
}

/// A date in seconds, as Telegram gives it (the emulator's bot messages are in ms).
fn seconds(date: &Value) -> Value {
    match date.as_i64() {
        Some(ms) if ms > 100_000_000_000 => (ms / 1000).into(),
        Some(secs) => secs.into(),
        None => now_secs().into(),
    }
}

/// An update as Telegram would send it.
fn normalise_update(mut update: Value) -> Value {
    if let Some(message) = update.get_mut("message").and_then(Value::as_object_mut) {
        message.remove("botToken");
    }
    if let Some(query) = update
        .get_mut("callback_query")
        .and_then(Value::as_object_mut)
    {
        query
            .entry("chat_instance")
            .or_insert_with(|| json!("test-instance"));
        if let Some(message) = query.get_mut("message").and_then(Value::as_object_mut) {
            let date = seconds(message.get("date").unwrap_or(&Value::Null));
            message.insert("date".into(), date);
        }
    }
    update
}

async fn bot_method(
    State(shared): State<Arc<Shared>>,
    Path((bot_token, method)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = token_of(&bot_token) else {
        return telegram_error(404, "Not Found", None);
    };
    let params = params(&headers, uri.query(), &body);
    if std::env::var_os("TELEGRAM_PEER_DEBUG").is_some() {
        eprintln!("peer: {method} {params}");
    }
    // Method names are case-insensitive in the Bot API (teloxide says `SendMessage`).
    match method.to_ascii_lowercase().as_str() {
        "getme" => axum::Json(json!({"ok": true, "result": {
            "id": BOT_ID, "is_bot": true, "first_name": "Test First name", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        }}))
        .into_response(),
        "getupdates" => get_updates(&shared, &token, &params).await,
        "setwebhook" => {
            let url = params["url"].as_str().unwrap_or_default().to_string();
            let secret = params["secret_token"].as_str().map(str::to_string);
            ensure_delivery(&shared, &token);
            let hook = json!({"url": format!("{}/hook/{token}", shared.own_url)});
            emulator_call(&shared, &token, "setWebhook", &hook).await;
            // Telegram answers `true` (the emulator says null).
            let answer = json!({"ok": true, "result": true, "description": "Webhook was set"});
            // Registered once the emulator posts to the hook, not before.
            shared
                .webhooks
                .lock()
                .unwrap()
                .insert(token.clone(), (url, secret));
            // Updates that waited for a poll go to the webhook, as Telegram does.
            fetch_pending(&shared, &token).await;
            let queued: Vec<Value> = shared
                .pending
                .lock()
                .unwrap()
                .remove(&token)
                .unwrap_or_default();
            let sender = shared.deliveries.lock().unwrap().get(&token).cloned();
            if let Some(sender) = sender {
                for update in queued {
                    let _ = sender.send(update);
                }
            }
            axum::Json(answer).into_response()
        }
        "deletewebhook" => {
            shared.webhooks.lock().unwrap().remove(&token);
            axum::Json(emulator_call(&shared, &token, "deleteWebhook", &params).await)
                .into_response()
        }
        "sendmessage" => send_message(&shared, &token, params).await,
        "answercallbackquery" => {
            shared.callback_answers.fetch_add(1, Ordering::SeqCst);
            axum::Json(emulator_call(&shared, &token, &method, &params).await).into_response()
        }
        _ => axum::Json(emulator_call(&shared, &token, &method, &params).await).into_response(),
    }
}

/// Move what the emulator hands out into the token's pending updates. In a task of its own:
/// the emulator forgets an update once it hands it out, and a poll whose caller goes away (the
/// app killed mid-poll) drops its handler at any await, which must not drop updates with it.
async fn fetch_pending(shared: &Arc<Shared>, token: &str) {
    let (shared, token) = (shared.clone(), token.to_string());
    tokio::spawn(async move {
        let fetched = emulator_call(&shared, &token, "getUpdates", &json!({})).await;
        let fresh = fetched["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(normalise_update);
        shared
            .pending
            .lock()
            .unwrap()
            .entry(token)
            .or_default()
            .extend(fresh);
    })
    .await
    .expect("fetching updates from the emulator");
}

/// Telegram's `getUpdates`: what is not yet confirmed by `offset`, waiting up to `timeout`.
async fn get_updates(shared: &Arc<Shared>, token: &str, params: &Value) -> Response {
    let offset = params["offset"].as_i64();
    let timeout = Duration::from_secs(params["timeout"].as_u64().unwrap_or(0).min(20));
    let limit = params["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        fetch_pending(shared, token).await;
        let ready = {
            let mut pending = shared.pending.lock().unwrap();
            let queue = pending.entry(token.to_string()).or_default();
            if let Some(offset) = offset {
                queue.retain(|update| update["update_id"].as_i64().unwrap_or(0) >= offset);
            }
            queue.iter().take(limit).cloned().collect::<Vec<_>>()
        };
        if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
            return axum::Json(json!({"ok": true, "result": ready})).into_response();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send_message(shared: &Shared, token: &str, params: Value) -> Response {
    let chat_id = params["chat_id"]
        .as_i64()
        .or_else(|| params["chat_id"].as_str().and_then(|id| id.parse().ok()))
        .unwrap_or_default();
    *shared
        .send_attempts
        .lock()
        .unwrap()
        .entry(chat_id)
        .or_default() += 1;
    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        let index = faults.iter().position(|fault| fault.chat_id == chat_id);
        index.and_then(|index| faults.remove(index))
    };
    if let Some(fault) = fault {
        return telegram_error(fault.error_code, &fault.description, fault.retry_after);
    }
    let answer = emulator_call(shared, token, "sendMessage", &params).await;
    let Some(result) = answer.get("result").filter(|result| result.is_object()) else {
        return axum::Json(answer).into_response();
    };
    let message_id = result["message_id"].as_i64().unwrap_or_default();
    let buttons = params["reply_markup"]["inline_keyboard"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .map(|button| {
                    (
                        button["text"].as_str().unwrap_or_default().to_string(),
                        button["callback_data"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let sent = BotMessage {
        message_id,
        chat_id,
        text: params["text"].as_str().unwrap_or_default().to_string(),
        parse_mode: params["parse_mode"].as_str().map(str::to_string),
        reply_to: params["reply_parameters"]["message_id"].as_i64(),
        buttons,
        raw: params.clone(),
    };
    shared.sent.lock().unwrap().push((token.to_string(), sent));
    let chat_type = if chat_id < 0 { "group" } else { "private" };
    let message = json!({
        "message_id": message_id,
        "date": seconds(&result["date"]),
        "chat": {"id": chat_id, "type": chat_type, "first_name": "Customer", "title": "Chat"},
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Test First name", "username": BOT_USERNAME},
        "text": params["text"],
    });
    axum::Json(json!({"ok": true, "result": message})).into_response()
}

/// The emulator posts user updates here once a webhook is set.
async fn hook(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    axum::Json(update): axum::Json<Value>,
) -> StatusCode {
    let sender = shared.deliveries.lock().unwrap().get(&token).cloned();
    if let Some(sender) = sender {
        let _ = sender.send(normalise_update(update));
    }
    StatusCode::OK
}

/// One delivery task per bot: posts updates in order to the bot's webhook with its secret,
/// retrying each until the app answers 2xx, as Telegram does.
fn ensure_delivery(shared: &Arc<Shared>, token: &str) {
    let mut deliveries = shared.deliveries.lock().unwrap();
    if deliveries.contains_key(token) {
        return;
    }
    let (sender, mut receiver) = mpsc::unbounded_channel::<Value>();
    deliveries.insert(token.to_string(), sender);
    let shared = shared.clone();
    let token = token.to_string();
    tokio::spawn(async move {
        while let Some(update) = receiver.recv().await {
            loop {
                let target = shared.webhooks.lock().unwrap().get(&token).cloned();
                if let Some((url, secret)) = target {
                    let mut request = shared.client.post(&url).json(&update);
                    if let Some(secret) = secret {
                        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
                    }
                    match request.timeout(Duration::from_secs(10)).send().await {
                        Ok(response) if response.status().is_success() => break,
                        Ok(_) => {
                            shared.refused_deliveries.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
}
