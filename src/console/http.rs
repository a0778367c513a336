//! The console over HTTP: its pages and assets under `/console`, and the JSON endpoints they
//! call under `/console/api`. Who may call them is settled in [`super::auth`]: a session with
//! its CSRF token, or, for admin endpoints, an API key with the `admin` scope. Errors are
//! `{"error": {"code", "message"}}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{NewUser, Role, Staff};
use super::admin::{NewApiKey, NewCanned, TeamChange, UserChange};
use super::auth::{Viewer, api_error, clear_cookie, login, login_page, logout};
use super::contacts::MergeRequest;
use super::feed::RESUME_MARGIN_MS;
use super::pages;
use super::work::{AssignTo, QueueQuery};
use super::{Console, ConsoleError};
use crate::http::Stopping;
use crate::http::api::ApiError;
use crate::store::console::QueueFilter;
use crate::store::now_ms;

/// Most feed items one Server-Sent Event carries.
const FEED_BATCH: usize = 256;

pub fn router(console: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/queue", get(queue_page))
        .route("/console/tasks", get(tasks_page))
        .route("/console/contacts", get(contacts_page))
        .route("/console/reports", get(reports_page))
        .route("/console/admin", get(admin_page))
        .route("/console/assets/{file}", get(pages::asset))
        .route("/console/api/me", get(me))
        .route("/console/api/me/availability", post(availability))
        .route(
            "/console/api/me/sign-out-everywhere",
            post(sign_out_everywhere),
        )
        .route("/console/api/queue", get(queue))
        .route("/console/api/feed", get(feed))
        .route("/console/api/canned", get(canned))
        .route("/console/api/conversations/{id}", get(conversation))
        .route(
            "/console/api/conversations/{id}/stream",
            get(conversation_stream),
        )
        .route("/console/api/conversations/{id}/claim", post(claim))
        .route("/console/api/conversations/{id}/assign", post(assign))
        .route("/console/api/conversations/{id}/hand-back", post(hand_back))
        .route("/console/api/conversations/{id}/resolve", post(resolve))
        .route("/console/api/conversations/{id}/reply", post(reply))
        .route("/console/api/conversations/{id}/notes", post(note))
        .route("/console/api/conversations/{id}/labels", put(labels))
        .route("/console/api/conversations/{id}/typing", post(typing))
        .route("/console/api/contacts", get(search_contacts))
        .route("/console/api/contacts/{id}", get(contact))
        .route("/console/api/contacts/{id}/merge", post(merge))
        .route("/console/api/reports", get(reports))
        .route(
            "/console/api/admin/users",
            get(admin_users).post(admin_create_user),
        )
        .route(
            "/console/api/admin/users/{id}",
            axum::routing::patch(admin_change_user),
        )
        .route(
            "/console/api/admin/users/{id}/sign-out",
            post(admin_sign_out),
        )
        .route("/console/api/admin/teams", get(admin_teams))
        .route("/console/api/admin/teams/{name}", put(admin_save_team))
        .route(
            "/console/api/admin/api-keys",
            get(admin_api_keys).post(admin_create_api_key),
        )
        .route(
            "/console/api/admin/api-keys/{id}",
            axum::routing::delete(admin_revoke_api_key),
        )
        .route("/console/api/admin/canned", post(admin_create_canned))
        .route(
            "/console/api/admin/canned/{id}",
            axum::routing::delete(admin_delete_canned),
        )
        .route("/console/api/admin/channels", get(admin_channels))
        .with_state(console)
}

type ConsoleResult<T> = std::result::Result<T, ConsoleError>;

/// Parse a JSON body with the API's field-naming errors.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, ApiError> {
    crate::http::api::parse_json(bytes)
}

async fn home(viewer: Option<Viewer>) -> Response {
    match viewer.map(|viewer| viewer.0.role) {
        None => Redirect::to("/console/login").into_response(),
        Some(Role::Backoffice) => Redirect::to("/console/tasks").into_response(),
        Some(_) => Redirect::to("/console/queue").into_response(),
    }
}

