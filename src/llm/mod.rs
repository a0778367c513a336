//! Language models behind one small trait, so that the assistant can write answers and call
//! tools on any server that speaks the OpenAI chat-completions protocol (llama.cpp, vLLM,
//! Ollama, a hosted API).
//!
//! [`LlmProvider`] takes a [`ChatRequest`] (messages, the tools the model may call) and returns
//! one [`Completion`]: the text, the tool calls, why it stopped and the tokens it used. Text can
//! be streamed as it is written through [`TextSink`]; the completion is returned whole either
//! way, so the caller stores and delivers the final message once. [`openai`] is the client.
//!
//! A provider never decides what is allowed: a tool call is a request that the assistant hands
//! to the workflow service, acting as the conversation's verified customer.

pub mod openai;
pub mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use openai::OpenAiClient;

/// `[llm]`: the model server (documented in `config/switchboard.toml`).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible API, such as `http://127.0.0.1:8000/v1`;
    /// `/chat/completions` is appended.
    pub base_url: String,
    /// The model name the server expects.
    pub model: String,
    /// Sent as a bearer token when not empty; never logged.
    pub api_key: String,
    /// Connecting to the server.
    pub connect_timeout_ms: u64,
    /// From sending the request to the first token (or, without streaming, the whole answer's
    /// headers): past it the attempt is abandoned.
    pub first_token_timeout_ms: u64,
    /// A whole completion, first token included.
    pub request_timeout_ms: u64,
    /// Further attempts after a 429, a 5xx, a timeout before any token, or a refused
    /// connection; 0 sends once.
    pub max_retries: u32,
    /// The first retry's wait; each next one doubles, with jitter, up to `retry_max_ms`. A
    /// `Retry-After` from the server wins when it is no longer than `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Most tokens the model may write per completion.
    pub max_tokens: u32,
    pub temperature: f32,
    /// The prompt templates (`system.j2`, `handoff_summary.j2`, `tools.toml`; a
    /// `NAME.LANG.j2` beside one replaces it for that language).
    pub prompts_dir: PathBuf,
    /// The company's name, as the prompts speak of it.
    pub company_name: String,
    /// Tokens (prompt and completion) one conversation may use; past it the builtin assistant
    /// answers. 0: no limit.
    pub conversation_token_budget: u64,
    /// Rounds of lookups (orders, requests) the model may do before it must answer.
    pub max_tool_rounds: u32,
    /// Earlier messages of the conversation sent with each request.
    pub history_messages: usize,
    /// Most tokens of the summary written for the people a conversation is handed to.
    pub summary_max_tokens: u32,
    /// The longest a customer waits for the model's part of a turn (every completion, lookup
    /// and retry; not the knowledge search before it); past it the builtin assistant answers
    /// instead.
    pub answer_deadline_ms: u64,
}

impl Default for LlmSettings {
    fn default() -> LlmSettings {
        LlmSettings {
            base_url: String::new(),
            model: String::new(),
            api_key: String::new(),
            connect_timeout_ms: 2_000,
            first_token_timeout_ms: 8_000,
            request_timeout_ms: 60_000,
            max_retries: 2,
            retry_base_ms: 250,
            retry_max_ms: 4_000,
            max_tokens: 512,
            temperature: 0.2,
            prompts_dir: PathBuf::from("prompts"),
            company_name: "the shop".into(),
            conversation_token_budget: 20_000,
            max_tool_rounds: 3,
            history_messages: 12,
            summary_max_tokens: 200,
            answer_deadline_ms: 15_000,
        }
    }
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "<none>"
                } else {
                    "<redacted>"
                },
            )
            .field("first_token_timeout_ms", &self.first_token_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("prompts_dir", &self.prompts_dir)
            .field("conversation_token_budget", &self.conversation_token_budget)
            .finish_non_exhaustive()
    }
}

impl LlmSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn first_token_timeout(&self) -> Duration {
        Duration::from_millis(self.first_token_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Who wrote a message of the conversation sent to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// The calls an assistant message made (sent back so the model sees its own calls).
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::plain(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::plain(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::plain(Role::Assistant, content)
    }

    /// The model's own turn that called tools, sent back before the tools' results.
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> ChatMessage {
        ChatMessage {
            tool_calls: calls,
            ..ChatMessage::plain(Role::Assistant, content)
        }
    }

    /// What a tool returned for `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            tool_call_id: Some(call_id.into()),
            ..ChatMessage::plain(Role::Tool, content)
        }
    }

