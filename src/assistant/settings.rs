//! `[assistant]` settings (documented in `config/switchboard.toml`), and building the embedder
//! they describe.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::AssistantError;
use crate::knowledge::Embedder;
use crate::knowledge::embed::{HttpEmbedder, HttpEmbedderConfig, LocalEmbedder};

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssistantSettings {
    /// `builtin` (knowledge base, intents, slot filling, handoff; no LLM) or `echo`.
    pub kind: String,
    /// `local` (candle, in process) or `http` (an OpenAI-compatible `/v1/embeddings`).
    pub embedder: String,
    /// The local model's folder (config.json, tokenizer.json, model.safetensors).
    pub model_dir: PathBuf,
    /// Local model inference threads; 0 means one per core.
    pub embedder_threads: usize,
    /// `http` embedder: base URL such as `http://127.0.0.1:8000/v1`.
    pub embedder_url: String,
    pub embedder_model: String,
    /// Sent as a bearer token when not empty; never logged.
    pub embedder_api_key: String,
    pub embedder_timeout_ms: u64,
    /// Intents, slots and examples.
    pub intents_file: PathBuf,
    /// What the assistant says, per language.
    pub responses_file: PathBuf,
    /// When the customer's language cannot be told.
    pub default_language: String,
    /// Below this language-detection confidence, the conversation keeps its language.
    pub language_switch_confidence: f64,
    /// A knowledge passage is shown only with at least this confidence (0..1).
    pub answer_min_confidence: f32,
    /// Unsure turns in a row that hand the conversation to people.
    pub low_confidence_handoff: u32,
    /// Invalid answers to one slot before handing over.
    pub max_slot_attempts: u32,
    /// Leave an open slot-filling flow for another intent only above this probability.
    pub switch_intent_probability: f32,
    /// A product search result is offered only with at least this confidence (0..1).
    pub product_min_confidence: f32,
    /// The best product is taken without asking when it is this much more confident than the
    /// next; closer ones are offered as choices.
    pub product_margin: f32,
}

impl Default for AssistantSettings {
    fn default() -> AssistantSettings {
        AssistantSettings {
            kind: "echo".into(),
            embedder: "local".into(),
            model_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            embedder_threads: 0,
            embedder_url: String::new(),
            embedder_model: String::new(),
            embedder_api_key: String::new(),
            embedder_timeout_ms: 10_000,
            intents_file: PathBuf::from("config/demo/intents.toml"),
            responses_file: PathBuf::from("config/demo/responses.toml"),
            default_language: "en".into(),
            language_switch_confidence: 0.8,
            answer_min_confidence: 0.45,
            low_confidence_handoff: 2,
            max_slot_attempts: 3,
            switch_intent_probability: 0.6,
            product_min_confidence: 0.35,
            product_margin: 0.1,
        }
    }
}

impl std::fmt::Debug for AssistantSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssistantSettings")
            .field("kind", &self.kind)
            .field("embedder", &self.embedder)
            .field("model_dir", &self.model_dir)
            .field("embedder_url", &self.embedder_url)
            .field("embedder_model", &self.embedder_model)
            .field("embedder_api_key", &"<redacted>")
            .field("intents_file", &self.intents_file)
            .field("responses_file", &self.responses_file)
            .finish_non_exhaustive()
    }
}

impl AssistantSettings {
    /// The configured embedder; the local model loads on a blocking thread.
    pub async fn embedder(&self) -> Result<Arc<dyn Embedder>, AssistantError> {
        match self.embedder.as_str() {
            "local" => {
                let dir = self.model_dir.clone();
                let threads = self.embedder_threads;
                let embedder = tokio::task::spawn_blocking(move || {
                    LocalEmbedder::load_with_threads(&dir, threads)
                })
                .await
                .map_err(|error| AssistantError::Failed(error.to_string()))??;
                Ok(Arc::new(embedder))
            }
            "http" => {
                if self.embedder_url.is_empty() || self.embedder_model.is_empty() {
                    return Err(AssistantError::Config(
                        "assistant.embedder = \"http\" needs embedder_url and embedder_model"
                            .into(),
                    ));
                }
                let embedder = HttpEmbedder::connect(HttpEmbedderConfig {
                    base_url: self.embedder_url.clone(),
                    model: self.embedder_model.clone(),
                    api_key: (!self.embedder_api_key.is_empty())
                        .then(|| self.embedder_api_key.clone()),
                    timeout: Duration::from_millis(self.embedder_timeout_ms),
                })
                .await?;
                Ok(Arc::new(embedder))
            }
            other => Err(AssistantError::Config(format!(
                "unknown assistant.embedder {other:?} (available: local, http)"
            ))),
        }
    }
}
