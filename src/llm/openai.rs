//! The OpenAI chat-completions protocol (`POST {base_url}/chat/completions`), as llama.cpp,
//! vLLM, Ollama and hosted APIs serve it: JSON answers, or server-sent events when streaming,
//! with tool calls and usage.
//!
//! Retries follow the pattern of vector's `RetryLogic`: a refused connection, a timeout before
//! the first token, a 429 or a 5xx is tried again after an exponential wait with jitter (the
//! server's `Retry-After` wins); any other 4xx is final. Once text has reached the sink an
//! attempt is never repeated, so the customer never sees an answer twice.

mod wire;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};

use self::wire::{Assembled, parse_whole};
use super::{
    ChatMessage, ChatRequest, Completion, LlmError, LlmProvider, LlmSettings, Role, TextSink,
    ToolChoice,
};

/// An error body longer than this is cut in messages and logs.
const ERROR_BODY_CHARS: usize = 300;

/// Most bytes read of one answer, streamed or whole: a few hundred tokens take a few KiB, so
/// a server sending more is broken or hostile, and is cut off instead of filling memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Most bytes read of an error body (only its start is kept anyway).
const MAX_ERROR_BYTES: usize = 16 << 10;

pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    settings: LlmSettings,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.url)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended, when it did not end with a completion.
enum AttemptError {
    /// Worth another attempt, after at least this long (the server's `Retry-After`).
    Retry {
        message: String,
        after: Option<Duration>,
        /// A deadline fired (rather than the server failing).
        timed_out: bool,
    },
    /// No other attempt: the request, the protocol or the time is at fault, or text was
    /// already streamed.
    Final(LlmError),
}

impl AttemptError {
    /// The server or the connection failed; worth another attempt.
    fn failed(message: String) -> AttemptError {
        AttemptError::Retry {
            message,
            after: None,
            timed_out: false,
        }
    }

    /// The stream failed: worth another attempt only if no text reached the sink yet.
    fn broken(message: String, streamed: bool) -> AttemptError {
        if streamed {
            AttemptError::Final(LlmError::Unavailable {
                attempts: 1,
                message,
            })
        } else {
            AttemptError::failed(message)
        }
    }
}

