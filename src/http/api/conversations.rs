//! `/api/v1/conversations` and `/api/v1/messages`: a conversation's events, read back or
//! followed live, and the attachments of its messages, fetched through their channel.
//!
//! Events are numbered per conversation (`seq`, dense from 1). A client that saw up to N asks
//! for what follows N, as `?after=N` or, on the live stream, the Server-Sent Events
//! `Last-Event-ID` header its EventSource sends by itself on reconnect: nothing is missed and
//! nothing repeats.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use switchboard_connector::LiveEvent;

use super::{ApiError, ApiState, Caller, ErrorBody};
use crate::events::Follower;
use crate::http::Stopping;
use crate::store::StoreError;
use crate::workflow::Scope;

/// Events of one page at most.
const PAGE: i64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AfterParams {
    /// The last event number the client has; 0 or absent: from the start.
    pub after: Option<i64>,
}

/// One conversation event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub seq: i64,
    /// `conversation.opened`, `message.stored`, `message.delivered`, `message.failed`,
    /// `owner.changed`, `task.changed`; on the live stream also `typing` (seq 0).
    pub kind: String,
    pub actor: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub channel: String,
    pub thread: String,
    pub created_at_ms: i64,
}

impl From<&LiveEvent> for EventView {
    fn from(event: &LiveEvent) -> EventView {
        EventView {
            seq: event.seq,
            kind: event.kind.as_str().to_string(),
            actor: event.actor.clone(),
            data: event.data.clone(),
            channel: event.channel.clone(),
            thread: event.thread.clone(),
            created_at_ms: event.created_at_ms,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub data: Vec<EventView>,
    /// The number to pass as `after` for the next page (the last one here, or `after`).
    pub last_seq: i64,
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "conversation_not_found",
            "no conversation with that id",
        ),
        other => {
            tracing::error!(error = %other, "conversation request failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

fn parse_after(after: Option<i64>) -> Result<i64, ApiError> {
    match after {
        Some(after) if after < 0 => Err(ApiError::invalid("after", "must not be negative")),
        other => Ok(other.unwrap_or(0)),
    }
}

/// A conversation's events after `after`, oldest first (a page of at most 500).
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/events",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id"), AfterParams),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["conversations:read"]))
)]
pub async fn conversation_events(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<AfterParams>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let after = parse_after(params.after)?;
    state.store.conversation(&id).await.map_err(store_error)?;
    let events = state
        .store
        .events_after(&id, after, PAGE)
        .await
        .map_err(store_error)?;
    let last_seq = events.last().map_or(after, |event| event.seq);
    Ok(Json(EventPage {
        data: events.iter().map(EventView::from).collect(),
        last_seq,
    }))
}

/// Follow a conversation live as Server-Sent Events (`text/event-stream`): first what
/// follows `after` (or the `Last-Event-ID` header), then every change as it commits. Each
/// event's SSE id is its `seq`; typing comes as `typing` events without an id.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/stream",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id"), AfterParams),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["conversations:read"]))
)]
pub async fn conversation_stream(
    State(state): State<ApiState>,
    Extension(stopping): Extension<Stopping>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<AfterParams>,
) -> Result<Response, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let after = resume_point(&headers, params.after)?;
    state.store.conversation(&id).await.map_err(store_error)?;
    Ok(follow(
        &state.store,
        state.bus.as_ref(),
        &id,
        after,
        &stopping,
    ))
}

/// The Server-Sent Events response that follows conversation `id` from after event `after`
/// (the console's conversation view uses it too).
pub fn follow(
    store: &crate::store::Store,
    bus: &dyn crate::events::EventBus,
    id: &str,
    after: i64,
    stopping: &Stopping,
) -> Response {
    let follower = Follower::new(store.clone(), bus, id, after);
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        let sse = match event {
            Ok(event) => {
                let view = EventView::from(event.as_ref());
                let sse = Event::default()
                    .event(view.kind.clone())
                    .json_data(&view)
                    .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                if event.seq > 0 {
                    sse.id(event.seq.to_string())
                } else {
                    sse
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "event stream read failed");
                // The client reconnects with its Last-Event-ID and resumes.
                return None;
            }
        };
        Some((Ok::<Event, Infallible>(sse), follower))
    });
    crate::http::event_stream(stream, stopping)
}

/// The event number a client resumes after: `Last-Event-ID`, else `after`.
pub fn resume_point(headers: &HeaderMap, after: Option<i64>) -> Result<i64, ApiError> {
    let from_header = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be an event number"))
        })
        .transpose()?;
    parse_after(from_header.or(after))
}

/// The bytes of a message's attachment, fetched from its platform through the channel it
/// came in on.
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}/attachments/{index}",
    tag = "conversations",
    params(
        ("id" = String, Path, description = "Message id"),
        ("index" = usize, Path, description = "Position of the attachment, from 0")
    ),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 400, description = "The index is not a position", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)
    ),
    security(("api_key" = ["conversations:read"]))
)]
pub async fn message_attachment(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, index)): Path<(String, usize)>,
) -> Result<Response, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "attachment_not_found",
            "no such attachment",
        )
    };
    let (channel, attachments) = state
        .store
        .message_attachments(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let attachment = attachments.get(index).ok_or_else(not_found)?;
    let instance = state.channels.get(&channel).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "channel_unavailable",
            format!("the channel {channel:?} that holds this file is not running"),
        )
    })?;
    let body = instance
        .connector
        .fetch_attachment(attachment)
        .await
        .map_err(|error| {
            tracing::warn!(channel, error = %error, "attachment not fetched");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "attachment_unavailable",
                "the platform did not hand over the file",
            )
        })?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        attachment.name.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, body.mime_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body.bytes,
    )
        .into_response())
}
