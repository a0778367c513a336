//! Updates in: long polling with a durable offset, or a webhook on the app's HTTP server.
//!
//! Either way an update is acknowledged to Telegram only once the app stored it: the polling
//! offset (the cursor `updates`, the next `update_id` wanted) moves after the whole batch it
//! covers was ingested, and the webhook answers 200 after `ingest` returned. A crash in between
//! means Telegram delivers the update again, and its `update_id` (in the platform id) makes it
//! a duplicate, which is neither stored nor answered twice. An update that can never be taken
//! (a kind we do not read, an edited message, a message the app refuses) is logged and
//! acknowledged, so it never holds up the next one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use switchboard_connector::{ConnectorError, ConnectorHost, CursorError, HostError, InboundEvent};
use teloxide::payloads::{GetUpdatesSetters, SetWebhookSetters};
use teloxide::prelude::Requester;
use teloxide::requests::Request;
use teloxide::types::{AllowedUpdate, Update};
use tokio_util::sync::CancellationToken;

use crate::TelegramChannel;
use crate::outbound::{Failure, classify, to_connector_error};
use crate::update::{self, Decision};

/// The cursor holding the next update id to ask for.
pub const OFFSET_CURSOR: &str = "updates";

/// The header Telegram sends the webhook's secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The update kinds asked for; others are not sent at all.
fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::EditedMessage,
        AllowedUpdate::CallbackQuery,
    ]
}

/// The app could not store an update now: Telegram must deliver it again.
#[derive(Debug)]
pub struct NotStored(pub String);

/// Handle one update: store what it carries, answer commands and button presses.
pub async fn handle(
    channel: &TelegramChannel,
    host: &dyn ConnectorHost,
    update: &Update,
) -> Result<(), NotStored> {
    let me = channel
        .me()
        .await
        .map_err(|error| NotStored(format!("bot identity unknown: {error}")))?;
    let update_id = update.id.0;
    match update::decide(&channel.name, me, update) {
        Decision::Skip { reason } => {
            tracing::info!(channel = %channel.name, update_id, reason, "telegram update skipped");
            Ok(())
        }
        Decision::Ingest { event, note } => {
            if let Some(note) = note {
                tracing::warn!(channel = %channel.name, update_id, note, "telegram message fixed up");
            }
            ingest(channel, host, *event, update_id).await?;
            Ok(())
        }
        Decision::Callback { query_id, event } => {
            if let Some(event) = event {
                ingest(channel, host, *event, update_id).await?;
            } else {
                tracing::info!(channel = %channel.name, update_id, "button press without data, answered only");
            }
            // Stops the spinner on the customer's button. A query older than about 15 s can no
            // longer be answered (a redelivery after a crash): that is expected.
            if let Err(error) = channel
                .bot
                .answer_callback_query(teloxide::types::CallbackQueryId(query_id))
                .await
            {
                tracing::debug!(channel = %channel.name, update_id, error = %error, "callback query not answered");
            }
            Ok(())
        }
    }
}

/// Store one event; the chat and whether it was stored before, or None when the app refused
/// it for good (logged).
async fn ingest(
    channel: &TelegramChannel,
    host: &dyn ConnectorHost,
    event: InboundEvent,
    update_id: u32,
) -> Result<Option<(i64, bool)>, NotStored> {
    let chat_id: i64 = event.thread.parse().unwrap_or_default();
    match host.ingest(event).await {
        Ok(receipt) => Ok(Some((chat_id, receipt.duplicate))),
        Err(HostError::Rejected(reason)) => {
            tracing::warn!(channel = %channel.name, update_id, reason = %reason, "telegram update refused by the app, skipped");
            Ok(None)
        }
        Err(HostError::Unavailable(reason)) => Err(NotStored(reason)),
    }
}

/// The durable offset as read, with the version to compare when moving it.
struct Offset {
    next: Option<i64>,
    version: Option<i64>,
}

async fn read_offset(host: &dyn ConnectorHost) -> Result<Offset, ConnectorError> {
    let cursor = host
        .cursor(OFFSET_CURSOR)
        .await
        .map_err(|error| ConnectorError::retriable(format!("offset not read: {error}")))?;
    let Some(cursor) = cursor else {
        return Ok(Offset {
            next: None,
            version: None,
        });
    };
    let next = cursor.value.parse().map_err(|_| {
        ConnectorError::Config(format!(
            "cursor {OFFSET_CURSOR} is not an update id: {:?}",
            cursor.value
        ))
    })?;
    Ok(Offset {
        next: Some(next),
        version: Some(cursor.version),
    })
}

