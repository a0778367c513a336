//! The contract suite every connector passes.
//!
//! A connector's own tests implement [`Harness`] (how to play the platform's side: a customer
//! sending, the platform failing) and call [`run_all`]. The suite checks what the app relies on:
//! a redelivered platform message keeps its platform id (so the app's dedupe catches it),
//! events of one thread reach the host in the platform's order, a platform failure surfaces as
//! an error the outbox can classify, a message sent again (a retry after a crash) reaches the
//! customer once, a retried send after a failure is delivered, and `run` returns promptly on
//! shutdown. What the customer received is counted raw, as the platform delivered it: the
//! suite never deduplicates on the connector's behalf.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    AuthorKind, ChannelMessage, Connector, ConnectorHost, Cursor, CursorError, EventWatch,
    HostError, InboundEvent, IngestReceipt, MessageRef, OutboundMessage, TypingSignal,
};

/// A [`ConnectorHost`] that stores events in memory and dedupes them like the app does.
pub struct RecordingHost {
    channel: String,
    inner: Mutex<RecordingState>,
    live: tokio::sync::broadcast::Sender<Arc<crate::LiveEvent>>,
}

#[derive(Default)]
struct RecordingState {
    events: Vec<InboundEvent>,
    receipts: HashMap<(String, String), IngestReceipt>,
    typing: Vec<TypingSignal>,
    cursors: HashMap<String, Cursor>,
}

