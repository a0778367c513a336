//! The contract suite must be able to fail: a connector over an in-memory platform passes it,
//! and deliberately broken copies of it (one that sends a repeated message twice, one that
//! drops a send retried after a failure) do not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use switchboard_connector::contract::{self, Harness};
use switchboard_connector::{
    Connector, ConnectorError, ConnectorHost, InboundEvent, OutboundMessage, PlatformIdentity,
    SendReceipt,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, PartialEq)]
enum Defect {
    None,
    SendsRepeatsTwice,
    DropsRetriedSend,
}

/// A platform kept in memory: what each thread's customer received, and failures to inject.
struct MemoryConnector {
    defect: Defect,
    delivered: Mutex<HashMap<String, Vec<String>>>,
    seen_ids: Mutex<Vec<String>>,
    failures_left: AtomicUsize,
    failed_before: Mutex<Vec<String>>,
}

#[async_trait]
impl Connector for MemoryConnector {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn name(&self) -> &str {
        "memory-1"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failed_before.lock().unwrap().push(message.id.clone());
            return Err(ConnectorError::retriable("platform busy"));
        }
        let retried = self.failed_before.lock().unwrap().contains(&message.id);
        if retried && self.defect == Defect::DropsRetriedSend {
            return Ok(SendReceipt::default());
        }
        let repeat = self.seen_ids.lock().unwrap().contains(&message.id);
        if repeat && self.defect != Defect::SendsRepeatsTwice {
            return Ok(SendReceipt::default());
        }
        self.seen_ids.lock().unwrap().push(message.id.clone());
        self.delivered
            .lock()
            .unwrap()
            .entry(message.thread.clone())
            .or_default()
            .push(message.text.clone());
        Ok(SendReceipt {
            platform_message_id: Some(format!("mem-{}", message.id)),
        })
    }
}

struct MemoryHarness {
    connector: Arc<MemoryConnector>,
    host: Mutex<Option<Arc<dyn ConnectorHost>>>,
}

impl MemoryHarness {
    fn new(defect: Defect) -> MemoryHarness {
        MemoryHarness {
            connector: Arc::new(MemoryConnector {
                defect,
                delivered: Mutex::default(),
                seen_ids: Mutex::default(),
                failures_left: AtomicUsize::new(0),
                failed_before: Mutex::default(),
            }),
            host: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    async fn start(&self, host: Arc<dyn ConnectorHost>, _shutdown: CancellationToken) {
        *self.host.lock().unwrap() = Some(host);
    }

    async fn customer_sends(&self, thread: &str, platform_id: &str, text: &str) {
        let host = self.host.lock().unwrap().clone().expect("started");
        let event = InboundEvent::text(
            host.channel(),
            platform_id,
            PlatformIdentity::new(thread, true),
            thread,
            text,
        );
        host.ingest(event).await.expect("ingest");
    }

    async fn fail_next_sends(&self, count: usize) -> bool {
        self.connector.failures_left.store(count, Ordering::SeqCst);
        true
    }

    async fn customer_received(&self, thread: &str) -> Vec<String> {
        self.connector
            .delivered
            .lock()
            .unwrap()
            .get(thread)
            .cloned()
            .unwrap_or_default()
    }

    async fn open_thread(&self, _host: Arc<dyn ConnectorHost>) -> String {
        format!("thread-{}", uuid_like())
    }
}

fn uuid_like() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst) as u64
}

#[tokio::test]
async fn a_correct_connector_passes() {
    contract::run_all(&MemoryHarness::new(Defect::None)).await;
}

#[tokio::test]
#[should_panic(expected = "delivered exactly once")]
async fn a_connector_that_sends_a_repeat_twice_fails() {
    contract::outbound_exactly_once(&MemoryHarness::new(Defect::SendsRepeatsTwice)).await;
}

#[tokio::test]
#[should_panic(expected = "a retried message is delivered")]
async fn a_connector_that_drops_a_retried_send_fails() {
    contract::outbound_retry(&MemoryHarness::new(Defect::DropsRetriedSend)).await;
}
