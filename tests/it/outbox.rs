//! The outbox: a failing send is retried with backoff until it goes through, once; a
//! permanent failure is dead-lettered, visible, and does not block other conversations.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use switchboard::console::Role;
use switchboard_connector::{
    Attachment, Connector, ConnectorError, InboundEvent, OutboundMessage, PlatformIdentity,
    SendReceipt,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, eventually, options_with};

/// A channel whose platform refuses the first `fail_first` sends of each message; messages to
/// the thread `broken` always fail permanently.
struct Flaky {
    fail_first: u32,
    attempts: Mutex<Vec<(String, std::time::Instant)>>,
    delivered: Mutex<Vec<OutboundMessage>>,
}

#[async_trait]
impl Connector for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }

    fn name(&self) -> &str {
        "flaky"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        if message.thread == "broken" {
            return Err(ConnectorError::Permanent("chat not found".into()));
        }
        let tries = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push((message.id.clone(), std::time::Instant::now()));
            attempts.iter().filter(|(id, _)| id == &message.id).count() as u32
        };
        if tries <= self.fail_first {
            return Err(ConnectorError::retriable("platform returned 502"));
        }
        self.delivered.lock().unwrap().push(message.clone());
        Ok(SendReceipt {
            platform_message_id: Some(format!("p-{}", message.id)),
        })
    }
}

fn event(thread: &str, platform_id: &str, text: &str) -> InboundEvent {
    let mut sender = PlatformIdentity::new(format!("user-{thread}"), true);
    sender.display_name = Some("Test Customer".into());
    InboundEvent::text("flaky", platform_id, sender, thread, text)
}

async fn failing_send_is_retried(backend: Backend) {
    let flaky = Arc::new(Flaky {
        fail_first: 3,
        attempts: Mutex::default(),
        delivered: Mutex::default(),
    });
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.outbox.max_attempts = 5,
        options_with(None, vec![flaky.clone()]),
    )
    .await;
    let receipt = app
        .app
        .router
        .ingest(event("t1", "p1", "hello"))
        .await
        .unwrap();
    assert!(!receipt.duplicate);
    // The broken thread dead-letters without holding up t1. Its customer sent a file too.
    let mut with_file = event("broken", "p2", "hello");
    with_file.attachments = vec![Attachment {
        name: "invoice.pdf".into(),
        mime_type: "application/pdf".into(),
        size_bytes: Some(1234),
        platform_file_id: "part-2".into(),
    }];
    app.app.router.ingest(with_file).await.unwrap();

    let delivered = flaky.clone();
    eventually(20, "the reply to get through", || {
        let delivered = delivered.clone();
        async move { !delivered.delivered.lock().unwrap().is_empty() }
    })
    .await;
    let reply = flaky.delivered.lock().unwrap()[0].clone();
    assert_eq!(reply.text, "echo: hello");
    assert_eq!(reply.thread, "t1");
    let attempts: Vec<std::time::Instant> = flaky
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| *id == reply.id)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(attempts.len(), 4, "three failures, then success");
    // Backoff: each wait is at least half the (growing) nominal delay of 20, 40, 80 ms.
    for (i, pair) in attempts.windows(2).enumerate() {
        let waited = pair[1].duration_since(pair[0]);
        assert!(
            waited >= Duration::from_millis(10 << i),
            "attempt {i} waited {waited:?}"
        );
    }

    let store = app.store().clone();
    let id = reply.id.clone();
    eventually(10, "the outbox row to be marked sent", || {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .outbox_state(&id)
                .await
                .unwrap()
                .first()
                .map(|s| s.0 == "sent")
                .unwrap_or(false)
        }
    })
    .await;
    let state = app.store().outbox_state(&reply.id).await.unwrap();
    assert_eq!(
        state,
        vec![(
            "sent".to_string(),
            4,
            Some("temporary failure: platform returned 502".to_string())
        )]
    );

    // The permanent failure is dead-lettered, with its reason.
    let broken = app.store().history("flaky", "broken", 10).await.unwrap();
    let broken_reply = broken
        .iter()
        .find(|m| m.text == "echo: hello")
        .unwrap()
        .id
        .clone();
    let store = app.store().clone();
    eventually(10, "the broken reply to be dead-lettered", || {
        let store = store.clone();
        let id = broken_reply.clone();
        async move {
            store
                .outbox_state(&id)
                .await
                .unwrap()
                .first()
                .map(|s| s.0 == "dead")
                .unwrap_or(false)
        }
    })
    .await;
    let state = app
        .store()
        .outbox_state(&broken.iter().find(|m| m.text == "echo: hello").unwrap().id)
        .await
        .unwrap();
    assert_eq!(state[0].1, 1, "a permanent failure is not retried");
    assert_eq!(
        state[0].2.as_deref(),
        Some("permanent failure: chat not found")
    );
    assert_eq!(app.store().outbox_depth().await.unwrap(), 0);

    // The console shows the agent both: the customer's file, and the reply that never arrived.
    crate::console::person(&app, "admin@shop.test", Role::Admin, &[], &[]).await;
    let admin = crate::console::Desk::sign_in(&app, "admin@shop.test").await;
    let (_, view) = admin
        .get(&format!(
            "/console/api/conversations/{}",
            broken[0].conversation_id
        ))
        .await;
    let history = view["history"].as_array().expect("a history");
    let asked = history
        .iter()
        .find(|m| m["author"] == "customer")
        .expect("the customer's message");
    assert_eq!(asked["attachments"][0]["name"], "invoice.pdf", "{view}");
    assert_eq!(
        asked["attachments"][0]["url"],
        format!(
            "/api/v1/messages/{}/attachments/0",
            asked["id"].as_str().unwrap()
        )
    );
    assert_eq!(asked["failed"], Value::Null);
    let answered = history
        .iter()
        .find(|m| m["text"] == "echo: hello")
        .expect("the reply");
    assert_eq!(
        answered["failed"], "permanent failure: chat not found",
        "{view}"
    );
    // Redelivering the platform's message stores nothing and sends nothing more.
    let again = app
        .app
        .router
        .ingest(event("t1", "p1", "hello"))
        .await
        .unwrap();
    assert!(again.duplicate);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        flaky.delivered.lock().unwrap().len(),
        1,
        "sent exactly once"
    );
}
both_backends!(outbox_retry_after_a_failing_send, failing_send_is_retried);

