//! Live conversation events: every change of a conversation, numbered per conversation.
//!
//! The app stores each event (except typing) with the next sequence number of its
//! conversation and publishes it after the commit. A subscriber that knows the last sequence
//! it saw can always catch up from the database, because numbers are dense: a gap means an
//! event it has not seen yet, never one that does not exist.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A conversation was opened on a channel thread.
    #[serde(rename = "conversation.opened")]
    ConversationOpened,
    /// A message was stored (inbound from the customer, or a reply): `data` holds
    /// `message_id`, `seq`, `author`, `text`.
    #[serde(rename = "message.stored")]
    MessageStored,
    /// A reply reached the platform: `data` holds `message_id` and `platform_message_id`.
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    /// A reply could not be delivered for good: `data` holds `message_id` and `error`.
    #[serde(rename = "message.failed")]
    MessageFailed,
    /// The owner (and with it the status) changed: `data` holds `from`, `to`, `status` and
    /// the reason (`handoff`, `takeover`, `hand_back`, `resolved`, ...).
    #[serde(rename = "owner.changed")]
    OwnerChanged,
    /// A back-office task of the conversation changed: `data` holds `task_id`, `status`.
    #[serde(rename = "task.changed")]
    TaskChanged,
    /// An agent wrote a private note (never shown to the customer): `data` holds `text`,
    /// `author` (user id) and `author_name`.
    #[serde(rename = "note.added")]
    NoteAdded,
    /// The conversation's labels changed: `data` holds `labels`.
    #[serde(rename = "labels.changed")]
    LabelsChanged,
    /// The customer rated a resolved conversation: `data` holds `score` (1 to 5) and
    /// `comment`.
    #[serde(rename = "conversation.rated")]
    ConversationRated,
    /// Someone is typing (not stored; `seq` is 0): `data` holds `author`, `active`.
    #[serde(rename = "typing")]
    Typing,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ConversationOpened => "conversation.opened",
            EventKind::MessageStored => "message.stored",
            EventKind::MessageDelivered => "message.delivered",
            EventKind::MessageFailed => "message.failed",
            EventKind::OwnerChanged => "owner.changed",
            EventKind::TaskChanged => "task.changed",
            EventKind::NoteAdded => "note.added",
            EventKind::LabelsChanged => "labels.changed",
            EventKind::ConversationRated => "conversation.rated",
            EventKind::Typing => "typing",
        }
    }

    pub fn parse(value: &str) -> Option<EventKind> {
        [
            EventKind::ConversationOpened,
            EventKind::MessageStored,
            EventKind::MessageDelivered,
            EventKind::MessageFailed,
            EventKind::OwnerChanged,
            EventKind::TaskChanged,
            EventKind::NoteAdded,
            EventKind::LabelsChanged,
            EventKind::ConversationRated,
            EventKind::Typing,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == value)
    }

    /// Typing is presence, not history: it is published but never stored.
    pub fn is_stored(self) -> bool {
        self != EventKind::Typing
    }
}

/// One change of one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub conversation_id: String,
    /// The instance and thread of the conversation, so channel subscribers can filter.
    pub channel: String,
    pub thread: String,
    /// Dense per conversation, from 1; 0 for typing, which is not stored.
    pub seq: i64,
    pub kind: EventKind,
    /// Who caused it: `customer`, `bot`, `router`, `outbox`, `agent:<id>`, `workflow`, ...
    pub actor: String,
    pub data: serde_json::Value,
    pub created_at_ms: i64,
}

/// A live subscription: events from the moment of subscribing. A receiver that falls too far
/// behind gets `RecvError::Lagged` and should read back from history.
pub type EventWatch = tokio::sync::broadcast::Receiver<Arc<LiveEvent>>;