impl RecordingHost {
    /// A host for the instance named `channel`.
    pub fn new(channel: &str) -> Arc<RecordingHost> {
        Arc::new(RecordingHost {
            channel: channel.to_string(),
            inner: Mutex::default(),
            live: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// Every event that was stored (duplicates excluded), in arrival order.
    pub fn events(&self) -> Vec<InboundEvent> {
        self.inner
            .lock()
            .expect("recording host lock")
            .events
            .clone()
    }

    /// Publish `event` to every live watch of this host, as the app does after a write.
    pub fn publish(&self, event: crate::LiveEvent) {
        let _ = self.live.send(Arc::new(event));
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
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError> {
        if event.channel != self.channel {
            return Err(HostError::Rejected(format!(
                "event of channel {:?} given to the host of {:?}",
                event.channel, self.channel
            )));
        }
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

    async fn history(&self, thread: &str, limit: u32) -> Result<Vec<ChannelMessage>, HostError> {
        let state = self.inner.lock().expect("recording host lock");
        let messages: Vec<ChannelMessage> = state
            .events
            .iter()
            .filter(|event| event.thread == thread)
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
                    choices: Vec::new(),
                    platform_message_id: Some(event.platform_message_id.clone()),
                    created_at_ms: 0,
                }
            })
            .collect();
        let skip = messages.len().saturating_sub(limit as usize);
        Ok(messages.into_iter().skip(skip).collect())
    }

    async fn find_message(
        &self,
        platform_message_id: &str,
    ) -> Result<Option<MessageRef>, HostError> {
        let state = self.inner.lock().expect("recording host lock");
        let key = (self.channel.clone(), platform_message_id.to_string());
        Ok(state.receipts.get(&key).map(|receipt| MessageRef {
            message_id: receipt.message_id.clone(),
            conversation_id: receipt.conversation_id.clone(),
            thread: receipt.conversation_id.trim_start_matches("c-").to_string(),
            author: AuthorKind::Customer,
            open: true,
        }))
    }

    async fn cursor(&self, key: &str) -> Result<Option<Cursor>, HostError> {
        let state = self.inner.lock().expect("recording host lock");
        Ok(state.cursors.get(key).cloned())
    }

    async fn set_cursor(
        &self,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> Result<Cursor, CursorError> {
        let mut state = self.inner.lock().expect("recording host lock");
        let current = state.cursors.get(key).map(|cursor| cursor.version);
        if current != expected {
            return Err(CursorError::Conflict {
                key: key.to_string(),
                current,
            });
        }
        let cursor = Cursor {
            value: value.to_string(),
            version: current.unwrap_or(0) + 1,
        };
        state.cursors.insert(key.to_string(), cursor.clone());
        Ok(cursor)
    }

    fn watch(&self, thread: &str) -> EventWatch {
        let _ = thread;
        self.live.subscribe()
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
    /// Returns false only for a channel with no platform between the connector and the
    /// customer that could refuse (web chat: a reply to a visitor with no open tab waits in
    /// history), which is then checked for exactly-once delivery of repeated sends only.
    async fn fail_next_sends(&self, count: usize) -> bool;

    /// Every message the customer in `thread` has received from the app, in order, counted
    /// as the platform delivered them: a message delivered twice appears twice.
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
        choices: Vec::new(),
        in_reply_to: None,
        references: Vec::new(),
        extensions: crate::Extensions::default(),
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
    let host = RecordingHost::new(harness.connector().name());
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
    let host = RecordingHost::new(harness.connector().name());
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

/// The same message sent again (the outbox retries after a crash that lost the first
/// outcome) reaches the customer once, and a second message after it still arrives.
pub async fn outbound_exactly_once(harness: &dyn Harness) {
    let host = RecordingHost::new(harness.connector().name());
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let thread = harness.open_thread(host.clone()).await;
    let connector = harness.connector();
    let first = outbound(connector.name(), &thread, "once-1", "hello customer");
    connector.send(&first).await.expect("delivery succeeds");
    connector
        .send(&first)
        .await
        .expect("a repeat after success is accepted");
    let second = outbound(connector.name(), &thread, "once-2", "anything else?");
    connector.send(&second).await.expect("delivery succeeds");
    wait_until_received(harness, &thread, 2).await;
    let received = harness.customer_received(&thread).await;
    assert_eq!(
        received,
        ["hello customer", "anything else?"],
        "each message delivered exactly once, in order"
    );
    shutdown.cancel();
}

/// A failing platform surfaces a retriable error; the retried send is then delivered, once.
pub async fn outbound_retry(harness: &dyn Harness) {
    let host = RecordingHost::new(harness.connector().name());
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let thread = harness.open_thread(host.clone()).await;
    let connector = harness.connector();
    if !harness.fail_next_sends(2).await {
        println!(
            "contract: outbound_retry: {} has no platform that can refuse a delivery; \
             outbound_exactly_once covers its repeated sends",
            connector.kind()
        );
        return;
    }
    let message = outbound(
        connector.name(),
        &thread,
        "retry-1",
        "your refund is approved",
    );
    for attempt in 1..=2 {
        let result = connector.send(&message).await;
        assert!(
            matches!(&result, Err(error) if error.is_retriable()),
            "attempt {attempt}: a temporary platform failure must be retriable, got {result:?}"
        );
    }
    connector.send(&message).await.expect("the retry succeeds");
    wait_until_received(harness, &thread, 1).await;
    let received = harness.customer_received(&thread).await;
    assert_eq!(
        received,
        ["your refund is approved"],
        "a retried message is delivered, exactly once"
    );
    shutdown.cancel();
}

/// Wait (bounded) until the customer has at least `count` messages, then a moment more so
/// that a duplicate in flight shows up too.
async fn wait_until_received(harness: &dyn Harness, thread: &str, count: usize) {
    for _ in 0..200 {
        if harness.customer_received(thread).await.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// `run` returns soon after shutdown is requested.
pub async fn shutdown_promptly(harness: &dyn Harness) {
    let host = RecordingHost::new(harness.connector().name());
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
        .expect("run must not panic")
        .expect("run must end without an error on shutdown");
}

/// The whole suite, in order.
pub async fn run_all(harness: &dyn Harness) {
    inbound_dedupe(harness).await;
    inbound_ordering(harness).await;
    outbound_exactly_once(harness).await;
    outbound_retry(harness).await;
    shutdown_promptly(harness).await;
}
