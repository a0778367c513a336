//! A scripted model server speaking the OpenAI chat-completions wire format (JSON answers and
//! server-sent events, tool calls, usage, error statuses), for the exact model turns a test
//! needs: each request takes the next scripted answer and is recorded as it arrived.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A whole JSON body.
    Json(Value),
    /// Server-sent events: each chunk after `gap`, then `[DONE]` unless `cut` (the stream
    /// ends without it, as when the server dies mid-answer).
    Stream {
        chunks: Vec<Value>,
        gap: Duration,
        cut: bool,
    },
    /// An error status with a body and, optionally, `Retry-After` seconds.
    Status {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    /// Say nothing for this long, then answer `then`.
    Stall(Duration, Box<Answer>),
    /// `status` with a body that never ends (64 KiB of `x` a millisecond, no line breaks).
    Endless { status: u16 },
}

impl Answer {
    /// A plain streamed answer: the text in the given pieces, then `stop` and usage.
    pub fn streamed_text(pieces: &[&str]) -> Answer {
        let mut chunks = vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})];
        chunks.extend(
            pieces
                .iter()
                .map(|piece| json!({"choices": [{"index": 0, "delta": {"content": piece}}]})),
        );
        chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
        chunks.push(json!({"choices": [], "usage": {
            "prompt_tokens": 40, "completion_tokens": pieces.len(), "total_tokens": 40 + pieces.len()
        }}));
        Answer::Stream {
            chunks,
            gap: Duration::from_millis(5),
            cut: false,
        }
    }

    /// A whole JSON answer with text.
    pub fn text(content: &str) -> Answer {
        Answer::Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
        }))
    }

    /// A streamed tool call, its arguments split in two pieces as real servers send them, then
    /// usage.
    pub fn streamed_call(id: &str, name: &str, arguments: &str) -> Answer {
        let (head, tail) = arguments.split_at(arguments.len() / 2);
        Answer::Stream {
            chunks: vec![
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                    {"index": 0, "id": id, "type": "function",
                     "function": {"name": name, "arguments": ""}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": head}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": tail}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                json!({"choices": [], "usage": {
                    "prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40
                }}),
            ],
            gap: Duration::from_millis(2),
            cut: false,
        }
    }

    pub fn status(status: u16, message: &str) -> Answer {
        Answer::Status {
            status,
            body: json!({"error": {"message": message, "type": "fake_error"}}),
            retry_after: None,
        }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    received: Vec<Received>,
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    pub async fn start(answers: Vec<Answer>) -> FakeLlm {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.into(),
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake model server");
        let addr = listener.local_addr().expect("fake address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake model server");
        });
        FakeLlm {
            addr,
            script,
            _server: server,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    /// Answers not yet asked for.
    pub fn left(&self) -> usize {
        self.script.lock().expect("script").answers.len()
    }
}

async fn completions(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": format!("not JSON: {error}")}})),
            )
                .into_response();
        }
    };
    let answer = {
        let mut script = script.lock().expect("script");
        script.received.push(Received {
            body,
            authorization: headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
        });
        script.answers.pop_front()
    };
    let Some(answer) = answer else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "the fake has no answer scripted"}})),
        )
            .into_response();
    };
    respond(answer).await
}

async fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Stall(wait, then) => {
            tokio::time::sleep(wait).await;
            Box::pin(respond(*then)).await
        }
        Answer::Json(body) => axum::Json(body).into_response(),
        Answer::Endless { status } => {
            let piece = axum::body::Bytes::from(vec![b'x'; 64 << 10]);
            let stream = futures::stream::repeat(piece).then(|piece| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, std::convert::Infallible>(piece)
            });
            Response::builder()
                .status(status)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .expect("endless response")
        }
        Answer::Status {
            status,
            body,
            retry_after,
        } => {
            let mut response = (
                StatusCode::from_u16(status).expect("status"),
                axum::Json(body),
            )
                .into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", after.parse().expect("header"));
            }
            response
        }
        Answer::Stream { chunks, gap, cut } => {
            let mut events: Vec<String> = chunks
                .into_iter()
                .map(|chunk| format!("data: {chunk}\n\n"))
                .collect();
            if !cut {
                events.push("data: [DONE]\n\n".into());
            }
            let stream = futures::stream::iter(events).then(move |event| async move {
                tokio::time::sleep(gap).await;
                Ok::<_, std::convert::Infallible>(event)
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .expect("stream response")
        }
    }
}
