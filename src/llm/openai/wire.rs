//! The answers' wire format: a whole JSON answer, or a stream of chunks put back together.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::cut;
use crate::llm::{Completion, FinishReason, LlmError, ToolCall, Usage};

#[derive(Deserialize)]
struct WholeResponse {
    choices: Vec<WholeChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WholeChoice {
    message: WholeMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WholeMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<Value>,
}

/// Arguments as the JSON text the model wrote; some servers send an object instead.
fn arguments_text(arguments: Option<Value>) -> String {
    match arguments {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
    }
}

pub(super) fn parse_whole(text: &str) -> Result<Completion, LlmError> {
    let response: WholeResponse = serde_json::from_str(text).map_err(|error| {
        LlmError::Protocol(format!(
            "the answer is not a completion ({error}): {}",
            cut(text)
        ))
    })?;
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Protocol("the answer has no choices".into()))?;
    let tool_calls = choice
        .message
        .tool_calls
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: call.id.unwrap_or_else(|| format!("call_{index}")),
            name: call.function.name.unwrap_or_default(),
            arguments: arguments_text(call.function.arguments),
        })
        .collect::<Vec<_>>();
    let finish_reason = finish_reason(choice.finish_reason.as_deref(), &tool_calls);
    Ok(Completion {
        content: choice.message.content.unwrap_or_default(),
        tool_calls,
        finish_reason,
        usage: response.usage,
        first_token: Duration::ZERO,
        attempts: 1,
    })
}

/// Servers that call a tool do not all say `tool_calls` as the reason; calls are what count.
fn finish_reason(reason: Option<&str>, calls: &[ToolCall]) -> FinishReason {
    match reason.map(FinishReason::parse) {
        Some(FinishReason::Stop) | None if !calls.is_empty() => FinishReason::ToolCalls,
        Some(reason) => reason,
        None => FinishReason::Stop,
    }
}

/// A streamed answer put back together, chunk by chunk.
#[derive(Default)]
pub(super) struct Assembled {
    content: String,
    /// Tool calls by their `index` in the deltas: id, name, arguments so far.
    calls: BTreeMap<u64, (Option<String>, String, String)>,
    pub(super) finish_reason: Option<String>,
    usage: Option<Usage>,
    /// Text has gone to the sink.
    pub(super) streamed: bool,
    pub(super) done: bool,
}

impl Assembled {
    pub(super) fn has_content(&self) -> bool {
        !self.content.is_empty() || !self.calls.is_empty()
    }

    /// Take one chunk; the text it adds, if any.
    pub(super) fn add(&mut self, chunk: &Value) -> Result<Option<String>, LlmError> {
        if let Some(usage) = chunk.get("usage").filter(|usage| !usage.is_null()) {
            self.usage = serde_json::from_value(usage.clone()).ok();
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first())
        else {
            return Ok(None);
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let Some(delta) = choice.get("delta") else {
            return Ok(None);
        };
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    entry.0 = Some(id.to_string());
                }
                if let Some(function) = call.get("function") {
                    // Some servers (llama.cpp's) repeat the whole name in every delta.
                    if let Some(name) = function
                        .get("name")
                        .and_then(Value::as_str)
                        .filter(|name| !name.is_empty())
                    {
                        entry.1 = name.to_string();
                    }
                    match function.get("arguments") {
                        Some(Value::String(piece)) => entry.2.push_str(piece),
                        Some(Value::Null) | None => {}
                        Some(other) => entry.2.push_str(&other.to_string()),
                    }
                }
            }
        }
        match delta.get("content") {
            Some(Value::String(piece)) if !piece.is_empty() => {
                self.content.push_str(piece);
                self.streamed = true;
                Ok(Some(piece.clone()))
            }
            Some(Value::String(_)) | Some(Value::Null) | None => Ok(None),
            Some(other) => Err(LlmError::Protocol(format!(
                "a delta's content is not text: {}",
                cut(&other.to_string())
            ))),
        }
    }

    pub(super) fn finish(self) -> Result<Completion, LlmError> {
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .map(|(index, (id, name, arguments))| ToolCall {
                id: id.unwrap_or_else(|| format!("call_{index}")),
                name,
                arguments,
            })
            .collect();
        if tool_calls.iter().any(|call| call.name.is_empty()) {
            return Err(LlmError::Protocol(
                "a streamed tool call has no name".into(),
            ));
        }
        let finish_reason = finish_reason(self.finish_reason.as_deref(), &tool_calls);
        Ok(Completion {
            content: self.content,
            tool_calls,
            finish_reason,
            usage: self.usage,
            first_token: Duration::ZERO,
            attempts: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stream_chunks_assemble_text_and_tool_calls() {
        let mut assembled = Assembled::default();
        let chunks = [
            json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            json!({"choices": [{"delta": {"content": "Let me "}}]}),
            json!({"choices": [{"delta": {"content": "check."}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_a",
                "type": "function", "function": {"name": "order_status", "arguments": ""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "{\"order_id\":"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "\"1043\"}"}}]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 12,
                "total_tokens": 62}}),
        ];
        let mut pieces = Vec::new();
        for chunk in &chunks {
            if let Some(piece) = assembled.add(chunk).unwrap() {
                pieces.push(piece);
            }
        }
        assert_eq!(pieces, ["Let me ", "check."]);
        let completion = assembled.finish().unwrap();
        assert_eq!(completion.content, "Let me check.");
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            completion.tool_calls,
            [ToolCall {
                id: "call_a".into(),
                name: "order_status".into(),
                arguments: "{\"order_id\":\"1043\"}".into(),
            }]
        );
        assert_eq!(completion.usage.map(|usage| usage.total()), Some(62));
    }

    #[test]
    fn a_whole_answer_with_an_object_for_arguments_still_reads() {
        let completion = parse_whole(
            r#"{"choices":[{"message":{"role":"assistant","content":null,
               "tool_calls":[{"id":"c1","type":"function","function":{"name":"handoff",
               "arguments":{"reason":"asked"}}}]},"finish_reason":"stop"}],
               "usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(completion.tool_calls[0].arguments, r#"{"reason":"asked"}"#);
        assert_eq!(completion.content, "");
    }

    #[test]
    fn a_name_repeated_in_every_delta_is_kept_once() {
        let mut assembled = Assembled::default();
        for arguments in ["{\"a\":", "1}"] {
            let chunk = json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c",
                "function": {"name": "handoff", "arguments": arguments}}]}}]});
            assembled.add(&chunk).unwrap();
        }
        let completion = assembled.finish().unwrap();
        assert_eq!(completion.tool_calls[0].name, "handoff");
        assert_eq!(completion.tool_calls[0].arguments, "{\"a\":1}");
    }
}