/// Sleep, unless shut down first (true).
async fn pause(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Long polling until `shutdown`.
pub async fn poll(
    channel: &TelegramChannel,
    host: Arc<dyn ConnectorHost>,
    shutdown: CancellationToken,
) -> Result<(), ConnectorError> {
    tokio::select! {
        me = channel.me() => { me?; }
        _ = shutdown.cancelled() => return Ok(()),
    }
    // Telegram refuses getUpdates while a webhook is set (from an earlier webhook mode).
    channel
        .bot
        .delete_webhook()
        .await
        .map_err(|error| to_connector_error(&error))?;
    let mut offset = read_offset(host.as_ref()).await?;
    tracing::info!(channel = %channel.name, offset = ?offset.next, "polling telegram for updates");
    let idle = Duration::from_millis(channel.checked.config.poll_idle_ms);
    loop {
        let mut request = channel
            .bot
            .get_updates()
            .timeout(channel.checked.poll_timeout_secs)
            .allowed_updates(allowed_updates());
        if let Some(next) = offset.next {
            request = request.offset(i32::try_from(next).unwrap_or(i32::MAX));
        }
        let answer = tokio::select! {
            answer = request.send() => answer,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let updates = match answer {
            Ok(updates) => updates,
            Err(error) => match classify(&error) {
                Failure::RetryAfter(wait) => {
                    tracing::warn!(channel = %channel.name, wait_ms = wait.as_millis() as u64, "telegram asked to slow down polling");
                    if pause(&shutdown, wait).await {
                        return Ok(());
                    }
                    continue;
                }
                _ => return Err(to_connector_error(&error)),
            },
        };
        // Only updates past the offset count (a server that ignores the offset sends old ones
        // again; they would be duplicates anyway).
        let fresh: Vec<&Update> = updates
            .iter()
            .filter(|update| {
                offset
                    .next
                    .is_none_or(|next| i64::from(update.id.0) >= next)
            })
            .collect();
        if fresh.is_empty() {
            if pause(&shutdown, idle).await {
                return Ok(());
            }
            continue;
        }
        for update in &fresh {
            handle(channel, host.as_ref(), update)
                .await
                .map_err(|NotStored(reason)| {
                    ConnectorError::retriable(format!(
                        "update {} not stored, read again after restart: {reason}",
                        update.id.0
                    ))
                })?;
        }
        let next = fresh
            .iter()
            .map(|update| i64::from(update.id.0) + 1)
            .max()
            .unwrap_or_default();
        // Only now, with every update of the batch stored, does the offset move.
        let written = host
            .set_cursor(OFFSET_CURSOR, offset.version, &next.to_string())
            .await
            .map_err(|error| match error {
                CursorError::Conflict { .. } => ConnectorError::retriable(
                    "the update offset was moved by another process polling this bot",
                ),
                CursorError::Host(error) => {
                    ConnectorError::retriable(format!("offset not written: {error}"))
                }
            })?;
        offset = Offset {
            next: Some(next),
            version: Some(written.version),
        };
    }
}

/// Webhook mode: tell Telegram where to post, then wait for shutdown (the updates arrive at
/// [`webhook_routes`]).
pub async fn register_webhook(
    channel: &TelegramChannel,
    shutdown: CancellationToken,
) -> Result<(), ConnectorError> {
    let url = channel
        .checked
        .webhook_url
        .clone()
        .ok_or_else(|| ConnectorError::Config("webhook mode without a webhook url".into()))?;
    let secret = channel
        .checked
        .config
        .secret_token
        .as_ref()
        .map(|secret| secret.expose().to_string())
        .unwrap_or_default();
    tokio::select! {
        me = channel.me() => { me?; }
        _ = shutdown.cancelled() => return Ok(()),
    }
    channel
        .bot
        .set_webhook(url.clone())
        .secret_token(secret)
        .allowed_updates(allowed_updates())
        .await
        .map_err(|error| to_connector_error(&error))?;
    tracing::info!(channel = %channel.name, url = %url, "telegram webhook registered");
    shutdown.cancelled().await;
    Ok(())
}

#[derive(Clone)]
struct HookState {
    channel: Arc<TelegramChannel>,
    host: Arc<dyn ConnectorHost>,
}

/// The webhook endpoint, mounted by the app at `/channels/telegram/<name>`.
pub fn webhook_routes(channel: Arc<TelegramChannel>, host: Arc<dyn ConnectorHost>) -> axum::Router {
    axum::Router::new()
        .route("/", post(webhook))
        .with_state(HookState { channel, host })
}

/// Compare without stopping at the first difference, so timing says nothing of the secret.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

async fn webhook(
    State(state): State<HookState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let channel = &state.channel;
    let expected = channel
        .checked
        .config
        .secret_token
        .as_ref()
        .map(|secret| secret.expose().as_bytes())
        .unwrap_or_default();
    let given = headers
        .get(SECRET_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if expected.is_empty() || !same_secret(given, expected) {
        tracing::warn!(channel = %channel.name, secret_present = !given.is_empty(), "telegram webhook call with a wrong or missing secret, refused");
        state.host.edge_rejection("telegram_secret");
        return (StatusCode::UNAUTHORIZED, "wrong secret token");
    }
    let update = match update::parse(&body) {
        Ok(update) => update,
        Err(error) => {
            tracing::warn!(channel = %channel.name, error = %error, bytes = body.len(), "telegram webhook body is not an update, refused");
            state.host.edge_rejection("telegram_malformed");
            return (StatusCode::BAD_REQUEST, "not a telegram update");
        }
    };
    match handle(channel, state.host.as_ref(), &update).await {
        Ok(()) => (StatusCode::OK, "ok"),
        // Telegram delivers it again later.
        Err(NotStored(reason)) => {
            tracing::warn!(channel = %channel.name, update_id = update.id.0, reason = %reason, "telegram update not stored, telegram will redeliver");
            (StatusCode::SERVICE_UNAVAILABLE, "not stored, try again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