impl OpenAiClient {
    pub fn new(settings: LlmSettings) -> Result<OpenAiClient, LlmError> {
        if settings.base_url.trim().is_empty() || settings.model.trim().is_empty() {
            return Err(LlmError::Config(
                "the llm assistant needs [llm] base_url and model".into(),
            ));
        }
        let base = settings.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "[llm] base_url must start with http:// or https://, not {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout())
            .build()
            .map_err(|error| LlmError::Config(error.to_string()))?;
        Ok(OpenAiClient {
            http,
            url: format!("{base}/chat/completions"),
            settings,
        })
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({
            "model": self.settings.model,
            "messages": request.messages.iter().map(message_json).collect::<Vec<_>>(),
            "max_tokens": request.max_tokens.unwrap_or(self.settings.max_tokens),
            "temperature": self.settings.temperature,
            "stream": stream,
        });
        if stream {
            // Usage comes in a last chunk only when asked for.
            body["stream_options"] = json!({"include_usage": true});
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({"type": "function", "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }})
                })
                .collect();
        }
        if let Some(choice) = &request.tool_choice {
            body["tool_choice"] = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Function(name) => {
                    json!({"type": "function", "function": {"name": name}})
                }
            };
        }
        body
    }

    fn backoff(&self, retry: u32, after: Option<Duration>) -> Duration {
        let ceiling = Duration::from_millis(self.settings.retry_max_ms);
        if let Some(after) = after.filter(|after| *after <= ceiling) {
            return after;
        }
        let base = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << retry.min(16));
        let capped = base.min(self.settings.retry_max_ms).max(1);
        Duration::from_millis(rand::rng().random_range(capped / 2..=capped))
    }

    async fn attempt(
        &self,
        body: &Value,
        sink: Option<&dyn TextSink>,
        started: Instant,
    ) -> Result<(Completion, Duration), AttemptError> {
        let mut builder = self.http.post(&self.url).json(body);
        if !self.settings.api_key.is_empty() {
            builder = builder.bearer_auth(&self.settings.api_key);
        }
        // Streamed, headers come with the first token; whole, only when the answer is written.
        let (answer_by, which) = match sink {
            Some(_) => (
                (started + self.settings.first_token_timeout())
                    .min(started + self.settings.request_timeout()),
                "no answer before the first-token timeout",
            ),
            None => (
                started + self.settings.request_timeout(),
                "no answer before the request timeout",
            ),
        };
        let response = match tokio::time::timeout_at(answer_by.into(), builder.send()).await {
            Err(_) => {
                return Err(AttemptError::Retry {
                    message: which.into(),
                    after: None,
                    timed_out: true,
                });
            }
            Ok(Err(error)) => {
                return Err(AttemptError::failed(describe(&error)));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let after = retry_after(response.headers());
            // A body that never ends must not hold the attempt: read what comes in time.
            let read_by = Instant::now() + Duration::from_secs(2);
            let text = match read_capped(response, read_by, MAX_ERROR_BYTES).await {
                Ok(text) | Err(ReadError::TooLarge(text)) => text,
                Err(ReadError::Late | ReadError::Http(_)) => String::new(),
            };
            let message = error_message(&text);
            if status.as_u16() == 429 || status.is_server_error() {
                return Err(AttemptError::Retry {
                    message: format!("{status}: {message}"),
                    after,
                    timed_out: false,
                });
            }
            return Err(AttemptError::Final(LlmError::Refused {
                status: status.as_u16(),
                message,
            }));
        }
        // A server that ignores `stream: true` answers in one JSON body: read it whole, and
        // give the sink its text at once.
        let whole_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        match sink {
            Some(sink) if !whole_json => self.read_stream(response, sink, started).await,
            sink => {
                let first_token = started.elapsed();
                let read_by = started + self.settings.request_timeout();
                let text = match read_capped(response, read_by, MAX_ANSWER_BYTES).await {
                    Ok(text) => text,
                    Err(ReadError::Late) => {
                        return Err(AttemptError::Final(LlmError::Timeout(
                            "the answer did not end before the request timeout".into(),
                        )));
                    }
                    Err(ReadError::TooLarge(_)) => {
                        return Err(AttemptError::Final(LlmError::Protocol(format!(
                            "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                        ))));
                    }
                    Err(ReadError::Http(error)) => {
                        return Err(AttemptError::failed(describe(&error)));
                    }
                };
                let completion = parse_whole(&text).map_err(AttemptError::Final)?;
                if let Some(sink) = sink
                    && !completion.content.is_empty()
                {
                    sink.text(&completion.content);
                }
                Ok((completion, first_token))
            }
        }
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        sink: &dyn TextSink,
        started: Instant,
    ) -> Result<(Completion, Duration), AttemptError> {
        let first_token_by = started + self.settings.first_token_timeout();
        let end_by = started + self.settings.request_timeout();
        // Counted before the event parser, which buffers an event until its blank line.
        let mut read = 0usize;
        let mut events = response
            .bytes_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(BodyError::Http)?;
                read += chunk.len();
                if read > MAX_ANSWER_BYTES {
                    return Err(BodyError::TooLarge);
                }
                Ok(chunk)
            })
            .eventsource();
        let mut assembled = Assembled::default();
        let mut first_token: Option<Duration> = None;
        loop {
            let deadline = if first_token.is_some() {
                end_by
            } else {
                first_token_by.min(end_by)
            };
            let event = match tokio::time::timeout_at(deadline.into(), events.next()).await {
                Err(_) if first_token.is_none() && first_token_by < end_by => {
                    return Err(AttemptError::Retry {
                        message: "no token before the first-token timeout".into(),
                        after: None,
                        timed_out: true,
                    });
                }
                Err(_) => {
                    return Err(AttemptError::Final(LlmError::Timeout(
                        "the answer did not end before the request timeout".into(),
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(eventsource_stream::EventStreamError::Transport(
                    BodyError::TooLarge,
                )))) => {
                    return Err(AttemptError::Final(LlmError::Protocol(format!(
                        "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    ))));
                }
                Ok(Some(Err(error))) => {
                    let message = format!("the event stream broke: {error}");
                    return Err(AttemptError::broken(message, assembled.streamed));
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                assembled.done = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: Value = serde_json::from_str(data).map_err(|error| {
                AttemptError::Final(LlmError::Protocol(format!(
                    "a stream chunk is not JSON ({error}): {}",
                    cut(data)
                )))
            })?;
            if let Some(error) = chunk.get("error") {
                let message = error_message(&error.to_string());
                return Err(AttemptError::broken(message, assembled.streamed));
            }
            if let Some(piece) = assembled.add(&chunk).map_err(AttemptError::Final)? {
                first_token.get_or_insert_with(|| started.elapsed());
                sink.text(&piece);
            } else if assembled.has_content() {
                first_token.get_or_insert_with(|| started.elapsed());
            }
        }
        if !assembled.done && assembled.finish_reason.is_none() {
            let message = "the event stream ended before the answer did".to_string();
            return Err(AttemptError::broken(message, assembled.streamed));
        }
        let first_token = first_token.unwrap_or_else(|| started.elapsed());
        Ok((
            assembled.finish().map_err(AttemptError::Final)?,
            first_token,
        ))
    }
}

#[async_trait]
impl LlmProvider for OpenAiClient {
    async fn complete(
        &self,
        request: &ChatRequest,
        sink: Option<&dyn TextSink>,
    ) -> Result<Completion, LlmError> {
        let body = self.body(request, sink.is_some());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            match self.attempt(&body, sink, started).await {
                Ok((mut completion, first_token)) => {
                    completion.first_token = first_token;
                    completion.attempts = attempts;
                    return Ok(completion);
                }
                Err(AttemptError::Final(LlmError::Unavailable { message, .. })) => {
                    return Err(LlmError::Unavailable { attempts, message });
                }
                Err(AttemptError::Final(error)) => return Err(error),
                Err(AttemptError::Retry {
                    message,
                    after,
                    timed_out,
                }) => {
                    if attempts > self.settings.max_retries {
                        if timed_out {
                            return Err(LlmError::Timeout(format!(
                                "{message} ({attempts} attempts)"
                            )));
                        }
                        return Err(LlmError::Unavailable { attempts, message });
                    }
                    let wait = self.backoff(attempts - 1, after);
                    tracing::warn!(
                        model = %self.settings.model,
                        attempt = attempts,
                        wait_ms = wait.as_millis() as u64,
                        error = %message,
                        "llm request failed, retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn model(&self) -> &str {
        &self.settings.model
    }
}

/// Why a body was not read whole.
enum ReadError {
    /// Past the deadline.
    Late,
    /// Over the cap; what was read up to it.
    TooLarge(String),
    Http(reqwest::Error),
}

/// The body as text, read until `deadline` and at most `cap` bytes.
async fn read_capped(
    mut response: reqwest::Response,
    deadline: Instant,
    cap: usize,
) -> Result<String, ReadError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), response.chunk()).await {
            Err(_) => return Err(ReadError::Late),
            Ok(Err(error)) => return Err(ReadError::Http(error)),
            Ok(Ok(None)) => return Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok(Ok(Some(chunk))) => {
                body.extend_from_slice(&chunk);
                if body.len() > cap {
                    body.truncate(cap);
                    return Err(ReadError::TooLarge(
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                }
            }
        }
    }
}

/// A streamed body's failure, before the event parser sees it.
#[derive(Debug)]
enum BodyError {
    Http(reqwest::Error),
    TooLarge,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Http(error) => f.write_str(&describe(error)),
            BodyError::TooLarge => write!(f, "more than {MAX_ANSWER_BYTES} bytes"),
        }
    }
}

fn message_json(message: &ChatMessage) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut value = json!({"role": role, "content": message.content});
    if !message.tool_calls.is_empty() {
        value["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({"id": call.id, "type": "function", "function": {
                    "name": call.name,
                    "arguments": call.arguments,
                }})
            })
            .collect();
    }
    if let Some(id) = &message.tool_call_id {
        value["tool_call_id"] = json!(id);
    }
    value
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
}

fn describe(error: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"); the source says why.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The `error.message` of an OpenAI-style error body, else the body itself, cut short.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|value| {
        value
            .pointer("/error/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    cut(message.as_deref().unwrap_or(body))
}

fn cut(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(ERROR_BODY_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_refuses_what_is_no_duration() {
        let mut headers = reqwest::header::HeaderMap::new();
        for (value, expected) in [
            ("2", Some(Duration::from_secs(2))),
            ("0.5", Some(Duration::from_millis(500))),
            ("1e20", None),
            ("-1", None),
            ("NaN", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ] {
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            assert_eq!(retry_after(&headers), expected, "{value}");
        }
    }

    #[test]
    fn error_bodies_are_read_and_cut() {
        assert_eq!(
            error_message(r#"{"error":{"message":"model not found","type":"invalid"}}"#),
            "model not found"
        );
        let long = "x".repeat(1000);
        assert_eq!(error_message(&long).chars().count(), ERROR_BODY_CHARS + 1);
    }
}
