//! A recording proxy in front of a model server, for `eval llm` and `bench llm`: every request
//! is passed on unchanged and its answer streamed back as it comes, and each request body is
//! kept with the moment it arrived, so a run can check what the provider received (personal
//! data must never be in it) and when.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

#[derive(Clone)]
struct Upstream {
    base_url: String,
    http: reqwest::Client,
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
}

/// The proxy, listening on loopback until dropped.
pub struct RecordingProxy {
    base_url: String,
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    /// A proxy to the OpenAI-compatible API at `upstream` (such as `http://127.0.0.1:8000/v1`).
    pub async fn start(upstream: &str) -> anyhow::Result<RecordingProxy> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = Upstream {
            base_url: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            received: received.clone(),
        };
        let app = axum::Router::new()
            .route("/v1/{*path}", axum::routing::any(forward))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the recording proxy")?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "the recording proxy stopped");
            }
        });
        Ok(RecordingProxy {
            base_url,
            received,
            task,
        })
    }

    /// The proxy's base URL, to configure as the model server.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The request bodies received from the `first`-th on (JSON; anything else as a string).
    pub fn received_since(&self, first: usize) -> Vec<Value> {
        self.received
            .lock()
            .map(|r| r.iter().skip(first).map(|(_, body)| body.clone()).collect())
            .unwrap_or_default()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.received.lock().map(|r| r.len()).unwrap_or_default()
    }

    /// When the `index`-th request arrived, if it has.
    pub fn arrived_at(&self, index: usize) -> Option<Instant> {
        self.received
            .lock()
            .ok()
            .and_then(|r| r.get(index).map(|(arrived, _)| *arrived))
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(upstream): State<Upstream>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let recorded = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if let Ok(mut received) = upstream.received.lock() {
        received.push((arrived, recorded));
    }
    let mut request = upstream
        .http
        .post(format!("{}/{path}", upstream.base_url))
        .body(body);
    for name in ["content-type", "authorization", "accept"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::builder().status(status);
            for name in ["content-type", "retry-after"] {
                if let Some(value) = answer.headers().get(name) {
                    response = response.header(name, value.as_bytes());
                }
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}
