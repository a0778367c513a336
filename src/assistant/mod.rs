//! The bot side of a conversation.
//!
//! The router hands every message of a conversation the bot owns to an [`Assistant`], one turn
//! at a time per conversation, and commits what it decides (replies, its state, a handoff)
//! atomically. The assistant never writes to the store itself and never sees a conversation it
//! does not own.
//!
//! Three assistants ship: [`EchoAssistant`] (wiring checks and router benchmarks), the
//! [`builtin`] one, which needs no LLM: it answers questions from the knowledge base with a
//! citation, recognises intents ([`classifier`]) defined in config ([`intents`]), collects
//! their slots over several turns and decides when to hand over to people; and the [`llm`]
//! one, where a language model writes grounded answers and calls tools, with the builtin one
//! underneath as its fallback.

pub mod builtin;
pub mod classifier;
pub mod eval;
pub mod intents;
pub mod llm;
pub mod redact;
pub mod settings;
pub mod shop;

pub use settings::AssistantSettings;
pub use shop::Shop;

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
    /// The shop, as this conversation's customer sees it (products, their own orders, a
    /// price); `None` where no workflow is connected.
    pub shop: Option<std::sync::Arc<dyn Shop>>,
    /// Where the reply may be shown while it is written, when the channel can show it.
    pub draft: Option<std::sync::Arc<dyn DraftSink>>,
}

/// Shows a reply while it is written (web chat's `draft` frames): each call carries the whole
/// text so far. Best effort and never blocking; what is stored and delivered is still the
/// final [`Reply`], which replaces the draft.
pub trait DraftSink: Send + Sync + std::fmt::Debug {
    fn draft(&self, text_so_far: &str);
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
    /// Back-office work the assistant asks for; the router hands these to the workflow
    /// service, which decides whether the verified customer may have it.
    pub actions: Vec<Action>,
    /// Quick replies offered with the last message (buttons, where the channel has them);
    /// a picked one comes back as the next turn's text, its label.
    pub choices: Vec<switchboard_connector::Choice>,
}

/// Something the assistant asks the back office to do. It is a request, never an
/// authorisation: the [`ActionRunner`] acts as the conversation's verified customer and the
/// workflow's policies decide.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a back-office task of `kind` (a workflow task type such as `refund`) about
    /// `order_id`, with the details collected from the customer (slot name to value).
    OpenTask {
        kind: String,
        order_id: Option<String>,
        details: serde_json::Map<String, Value>,
    },
    /// Tell the customer where their order is.
    OrderStatus { order_id: String },
}

impl Action {
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Action::OpenTask { order_id, .. } => order_id.as_deref(),
            Action::OrderStatus { order_id } => Some(order_id),
        }
    }
}

/// Carries out the assistant's actions for the router, within the turn that asked for them.
#[async_trait]
pub trait ActionRunner: Send + Sync {
    /// Run `action` for the customer of `conversation_id`. `key` is stable across a redone
    /// turn (a crash, a takeover), so running it twice has the effect of once. Returns what to
    /// tell the customer now, in `language`; nothing when the outcome is told another way.
    async fn run(
        &self,
        conversation_id: &str,
        language: Option<&str>,
        action: &Action,
        key: &str,
    ) -> Vec<String>;
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
    #[error("assistant configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Knowledge(#[from] crate::knowledge::KnowledgeError),
    #[error(transparent)]
    Embed(#[from] crate::knowledge::EmbedError),
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

/// An assistant that needs nothing but its kind (`echo`); see [`from_settings`] for all.
pub fn from_kind(kind: &str) -> Result<std::sync::Arc<dyn Assistant>, String> {
    match kind {
        "echo" => Ok(std::sync::Arc::new(EchoAssistant)),
        "builtin" | "llm" => Err(format!(
            "the {kind} assistant needs its settings: use assistant::from_settings"
        )),
        other => Err(format!(
            "unknown assistant kind {other:?} (available: builtin, llm, echo)"
        )),
    }
}

/// The assistant named in config, built with everything it needs (model, knowledge base,
/// intents). The builtin one trains its classifier here, with `embedder` if the caller loaded
/// the model already, or loading it.
pub async fn from_settings(
    settings: &crate::config::Settings,
    embedder: Option<std::sync::Arc<dyn crate::knowledge::Embedder>>,
) -> Result<std::sync::Arc<dyn Assistant>, AssistantError> {
    match settings.assistant.kind.as_str() {
        "builtin" => {
            let embedder = match embedder {
                Some(embedder) => embedder,
                None => settings.assistant.embedder().await?,
            };
            Ok(std::sync::Arc::new(
                builtin::BuiltinAssistant::build_with(settings, embedder).await?,
            ))
        }
        "llm" => {
            let provider = crate::llm::OpenAiClient::new(settings.llm.clone())
                .map_err(|error| AssistantError::Config(error.to_string()))?;
            let embedder = match embedder {
                Some(embedder) => embedder,
                None => settings.assistant.embedder().await?,
            };
            let builtin = builtin::BuiltinAssistant::build_with(settings, embedder).await?;
            Ok(std::sync::Arc::new(llm::LlmAssistant::new(
                std::sync::Arc::new(builtin),
                std::sync::Arc::new(provider),
                settings.llm.clone(),
            )?))
        }
        other => from_kind(other).map_err(AssistantError::Config),
    }
}