fn forbidden_page(staff: &Staff) -> Response {
    pages::forbidden(staff)
}

async fn queue_page(State(console): State<Arc<Console>>, Viewer(staff): Viewer) -> Response {
    if !staff.works_conversations() {
        return forbidden_page(&staff);
    }
    pages::page(&console, &staff, "queue")
}

async fn tasks_page(State(console): State<Arc<Console>>, Viewer(staff): Viewer) -> Response {
    if staff.role == Role::Agent {
        return forbidden_page(&staff);
    }
    pages::page(&console, &staff, "tasks")
}

async fn contacts_page(State(console): State<Arc<Console>>, Viewer(staff): Viewer) -> Response {
    if !staff.works_conversations() {
        return forbidden_page(&staff);
    }
    pages::page(&console, &staff, "contacts")
}

async fn reports_page(State(console): State<Arc<Console>>, Viewer(staff): Viewer) -> Response {
    if !staff.is_admin() {
        return forbidden_page(&staff);
    }
    pages::page(&console, &staff, "reports")
}

async fn admin_page(State(console): State<Arc<Console>>, Viewer(staff): Viewer) -> Response {
    if !staff.is_admin() {
        return forbidden_page(&staff);
    }
    pages::page(&console, &staff, "admin")
}

/// The signed-in person and their session's CSRF token (same-origin reads only: no CORS).
async fn me(staff: Staff) -> Json<Value> {
    Json(json!({"user": staff, "csrf_token": staff.csrf_token}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Availability {
    availability: String,
}

async fn availability(
    State(console): State<Arc<Console>>,
    staff: Staff,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: Availability = body(&bytes)?;
    if !["online", "away", "offline"].contains(&request.availability.as_str()) {
        return Err(ApiError::invalid(
            "availability",
            "must be online, away or offline",
        ));
    }
    console
        .store
        .set_availability(&staff.id, &request.availability, now_ms())
        .await
        .map_err(|error| api_error(error.into()))?;
    Ok(Json(json!({"availability": request.availability})))
}

async fn sign_out_everywhere(
    State(console): State<Arc<Console>>,
    staff: Staff,
) -> ConsoleResult<Response> {
    let ended = console.sign_out_everywhere(&staff.id).await?;
    let mut response = Json(json!({"sessions_ended": ended})).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

async fn queue(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Query(query): Query<QueueQuery>,
) -> ConsoleResult<Json<Value>> {
    let view = console.queue(&staff, &query).await?;
    Ok(Json(serde_json::to_value(view).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    since: Option<i64>,
}

/// The queue's live feed as Server-Sent Events: `row` events (current rows of conversations
/// changed since the resume time) then `items` events (a JSON array of the changes waiting at
/// that moment, in order) as changes happen, each with the time of its last event as SSE id,
/// so that a reconnecting EventSource resumes by itself. `resync`
/// asks the page to reload the queue (it fell too far behind).
async fn feed(
    State(console): State<Arc<Console>>,
    Extension(stopping): Extension<Stopping>,
    staff: Staff,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> ConsoleResult<Response> {
    if !staff.works_conversations() {
        return Err(ConsoleError::forbidden(
            "the queue is for agents and admins",
        ));
    }
    let since = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<i64>().ok())
        .or(query.since);
    // Subscribe before reading the rows, so nothing falls between the two.
    let live = console.feed.subscribe();
    let mut replay = Vec::new();
    if let Some(since) = since {
        let rows = console
            .store
            .queue(&QueueFilter {
                changed_since: Some(since - RESUME_MARGIN_MS),
                limit: super::work::QUEUE_LIMIT,
                ..QueueFilter::default()
            })
            .await?;
        let names: std::collections::HashMap<String, String> = console
            .store
            .users()
            .await?
            .into_iter()
            .map(|user| (user.id, user.name))
            .collect();
        let now = now_ms();
        for row in rows {
            if console.can_see(&staff, &row.owner) {
                replay.push(console.item_of(row, &names, now));
            }
        }
    }
    let _ = console.store.touch_user(&staff.id, now_ms()).await;
    struct Follow {
        console: Arc<Console>,
        staff: Staff,
        live: tokio::sync::broadcast::Receiver<Arc<super::feed::FeedItem>>,
        replay: std::vec::IntoIter<super::work::QueueItem>,
        touched: tokio::time::Instant,
    }
    let state = Follow {
        console: console.clone(),
        staff,
        live,
        replay: replay.into_iter(),
        touched: tokio::time::Instant::now(),
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        if let Some(item) = state.replay.next() {
            let event = Event::default()
                .event("row")
                .id(item.last_event_at_ms.to_string())
                .json_data(&item)
                .ok()?;
            return Some((Ok::<Event, std::convert::Infallible>(event), state));
        }
        loop {
            if state.touched.elapsed() > Duration::from_secs(30) {
                state.touched = tokio::time::Instant::now();
                let _ = state
                    .console
                    .store
                    .touch_user(&state.staff.id, now_ms())
                    .await;
            }
            let received = tokio::time::timeout(Duration::from_secs(30), state.live.recv()).await;
            match received {
                Err(_) => continue,
                Ok(Ok(first)) => {
                    // Whatever else is already waiting goes in the same SSE event: under load
                    // one write carries many items instead of one write each.
                    let mut items = vec![first];
                    while items.len() < FEED_BATCH
                        && let Ok(item) = state.live.try_recv()
                    {
                        items.push(item);
                    }
                    let visible: Vec<&super::feed::FeedItem> = items
                        .iter()
                        .map(|item| item.as_ref())
                        .filter(|item| state.console.can_see(&state.staff, &item.owner))
                        .collect();
                    let Some(last) = visible.last() else {
                        continue;
                    };
                    let event = Event::default()
                        .event("items")
                        .id(last.created_at_ms.to_string())
                        .json_data(&visible)
                        .ok()?;
                    return Some((Ok(event), state));
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                    let event = Event::default().event("resync").data("{}");
                    return Some((Ok(event), state));
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
            }
        }
    });
    Ok(crate::http::event_stream(stream, &stopping))
}

async fn canned(State(console): State<Arc<Console>>, _staff: Staff) -> ConsoleResult<Json<Value>> {
    Ok(Json(json!({"data": console.canned_replies().await?})))
}

async fn conversation(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.conversation_view(&staff, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AfterQuery {
    after: Option<i64>,
}

async fn conversation_stream(
    State(console): State<Arc<Console>>,
    Extension(stopping): Extension<Stopping>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AfterQuery>,
) -> std::result::Result<Response, ApiError> {
    console.queue_item(&staff, &id).await.map_err(api_error)?;
    let after = crate::http::api::conversations::resume_point(&headers, query.after)?;
    Ok(crate::http::api::conversations::follow(
        &console.store,
        console.bus.as_ref(),
        &id,
        after,
        &stopping,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    #[serde(default)]
    expected_version: Option<i64>,
}

fn state_json(state: crate::conversation::State) -> Json<Value> {
    Json(json!({
        "owner": state.owner.to_string(),
        "status": state.status.as_str(),
        "version": state.version,
    }))
}

async fn claim(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: VersionBody = if bytes.is_empty() {
        VersionBody::default()
    } else {
        body(&bytes)?
    };
    let state = console
        .claim(&staff, &id, request.expected_version)
        .await
        .map_err(api_error)?;
    Ok(state_json(state))
}

async fn assign(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: AssignTo = body(&bytes)?;
    let state = console
        .assign(&staff, &id, &request)
        .await
        .map_err(api_error)?;
    Ok(state_json(state))
}

async fn hand_back(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(state_json(console.hand_back(&staff, &id).await?))
}

async fn resolve(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(state_json(console.resolve(&staff, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

async fn reply(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: TextBody = body(&bytes)?;
    console
        .reply(&staff, &id, &request.text)
        .await
        .map(Json)
        .map_err(api_error)
}

async fn note(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: TextBody = body(&bytes)?;
    console
        .note(&staff, &id, &request.text)
        .await
        .map(Json)
        .map_err(api_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
    labels: Vec<String>,
}

async fn labels(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: LabelsBody = body(&bytes)?;
    console
        .set_labels(&staff, &id, &request.labels)
        .await
        .map(Json)
        .map_err(api_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    active: bool,
}

async fn typing(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: TypingBody = body(&bytes)?;
    console
        .typing(&staff, &id, request.active)
        .await
        .map_err(api_error)?;
    Ok(Json(json!({"active": request.active})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: String,
}

async fn search_contacts(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Query(query): Query<SearchQuery>,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.search_contacts(&staff, &query.q).await?))
}

async fn contact(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.contact_view(&staff, &id).await?))
}

async fn merge(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let request: MergeRequest = body(&bytes)?;
    console
        .merge_contacts(&staff, &id, &request.other_id)
        .await
        .map(Json)
        .map_err(api_error)
}

async fn reports(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Query(query): Query<super::reports::ReportQuery>,
) -> ConsoleResult<Json<Value>> {
    if !staff.is_admin() {
        return Err(ConsoleError::Forbidden {
            code: "admin_only",
            message: "reports need an admin".into(),
        });
    }
    Ok(Json(console.report(&query).await?))
}

async fn admin_users(
    State(console): State<Arc<Console>>,
    staff: Staff,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_users(&staff).await?))
}

async fn admin_create_user(
    State(console): State<Arc<Console>>,
    staff: Staff,
    bytes: axum::body::Bytes,
) -> std::result::Result<(StatusCode, Json<Value>), ApiError> {
    let request: NewUser = body(&bytes)?;
    console
        .admin_create_user(&staff, request)
        .await
        .map(|user| (StatusCode::CREATED, Json(user)))
        .map_err(api_error)
}

async fn admin_change_user(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let change: UserChange = body(&bytes)?;
    console
        .admin_change_user(&staff, &id, change)
        .await
        .map(Json)
        .map_err(api_error)
}

async fn admin_sign_out(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_sign_out_user(&staff, &id).await?))
}

async fn admin_teams(
    State(console): State<Arc<Console>>,
    staff: Staff,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_teams(&staff).await?))
}

async fn admin_save_team(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> std::result::Result<Json<Value>, ApiError> {
    let change: TeamChange = body(&bytes)?;
    console
        .admin_save_team(&staff, &name, change)
        .await
        .map(Json)
        .map_err(api_error)
}

async fn admin_api_keys(
    State(console): State<Arc<Console>>,
    staff: Staff,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_api_keys(&staff).await?))
}

async fn admin_create_api_key(
    State(console): State<Arc<Console>>,
    staff: Staff,
    bytes: axum::body::Bytes,
) -> std::result::Result<(StatusCode, Json<Value>), ApiError> {
    let request: NewApiKey = body(&bytes)?;
    console
        .admin_create_api_key(&staff, request)
        .await
        .map(|key| (StatusCode::CREATED, Json(key)))
        .map_err(api_error)
}

async fn admin_revoke_api_key(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_revoke_api_key(&staff, &id).await?))
}

async fn admin_create_canned(
    State(console): State<Arc<Console>>,
    staff: Staff,
    bytes: axum::body::Bytes,
) -> std::result::Result<(StatusCode, Json<Value>), ApiError> {
    let request: NewCanned = body(&bytes)?;
    console
        .admin_create_canned(&staff, request)
        .await
        .map(|canned| (StatusCode::CREATED, Json(canned)))
        .map_err(api_error)
}

async fn admin_delete_canned(
    State(console): State<Arc<Console>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_delete_canned(&staff, &id).await?))
}

async fn admin_channels(
    State(console): State<Arc<Console>>,
    staff: Staff,
) -> ConsoleResult<Json<Value>> {
    Ok(Json(console.admin_channels(&staff)?))
}
