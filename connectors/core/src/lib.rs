//! The contract between Switchboard and its channels.
//!
//! A channel is a crate under `connectors/` that registers a [`ChannelFactory`] under its kind.
//! The app builds one [`Connector`] per `[[channel]]` table of the config (any number of named
//! instances per kind) and gives each a [`ConnectorHost`] scoped to that instance. The connector
//! turns a platform's events into [`InboundEvent`]s and hands them to the host, and delivers the
//! [`OutboundMessage`]s the app's outbox worker passes to [`Connector::send`]. Connectors
//! depend on this crate only, never on the app.
//!
//! The rules every connector keeps (checked by [`contract`]):
//! - an inbound event carries the platform's own message id, so the app can drop a redelivery;
//! - an event is acknowledged to the platform or client only after [`ConnectorHost::ingest`]
//!   returned, because that is when it is durable, and a platform cursor
//!   ([`ConnectorHost::set_cursor`]) moves only past events that were ingested;
//! - [`Connector::send`] is idempotent on [`OutboundMessage::id`] where the platform allows it,
//!   and reports whether a failure is worth retrying;
//! - [`Connector::run`] returns an error instead of dying silently: the app restarts it.

pub mod contract;
mod events;
mod factory;
pub mod files;
mod message;
mod partial;
pub mod text;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use events::{EventKind, EventWatch, LiveEvent};
pub use factory::{
    ChannelFactory, ChannelTable, InstanceConfig, OutboundOverrides, SHARED_KEYS, Secret,
    TableError, expand_env, valid_name,
};
pub use message::{
    Attachment, AttachmentBody, AuthorKind, ChannelMessage, Choice, CommandReply, DraftSignal,
    Extension, Extensions, InboundEvent, IngestReceipt, MessageRef, OutboundMessage, PickedChoice,
    PlatformIdentity, RecordOnly, SendReceipt, TypingSignal, is_plausible_email, normalise_email,
};
pub use partial::{PartialSends, REMEMBERED_PARTIAL_SENDS};

/// The client's address, which the app's HTTP edge puts in the extensions of every request it
/// serves (an `axum::Extension<ClientAddress>`): the TCP peer, or, behind a reverse proxy the
/// operator trusts, the address that proxy names (`http.client_address_header`). Connector
/// routes key their per-client limits by it instead of reading forwarding headers themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub std::net::IpAddr);

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Worth trying again later (network error, 5xx, rate limit).
    #[error("temporary failure: {message}")]
    Retriable {
        message: String,
        /// The platform's own hint, such as Telegram's `retry_after`. It pauses the whole
        /// instance's outbound traffic, not just this message.
        retry_after: Option<Duration>,
    },
    /// Will fail the same way every time (bad recipient, message rejected).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The person can no longer be reached on this thread (Telegram's 403: they blocked the
    /// bot or left). The delivery is given up, and the app marks the thread unreachable:
    /// later deliveries to it are given up at once, without a call, until the customer writes
    /// again.
    #[error("recipient unreachable: {0}")]
    Unreachable(String),
    /// The instance cannot work as configured (bad token, missing permission, bad key):
    /// reported once, not retried.
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

    /// The platform's own pause, if it named one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::Retriable { retry_after, .. } => *retry_after,
            _ => None,
        }
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

/// A durable checkpoint of an instance: a Telegram update offset, an IMAP mailbox's
/// UIDVALIDITY and last UID, a Discord channel's last message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub value: String,
    /// Bumped by every write; [`ConnectorHost::set_cursor`] compares it.
    pub version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// Somebody else moved the cursor since it was read; read it again.
    #[error("cursor {key} was moved by someone else (now at version {current:?})")]
    Conflict { key: String, current: Option<i64> },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// What a connector may ask of the app. The host a connector gets is scoped to its instance:
/// events it ingests, cursors and look-ups all belong to that instance.
#[async_trait]
pub trait ConnectorHost: Send + Sync {
    /// The instance name this host serves (the `channel` of every event and message).
    fn channel(&self) -> &str;

    /// Store an inbound event durably (deduplicated on its platform id) and queue it for its
    /// conversation's owner. Returns once the event is durable. The event's `channel` must be
    /// this host's instance.
    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError>;

    /// The latest messages of the open conversation on `thread`, oldest first.
    async fn history(&self, thread: &str, limit: u32) -> Result<Vec<ChannelMessage>, HostError>;

