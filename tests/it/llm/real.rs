//! The client against a real implementation of the protocol: llama.cpp's OpenAI-compatible
//! server (PyPI llama-cpp-python) with SmolLM2-135M-Instruct, installed by
//! tests/peers/llm/install.sh (scripts/test runs it). The assertions are on the protocol
//! (streaming, stop reasons, usage, a forced tool call), never on what so small a model says.

use std::process::Stdio;
use std::sync::Mutex;

use serde_json::json;
use switchboard::llm::{
    ChatMessage, ChatRequest, FinishReason, LlmProvider, LlmSettings, OpenAiClient, TextSink,
    ToolChoice, ToolSpec,
};

use crate::helpers::{eventually, free_port};

/// Where tests/peers/llm/install.sh put the server and the model.
fn peer_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("SWITCHBOARD_TEST_LLM_PEER") {
        return dir.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchboard/target",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    std::path::Path::new(&target).join("tools/llm-peer")
}

struct LlamaServer {
    base_url: String,
    _process: tokio::process::Child,
}

impl LlamaServer {
    async fn start() -> LlamaServer {
        let dir = peer_dir();
        let python = dir.join("venv/bin/python");
        let model = dir.join("model.gguf");
        assert!(
            python.exists() && model.exists(),
            "the model server is not installed in {}: run tests/peers/llm/install.sh (scripts/test does), or set SWITCHBOARD_TEST_LLM_PEER",
            dir.display()
        );
        let port = free_port();
        let process = tokio::process::Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--n_ctx",
                "2048",
                "--chat_format",
                "chatml-function-calling",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start llama_cpp.server");
        let base_url = format!("http://127.0.0.1:{port}/v1");
        let client = reqwest::Client::new();
        eventually(90, "llama_cpp.server to answer", || {
            let request = client.get(format!("{base_url}/models")).send();
            async move {
                request
                    .await
                    .is_ok_and(|response| response.status().is_success())
            }
        })
        .await;
        LlamaServer {
            base_url,
            _process: process,
        }
    }
}

/// A question with one tool the model must call.
fn forced_call() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user("Where is my order 1043?")],
        tools: vec![ToolSpec {
            name: "order_status".into(),
            description: "Where one of the customer's orders is.".into(),
            parameters: json!({"type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"]}),
        }],
        tool_choice: Some(ToolChoice::Function("order_status".into())),
        max_tokens: Some(48),
    }
}

#[derive(Default)]
struct Pieces(Mutex<Vec<String>>);

impl TextSink for Pieces {
    fn text(&self, piece: &str) {
        self.0.lock().unwrap().push(piece.to_string());
    }
}

#[tokio::test]
async fn the_client_speaks_the_protocol_with_a_real_llama_cpp_server() {
    let server = LlamaServer::start().await;
    let client = OpenAiClient::new(LlmSettings {
        base_url: server.base_url.clone(),
        model: "smollm2".into(),
        first_token_timeout_ms: 30_000,
        request_timeout_ms: 60_000,
        ..LlmSettings::default()
    })
    .unwrap();
    let question = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a helpful shop assistant. Answer in one sentence."),
            ChatMessage::user("What colour is the sky on a clear day?"),
        ],
        max_tokens: Some(24),
        ..ChatRequest::default()
    };

    // Streamed: text arrives in several pieces, which put together are the completion's text;
    // the stream ends with a stop reason.
    let pieces = Pieces::default();
    let streamed = client.complete(&question, Some(&pieces)).await.unwrap();
    let pieces = pieces.0.into_inner().unwrap();
    assert!(pieces.len() > 1, "not streamed: {pieces:?}");
    assert_eq!(pieces.concat(), streamed.content);
    assert!(!streamed.content.trim().is_empty());
    assert!(
        matches!(
            streamed.finish_reason,
            FinishReason::Stop | FinishReason::Length
        ),
        "{:?}",
        streamed.finish_reason
    );

    // Whole: usage is counted, and a completion cut at max_tokens says so.
    let whole = client
        .complete(
            &ChatRequest {
                max_tokens: Some(3),
                messages: vec![ChatMessage::user(
                    "Write a long story about a lighthouse keeper.",
                )],
                ..ChatRequest::default()
            },
            None,
        )
        .await
        .unwrap();
    let usage = whole.usage.expect("the server reports usage");
    assert!(usage.prompt_tokens > 5, "{usage:?}");
    assert_eq!(usage.completion_tokens, 3, "{usage:?}");
    assert_eq!(whole.finish_reason, FinishReason::Length);

    // A forced tool call comes back as a call with JSON arguments (the values are whatever
    // so small a model writes).
    let call = client.complete(&forced_call(), None).await.unwrap();
    assert_eq!(call.finish_reason, FinishReason::ToolCalls, "{call:?}");
    assert_eq!(call.tool_calls.len(), 1, "{call:?}");
    assert_eq!(call.tool_calls[0].name, "order_status");
    assert!(!call.tool_calls[0].id.is_empty());

    // Streamed, the same forced call: llama.cpp repeats the whole name in every delta, and
    // the call still comes back with its name once.
    let streamed_call = client
        .complete(&forced_call(), Some(&Pieces::default()))
        .await
        .unwrap();
    assert_eq!(streamed_call.tool_calls.len(), 1, "{streamed_call:?}");
    assert_eq!(streamed_call.tool_calls[0].name, "order_status");

    // A path that is not the API is refused, not retried.
    let wrong = OpenAiClient::new(LlmSettings {
        base_url: format!("{}/nothing-here", server.base_url),
        model: "smollm2".into(),
        ..LlmSettings::default()
    })
    .unwrap();
    match wrong.complete(&question, None).await {
        Err(switchboard::llm::LlmError::Refused { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected a 404 refusal, got {other:?}"),
    }
}