async fn too_many_failures_dead_letter(backend: Backend) {
    let flaky = Arc::new(Flaky {
        fail_first: 100,
        attempts: Mutex::default(),
        delivered: Mutex::default(),
    });
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.outbox.max_attempts = 3,
        options_with(None, vec![flaky.clone()]),
    )
    .await;
    app.app
        .router
        .ingest(event("t9", "p9", "hi"))
        .await
        .unwrap();
    let history = {
        let store = app.store().clone();
        eventually(10, "the reply to be stored", || {
            let store = store.clone();
            async move { store.history("flaky", "t9", 10).await.unwrap().len() == 2 }
        })
        .await;
        app.store().history("flaky", "t9", 10).await.unwrap()
    };
    let reply_id = history[1].id.clone();
    let store = app.store().clone();
    eventually(20, "the reply to be dead-lettered after 3 attempts", || {
        let store = store.clone();
        let id = reply_id.clone();
        async move {
            store
                .outbox_state(&id)
                .await
                .unwrap()
                .first()
                .map(|s| s.0 == "dead")
                .unwrap_or(false)
        }
    })
    .await;
    let state = app.store().outbox_state(&reply_id).await.unwrap();
    assert_eq!(state[0].1, 3);
    assert!(flaky.delivered.lock().unwrap().is_empty());
}
both_backends!(
    outbox_dead_letter_after_max_attempts,
    too_many_failures_dead_letter
);

/// A channel whose platform refuses the first three sends of replies to "first".
#[derive(Default)]
struct Stubborn {
    refused: Mutex<u32>,
    delivered: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Connector for Stubborn {
    fn kind(&self) -> &'static str {
        "flaky"
    }

    fn name(&self) -> &str {
        "flaky"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        if message.text.ends_with("first") {
            let mut refused = self.refused.lock().unwrap();
            if *refused < 3 {
                *refused += 1;
                return Err(ConnectorError::retriable("platform returned 503"));
            }
        }
        self.delivered
            .lock()
            .unwrap()
            .push((message.thread.clone(), message.text.clone()));
        Ok(SendReceipt {
            platform_message_id: Some(format!("p-{}", message.id)),
        })
    }
}

async fn retry_holds_back_newer_replies(backend: Backend) {
    let stubborn = Arc::new(Stubborn::default());
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.outbox.max_attempts = 10,
        options_with(None, vec![stubborn.clone()]),
    )
    .await;
    let router = &app.app.router;
    router.ingest(event("t1", "q1", "first")).await.unwrap();
    router.ingest(event("t1", "q2", "second")).await.unwrap();
    router.ingest(event("t2", "q3", "elsewhere")).await.unwrap();
    let delivered = stubborn.clone();
    eventually(20, "all three replies", || {
        let delivered = delivered.clone();
        async move { delivered.delivered.lock().unwrap().len() == 3 }
    })
    .await;
    let delivered = stubborn.delivered.lock().unwrap().clone();
    let t1: Vec<&str> = delivered
        .iter()
        .filter(|(thread, _)| thread == "t1")
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(t1, ["echo: first", "echo: second"], "{delivered:?}");
    // Another conversation is not held back by t1's retries.
    assert_eq!(delivered[0].1, "echo: elsewhere", "{delivered:?}");
}
both_backends!(outbox_retry_keeps_order, retry_holds_back_newer_replies);
