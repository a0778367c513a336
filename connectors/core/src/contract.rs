//! The contract suite every connector passes.
//!
//! A connector's own tests implement [`Harness`] (how to play the platform's side: a customer
//! sending, the platform failing) and call [`run_all`]. The suite checks what the app relies on:
//! a redelivered platform message keeps its platform id (so the app's dedupe catches it),
//! events of one thread reach the host in the platform's order, a platform failure surfaces as
//! an error the outbox can classify, and `run` returns promptly on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    AuthorKind, ChannelMessage, Connector, ConnectorHost, HostError, InboundEvent, IngestReceipt,
    OutboundMessage, TypingSignal,
};

/// A [`ConnectorHost`] that stores events in memory and dedupes them like the app does.
#[derive(Default)]
pub struct RecordingHost {
    inner: Mutex<RecordingState>,
}

#[derive(Default)]
struct RecordingState {
    events: Vec<InboundEvent>,
    receipts: HashMap<(String, String), IngestReceipt>,
    typing: Vec<TypingSignal>,
}

impl RecordingHost {
    pub fn new() -> Arc<RecordingHost> {
        Arc::new(RecordingHost::default())
    }

    /// Every event that was stored (duplicates excluded), in arrival order.
    pub fn events(&self) -> Vec<InboundEvent> {
        self.inner
            .lock()
            .expect("recording host lock")
            .events
            .clone()
    }

    /// Presence signals the connector passed on, in order.
    pub fn typing_signals(&self) -> Vec<TypingSignal> {
        self.inner
            .lock()
            .expect("recording host lock")
            .typing
            .clone()
    }
}

#[async_trait]
impl ConnectorHost for RecordingHost {
    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError> {
        let mut state = self.inner.lock().expect("recording host lock");
        let key = (event.channel.clone(), event.platform_message_id.clone());
        if let Some(receipt) = state.receipts.get(&key) {
            return Ok(IngestReceipt {
                duplicate: true,
                ..receipt.clone()
            });
        }
        let seq = state.events.len() as i64 + 1;
        let receipt = IngestReceipt {
            message_id: format!("m{seq}"),
            conversation_id: format!("c-{}", event.thread),
            seq,
            duplicate: false,
        };
        state.receipts.insert(key, receipt.clone());
        state.events.push(event);
        Ok(receipt)
    }

    async fn history(
        &self,
        channel: &str,
        thread: &str,
        limit: u32,
    ) -> Result<Vec<ChannelMessage>, HostError> {
        let state = self.inner.lock().expect("recording host lock");
        let messages: Vec<ChannelMessage> = state
            .events
            .iter()
            .filter(|event| event.channel == channel && event.thread == thread)
            .map(|event| {
                let receipt =
                    &state.receipts[&(event.channel.clone(), event.platform_message_id.clone())];
                ChannelMessage {
                    id: receipt.message_id.clone(),
                    conversation_id: receipt.conversation_id.clone(),
                    seq: receipt.seq,
                    author: AuthorKind::Customer,
                    text: event.text.clone(),
                    attachments: event.attachments.clone(),
                    platform_message_id: Some(event.platform_message_id.clone()),
                    created_at_ms: 0,
                }
            })
            .collect();
        let skip = messages.len().saturating_sub(limit as usize);
        Ok(messages.into_iter().skip(skip).collect())
    }

    fn typing(&self, signal: TypingSignal) {
        self.inner
            .lock()
            .expect("recording host lock")
            .typing
            .push(signal);
    }
}

/// How a connector's test plays the platform's side.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The connector under test, wired to a platform the harness controls.
    fn connector(&self) -> Arc<dyn Connector>;

    /// Start whatever inbound plumbing the connector needs against `host` (run loops, routes).
    async fn start(&self, host: Arc<dyn ConnectorHost>, shutdown: CancellationToken);

    /// Make a customer in `thread` send `text`, with the platform message id `platform_id`;
    /// a second call with the same id is a platform redelivery. Returns once the platform has
    /// handed the message over and the connector acknowledged it.
    async fn customer_sends(&self, thread: &str, platform_id: &str, text: &str);

    /// Make the platform refuse the next `count` deliveries with a temporary error.
    ///
    /// Returns false when the channel has no platform that can fail (web chat keeps a reply to
    /// an offline visitor in history and delivers it on resume, so its `send` never fails for
    /// lack of a recipient); the suite then checks idempotent delivery only.
    async fn fail_next_sends(&self, count: usize) -> bool;

    /// The texts the customer in `thread` has received from the app, in order, once each.
    async fn customer_received(&self, thread: &str) -> Vec<String>;

    /// A thread that the connector can deliver to (a customer has opened it).
    async fn open_thread(&self, host: Arc<dyn ConnectorHost>) -> String;
}