    /// Our message behind a platform's message id (an inbound one, or the receipt of a
    /// delivered reply): how a platform reply or an email's `In-Reply-To` finds its thread.
    async fn find_message(
        &self,
        platform_message_id: &str,
    ) -> Result<Option<MessageRef>, HostError>;

    /// Read a durable cursor of this instance.
    async fn cursor(&self, key: &str) -> Result<Option<Cursor>, HostError>;

    /// Move a cursor if nobody else did: `expected` is the version read (None: the cursor
    /// must not exist yet). Returns the new cursor.
    async fn set_cursor(
        &self,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> Result<Cursor, CursorError>;

    /// Live changes of the open conversation on `thread` from now on (messages stored and
    /// delivered, typing, owner and status changes). Live only: what was missed is read back
    /// with [`ConnectorHost::history`].
    fn watch(&self, thread: &str) -> EventWatch;

    /// Presence from the customer's side; not stored.
    fn typing(&self, signal: TypingSignal);

    /// Something a client sent was refused at this instance's edge (a rate limit, a foreign
    /// origin, a malformed frame): `reason` is a stable label, counted by the app in
    /// `switchboard_edge_rejections_total{reason}`.
    fn edge_rejection(&self, reason: &'static str) {
        let _ = reason;
    }
}

/// How fast an instance may send; the app's outbox enforces it per instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutboundLimits {
    /// Sustained messages per second; None: no limit.
    pub per_second: Option<f64>,
    /// Messages allowed at once above the sustained rate.
    pub burst: u32,
    /// Deliveries in flight at once; None: the outbox's own limit.
    pub concurrency: Option<usize>,
}

impl Default for OutboundLimits {
    fn default() -> OutboundLimits {
        OutboundLimits {
            per_second: None,
            burst: 1,
            concurrency: None,
        }
    }
}

/// What a platform can show, so the app fills in only what the connector uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Quick-reply buttons ([`OutboundMessage::choices`]).
    pub choices: bool,
    /// The platform threads by the ids of every earlier message ([`OutboundMessage::references`],
    /// as email's `References`).
    pub thread_references: bool,
    /// Files can be fetched through [`Connector::fetch_attachment`].
    pub attachments: bool,
    /// A reply can be shown as it is written ([`Connector::draft`]).
    pub drafts: bool,
}

/// A channel instance: web chat, a Telegram bot, a Discord bot, a mailbox.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The connector kind (`webchat`, `telegram`, ...).
    fn kind(&self) -> &'static str;

    /// The instance name from config, also the `channel` of its events and messages.
    fn name(&self) -> &str;

    /// Routes the app mounts under `/channels/{kind}/{name}` (webhooks, WebSocket endpoints).
    fn routes(self: Arc<Self>, host: Arc<dyn ConnectorHost>) -> Option<axum::Router> {
        let _ = host;
        None
    }

    /// Long-running inbound work (polling, gateway connections) until `shutdown` fires. An
    /// error (or returning before shutdown) makes the app restart it with backoff, except a
    /// [`ConnectorError::Config`] one, which marks the instance failed.
    async fn run(
        &self,
        host: Arc<dyn ConnectorHost>,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectorError> {
        let _ = host;
        shutdown.cancelled().await;
        Ok(())
    }

    /// Deliver one message. Called by the outbox worker, possibly more than once for the same
    /// message after a crash or a retriable error.
    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError>;

    /// Presence towards the customer (the bot or an agent is typing). Best effort.
    async fn typing(&self, signal: &TypingSignal) {
        let _ = signal;
    }

    /// The bot's reply as it is being written (see [`DraftSignal`]), where the platform can
    /// show it ([`Capabilities::drafts`]). Best effort, and never blocking: it is called for
    /// every piece a model writes.
    fn draft(&self, signal: &DraftSignal) {
        let _ = signal;
    }

    /// Whether the platform is reachable with the configured credentials. Called at start and
    /// periodically.
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The platform's sending limits for this instance (config can tighten them).
    fn limits(&self) -> OutboundLimits {
        OutboundLimits::default()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The bytes of an attachment, fetched from the platform when someone opens it.
    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, ConnectorError> {
        let _ = attachment;
        Err(ConnectorError::Permanent(format!(
            "{} does not serve attachments",
            self.kind()
        )))
    }
}
