//! Health, readiness, metrics and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard::assistant::{Assistant, AssistantError, Reply, Turn};
use switchboard::store::Store;

use crate::both_backends;
use crate::helpers::{Backend, Next, TestApp, Visitor, options_with};

async fn health_ready_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = reqwest::Client::new();
    let health = client.get(app.http_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(app.http_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let mut visitor = app.visitor().await;
    visitor.send_and_ack("m1", "hello").await;
    visitor.bot_reply().await;
    visitor.send_and_ack("m1", "hello").await;
    let expected = [
        "switchboard_inbound_messages_total{channel=\"web\"} 1",
        "switchboard_inbound_duplicates_total{channel=\"web\"} 1",
        "switchboard_outbound_messages_total{channel=\"web\"} 1",
        "switchboard_router_latency_seconds_count 1",
        "switchboard_webchat_sessions 1",
        "switchboard_outbox_depth 0",
    ];
    let mut body = String::new();
    for _ in 0..100 {
        let response = client.get(app.http_url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        body = response.text().await.unwrap();
        if expected.iter().all(|line| body.lines().any(|l| l == *line)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for line in expected {
        assert!(
            body.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{body}"
        );
    }
    assert!(body.contains("# TYPE switchboard_router_latency_seconds histogram"));
    assert!(body.contains("switchboard_router_latency_seconds_bucket{le=\"+Inf\"} 1"));

    // The demo page and the widget are served.
    let page = client
        .get(app.http_url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/widget.js"));
    let widget = client.get(app.http_url("/widget.js")).send().await.unwrap();
    assert_eq!(widget.status(), 200);
    assert!(
        widget.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(widget.text().await.unwrap().contains("channels/webchat/"));
}
both_backends!(health_and_metrics, health_ready_and_metrics);

/// Takes its time, so that turns are in flight when shutdown begins.
struct Slow;

#[async_trait]
impl Assistant for Slow {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(Reply {
            messages: vec![format!("slow: {}", turn.text)],
            ..Reply::default()
        })
    }
}

async fn shutdown_drains_in_flight_work(backend: Backend) {
    let TestApp { app, database } = TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(Arc::new(Slow)), Vec::new()),
    )
    .await;
    let url = format!("ws://{}/channels/webchat/web/ws", app.addr);
    let mut visitors = Vec::new();
    for v in 0..4 {
        let mut visitor = Visitor::connect(&url, None).await;
        for m in 0..3 {
            visitor
                .send_and_ack(&format!("m{m}"), &format!("v{v} m{m}"))
                .await;
        }
        visitors.push(visitor);
    }
    // Everything is acknowledged; most turns are still running or queued.
    app.shutdown().await;
    for (v, visitor) in visitors.iter_mut().enumerate() {
        let mut replies = Vec::new();
        let code = loop {
            match visitor.next().await {
                Next::Frame(frame) if frame["author"] == "bot" => {
                    replies.push(frame["text"].as_str().unwrap().to_string())
                }
                Next::Frame(_) => {}
                Next::Closed(code) => break code,
            }
        };
        let expected: Vec<String> = (0..3).map(|m| format!("slow: v{v} m{m}")).collect();
        assert_eq!(
            replies, expected,
            "replies flushed before the socket closed"
        );
        assert_eq!(code, Some(1001), "closed as going away");
    }
    let store = Store::connect(&database.url, 2).await.unwrap();
    assert!(
        store.unhandled_inbound().await.unwrap().is_empty(),
        "every turn finished"
    );
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        0,
        "every reply delivered"
    );
}
both_backends!(graceful_shutdown, shutdown_drains_in_flight_work);