fn outbound(channel: &str, thread: &str, id: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        id: id.to_string(),
        conversation_id: format!("c-{thread}"),
        channel: channel.to_string(),
        thread: thread.to_string(),
        seq: 1,
        author: AuthorKind::Bot,
        text: text.to_string(),
        attachments: Vec::new(),
        in_reply_to: None,
        created_at_ms: 0,
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("contract: timed out waiting for {what}");
}

/// A redelivered platform message reaches the host with the same platform id, so it is stored once.
pub async fn inbound_dedupe(harness: &dyn Harness) {
    let host = RecordingHost::new();
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let thread = harness.open_thread(host.clone()).await;
    harness.customer_sends(&thread, "dup-1", "first").await;
    harness.customer_sends(&thread, "dup-1", "first").await;
    harness.customer_sends(&thread, "dup-2", "second").await;
    wait_for("two stored events", || host.events().len() >= 2).await;
    let texts: Vec<String> = host.events().into_iter().map(|e| e.text).collect();
    assert_eq!(
        texts,
        ["first", "second"],
        "a redelivery must be deduplicated"
    );
    shutdown.cancel();
}

/// Events of one thread reach the host in the order the customer sent them.
pub async fn inbound_ordering(harness: &dyn Harness) {
    let host = RecordingHost::new();
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let thread = harness.open_thread(host.clone()).await;
    let expected: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    for (i, text) in expected.iter().enumerate() {
        harness
            .customer_sends(&thread, &format!("order-{i}"), text)
            .await;
    }
    wait_for("twenty events", || host.events().len() >= expected.len()).await;
    let texts: Vec<String> = host.events().into_iter().map(|e| e.text).collect();
    assert_eq!(
        texts, expected,
        "events of one thread must keep their order"
    );
    shutdown.cancel();
}

/// A failing platform surfaces a retriable error; the same message sent again is delivered once.
///
/// A channel without a platform that can fail (see [`Harness::fail_next_sends`]) skips the
/// failure and is only checked for idempotent delivery: the same message sent twice reaches the
/// customer once.
pub async fn outbound_retry(harness: &dyn Harness) {
    let host = RecordingHost::new();
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let thread = harness.open_thread(host.clone()).await;
    let connector = harness.connector();
    let can_fail = harness.fail_next_sends(1).await;
    let message = outbound(connector.kind(), &thread, "out-1", "hello customer");
    if can_fail {
        let first = connector.send(&message).await;
        assert!(
            matches!(&first, Err(error) if error.is_retriable()),
            "a temporary platform failure must be retriable, got {first:?}"
        );
    } else {
        println!(
            "contract: outbound_retry: {} has no failing platform; checking idempotent delivery only",
            connector.kind()
        );
    }
    connector.send(&message).await.expect("delivery succeeds");
    connector
        .send(&message)
        .await
        .expect("a repeat after success is accepted");
    let received = harness.customer_received(&thread).await;
    assert_eq!(received, ["hello customer"], "delivered exactly once");
    shutdown.cancel();
}

/// `run` returns soon after shutdown is requested.
pub async fn shutdown_promptly(harness: &dyn Harness) {
    let host = RecordingHost::new();
    let shutdown = CancellationToken::new();
    let connector = harness.connector();
    let run = {
        let shutdown = shutdown.clone();
        let host: Arc<dyn ConnectorHost> = host.clone();
        tokio::spawn(async move { connector.run(host, shutdown).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run must return within 5 s of shutdown")
        .expect("run must not panic");
}

/// The whole suite, in order.
pub async fn run_all(harness: &dyn Harness) {
    inbound_dedupe(harness).await;
    inbound_ordering(harness).await;
    outbound_retry(harness).await;
    shutdown_promptly(harness).await;
}
