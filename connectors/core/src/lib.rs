//! The contract between Switchboard and its channels.
//!
//! A connector turns a platform's events into [`InboundEvent`]s, hands them to the app through
//! the [`ConnectorHost`] it is given, and delivers [`OutboundMessage`]s that the app's outbox
//! worker passes to [`Connector::send`]. Connectors depend on this crate only, never on the app:
//! the app knows them through the [`Connector`] trait and the registry it builds from config.
//!
//! The rules every connector keeps (checked by [`contract`]):
//! - an inbound event carries the platform's own message id, so the app can drop a redelivery;
//! - an event is acknowledged to the platform or client only after [`ConnectorHost::ingest`]
//!   returned, because that is when it is durable;
//! - [`Connector::send`] is idempotent on [`OutboundMessage::id`] where the platform allows it,
//!   and reports whether a failure is worth retrying.

pub mod contract;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorKind {
    Customer,
    Bot,
    Agent,
    System,
}

impl AuthorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorKind::Customer => "customer",
            AuthorKind::Bot => "bot",
            AuthorKind::Agent => "agent",
            AuthorKind::System => "system",
        }
    }

    pub fn parse(value: &str) -> Option<AuthorKind> {
        match value {
            "customer" => Some(AuthorKind::Customer),
            "bot" => Some(AuthorKind::Bot),
            "agent" => Some(AuthorKind::Agent),
            "system" => Some(AuthorKind::System),
            _ => None,
        }
    }
}

/// Metadata of a file attached to a message; the bytes stay on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub mime_type: String,
    pub size_bytes: Option<u64>,
    /// Where the platform serves the file, if it does.
    pub url: Option<String>,
}

/// The sender of an inbound event as the platform identifies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformIdentity {
    /// The platform's stable id for the person (Telegram user id, email address, visitor id).
    pub platform_user_id: String,
    pub display_name: Option<String>,
    /// True when the platform itself vouches for this identity (a signed web chat session, a
    /// Telegram user id). Back-office actions only trust verified identities.
    pub verified: bool,
    /// An email address the channel vouches for (a shop's signed-in customer in web chat). The
    /// app links it to the contact, so the back office knows which orders are theirs.
    #[serde(default)]
    pub email: Option<String>,
}

/// An email address in the one form that is signed, linked and compared: trimmed and
/// lower-cased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether a normalised email looks like an address (`local@domain.tld`, no spaces).
pub fn is_plausible_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
    })
}

/// A customer's message as a connector hands it to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The connector kind, for example `webchat` or `telegram`.
    pub channel: String,
    /// The platform's own id for this message; `(channel, platform_message_id)` is unique.
    pub platform_message_id: String,
    pub sender: PlatformIdentity,
    /// The platform's conversation (chat id, email thread, web chat visitor); replies go there.
    pub thread: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// When the platform says the message was sent, in milliseconds since the Unix epoch.
    pub sent_at_ms: Option<i64>,
}

/// What the app did with an inbound event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReceipt {
    /// The app's id for the stored message.
    pub message_id: String,
    pub conversation_id: String,
    /// Position of the message in its conversation.
    pub seq: i64,
    /// True when this platform message id had been stored before: nothing new was stored.
    pub duplicate: bool,
}

/// A stored message, as connectors show history to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub author: AuthorKind,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// For customer messages: the platform's id (web chat: `visitor:client_id`).
    pub platform_message_id: Option<String>,
    pub created_at_ms: i64,
}

/// A message for a connector to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// The app's message id; stable across retries, so a platform or client can drop a repeat.
    pub id: String,
    pub conversation_id: String,
    pub channel: String,
    /// The platform conversation to deliver to (see [`InboundEvent::thread`]).
    pub thread: String,
    pub seq: i64,
    pub author: AuthorKind,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// The platform message this answers, where the platform threads replies.
    pub in_reply_to: Option<String>,
    pub created_at_ms: i64,
}

/// A platform's receipt for a delivered message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    pub platform_message_id: Option<String>,
}

/// Presence signals that are not stored: someone is typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingSignal {
    pub channel: String,
    pub thread: String,
    pub author: AuthorKind,
    pub active: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Worth trying again later (network error, 5xx, rate limit).
    #[error("temporary failure: {message}")]
    Retriable {
        message: String,
        /// The platform's own hint, such as Telegram's `retry_after`.
        retry_after: Option<Duration>,
    },
    /// Will fail the same way every time (bad recipient, message rejected).
    #[error("permanent failure: {0}")]
    Permanent(String),
    #[error("connector misconfigured: {0}")]
    Config(String),
}

impl ConnectorError {
    pub fn retriable(message: impl Into<String>) -> ConnectorError {
        ConnectorError::Retriable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_retriable(&self) -> bool {
        matches!(self, ConnectorError::Retriable { .. })
    }
}

/// Why the app could not take an inbound event.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The event is invalid and will never be accepted (tell the client).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The app cannot store it now (database down, shutting down); the platform should redeliver.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// What a connector may ask of the app.
#[async_trait]
pub trait ConnectorHost: Send + Sync {
    /// Store an inbound event durably (deduplicated on its platform id) and queue it for its
    /// conversation's owner. Returns once the event is durable.
    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError>;

    /// The latest messages of the open conversation on `(channel, thread)`, oldest first.
    async fn history(
        &self,
        channel: &str,
        thread: &str,
        limit: u32,
    ) -> Result<Vec<ChannelMessage>, HostError>;

    /// Presence from the customer's side; not stored.
    fn typing(&self, signal: TypingSignal);
}

/// A channel: web chat, Telegram, Discord, email.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The connector kind, also the `channel` of its events.
    fn kind(&self) -> &'static str;

    /// Routes the app mounts under `/channels/{kind}` (webhooks, WebSocket endpoints).
    fn routes(self: Arc<Self>, host: Arc<dyn ConnectorHost>) -> Option<axum::Router> {
        let _ = host;
        None
    }

    /// Long-running inbound work (polling, gateway connections) until `shutdown` fires.
    async fn run(&self, host: Arc<dyn ConnectorHost>, shutdown: CancellationToken) {
        let _ = host;
        shutdown.cancelled().await;
    }

    /// Deliver one message. Called by the outbox worker, possibly more than once for the same
    /// message after a crash or a retriable error.
    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError>;

    /// Presence towards the customer (the bot or an agent is typing). Best effort.
    async fn typing(&self, signal: &TypingSignal) {
        let _ = signal;
    }

    /// Whether the platform is reachable with the configured credentials.
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
