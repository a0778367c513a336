//! The bot side of a conversation.
//!
//! The router hands every message of a conversation the bot owns to an [`Assistant`], one turn
//! at a time per conversation, and commits what it decides (replies, its state, a handoff)
//! atomically. The assistant never writes to the store itself and never sees a conversation it
//! does not own.

use async_trait::async_trait;
use serde_json::Value;

/// One customer message in a conversation the bot owns.
#[derive(Debug, Clone)]
pub struct Turn {
    pub conversation_id: String,
    pub contact_id: String,
    pub channel: String,
    /// Whether the channel vouches for the customer's identity.
    pub verified: bool,
    pub text: String,
    /// The conversation's language so far, if known.
    pub language: Option<String>,
    /// What the assistant stored last turn (`{}` at the start).
    pub state: Value,
}

/// What the assistant decided for a turn.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Messages to the customer, in order.
    pub messages: Vec<String>,
    /// Hand the conversation to people.
    pub handoff: Option<Handoff>,
    /// Replaces the stored state when set.
    pub state: Option<Value>,
    pub language: Option<String>,
}

/// A request to pass the conversation to a queue, with what a person needs to pick it up.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub reason: String,
    /// `None`: the router's default queue.
    pub queue: Option<String>,
    pub summary: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error("assistant failed: {0}")]
    Failed(String),
}

#[async_trait]
pub trait Assistant: Send + Sync {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError>;
}

/// Repeats the customer's message: for load tests of the router and for wiring checks.
pub struct EchoAssistant;

#[async_trait]
impl Assistant for EchoAssistant {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        Ok(Reply {
            messages: vec![format!("echo: {}", turn.text)],
            ..Reply::default()
        })
    }
}

/// The assistant named in config.
pub fn from_kind(kind: &str) -> Result<std::sync::Arc<dyn Assistant>, String> {
    match kind {
        "echo" => Ok(std::sync::Arc::new(EchoAssistant)),
        other => Err(format!(
            "unknown assistant kind {other:?} (available: echo)"
        )),
    }
}