    fn plain(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A function the model may call: its name, what it does, and its arguments as a JSON Schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Whether, and which, tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool: text only.
    None,
    /// Some tool, the model's pick.
    Required,
    /// This tool.
    Function(String),
}

/// A call the model asked for. `arguments` is the JSON text the model wrote, unparsed: it may
/// be invalid, and the caller says so to the model rather than guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What to ask the model.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    /// Whether the model must call a tool; `None` leaves it to the server (`auto` when tools
    /// are offered).
    pub tool_choice: Option<ToolChoice>,
    /// Overrides `[llm] max_tokens` for this request.
    pub max_tokens: Option<u32>,
}

/// Why the model stopped writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// It finished its answer (or hit a stop sequence).
    Stop,
    /// It ran out of `max_tokens`: the text is cut short.
    Length,
    /// It wants the tools in [`Completion::tool_calls`] run.
    ToolCalls,
    /// The provider's filter withheld the answer.
    ContentFilter,
    /// Anything else the server said, kept as written.
    Other(String),
}

impl FinishReason {
    fn parse(reason: &str) -> FinishReason {
        match reason {
            "stop" | "eos" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

/// Tokens a completion used, as the server counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// What `completion` used: as the server counted it, or, from a server that reports no
    /// usage (llama.cpp's Python server never does in a stream), estimated at about four
    /// characters a token from what was sent and what came back, so that budgets still hold.
    pub fn of(request: &ChatRequest, completion: &Completion) -> Usage {
        if let Some(usage) = completion.usage {
            return usage;
        }
        let calls = |calls: &[ToolCall]| {
            calls
                .iter()
                .map(|call| call.name.len() + call.arguments.len())
                .sum::<usize>()
        };
        let sent: usize = request
            .messages
            .iter()
            .map(|message| message.content.len() + calls(&message.tool_calls))
            .sum::<usize>()
            + request
                .tools
                .iter()
                .map(|tool| {
                    tool.name.len() + tool.description.len() + tool.parameters.to_string().len()
                })
                .sum::<usize>();
        let received = completion.content.len() + calls(&completion.tool_calls);
        Usage {
            prompt_tokens: sent.div_ceil(CHARS_PER_TOKEN) as u64,
            completion_tokens: received.div_ceil(CHARS_PER_TOKEN) as u64,
        }
    }
}

/// A rough count of characters per token, for servers that report no usage.
const CHARS_PER_TOKEN: usize = 4;

/// One completed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// `None` when the server did not report it ([`Usage::of`] estimates it then).
    pub usage: Option<Usage>,
    /// Time from sending the request to the first token (or the whole answer, unstreamed).
    pub first_token: Duration,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// Receives text as the model writes it, piece by piece, in order.
pub trait TextSink: Send + Sync {
    fn text(&self, piece: &str);
}

impl<F: Fn(&str) + Send + Sync> TextSink for F {
    fn text(&self, piece: &str) {
        self(piece)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llm settings: {0}")]
    Config(String),
    /// The server could not be reached, or answered 429 or 5xx, on every attempt.
    #[error("llm server unavailable after {attempts} attempts: {message}")]
    Unavailable { attempts: u32, message: String },
    /// No first token within `first_token_timeout_ms`, or no end within `request_timeout_ms`.
    #[error("llm server too slow: {0}")]
    Timeout(String),
    /// A 4xx other than 429: retrying would not help (a wrong model, key or request).
    #[error("llm server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The answer did not follow the protocol.
    #[error("llm server answered outside the protocol: {0}")]
    Protocol(String),
}

#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// Ask for one completion. With `sink`, the answer is streamed and each piece of text goes
    /// to it as it arrives; without, the answer comes in one response. Either way the whole
    /// completion is returned at the end.
    async fn complete(
        &self,
        request: &ChatRequest,
        sink: Option<&dyn TextSink>,
    ) -> Result<Completion, LlmError>;

    /// The model's name, for logs and usage records.
    fn model(&self) -> &str;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(content: &str, usage: Option<Usage>) -> Completion {
        Completion {
            content: content.into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage,
            first_token: Duration::ZERO,
            attempts: 1,
        }
    }

    #[test]
    fn usage_is_the_servers_or_an_estimate_from_the_text() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system("x".repeat(400)),
                ChatMessage::user("hello"),
            ],
            ..ChatRequest::default()
        };
        let reported = Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
        };
        assert_eq!(
            Usage::of(&request, &completion("hi", Some(reported))),
            reported
        );
        let estimated = Usage::of(&request, &completion(&"y".repeat(41), None));
        assert_eq!(estimated.prompt_tokens, 102);
        assert_eq!(estimated.completion_tokens, 11);
    }
}
