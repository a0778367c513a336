//! The outbox worker: delivers what the outbox table holds, once, in order per conversation.
//!
//! Rows committed by this instance are handed over at once through [`Delivery::submit`]
//! (they were written already reserved for this instance, so no other instance takes them).
//! A poll finds due retries and rows whose reservation lapsed (a crashed instance's). Outcomes
//! are written back in batches. A retriable failure is retried with exponential backoff and
//! jitter (the platform's retry-after wins); a permanent one, or too many attempts, dead-letters
//! the row, which stays visible. While a row waits for its retry, newer rows of its lane wait
//! behind it (deferred to its retry time), so a conversation's messages never overtake each
//! other.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use switchboard_connector::ConnectorError;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channels::Channels;
use crate::config::OutboxSettings;
use crate::metrics::Metrics;
use crate::router::lanes::Lanes;
use crate::store::{DeliveryOutcome, OutboxRow, Store, now_ms};

/// How long the outcome writer gathers outcomes before writing them in one go.
const OUTCOME_GATHER: Duration = Duration::from_millis(10);

/// Delivers outbox rows of a kind other than `message` (the workflow's webhooks).
#[async_trait::async_trait]
pub trait RowSender: Send + Sync {
    async fn send(&self, row: &OutboxRow) -> Result<(), ConnectorError>;
}

pub struct Delivery {
    store: Store,
    senders: std::sync::RwLock<Vec<(&'static str, Arc<dyn RowSender>)>>,
    channels: Arc<Channels>,
    metrics: Arc<Metrics>,
    settings: OutboxSettings,
    instance: String,
    lanes: std::sync::OnceLock<Arc<Lanes<OutboxRow>>>,
    permits: Arc<Semaphore>,
    /// Lanes held by a row waiting for its retry: lane -> (that row's id, its retry time).
    held: dashmap::DashMap<String, (i64, i64)>,
    outcomes: mpsc::UnboundedSender<(i64, DeliveryOutcome)>,
    outcomes_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<(i64, DeliveryOutcome)>>>,
}

impl Delivery {
    pub fn new(
        store: Store,
        channels: Arc<Channels>,
        metrics: Arc<Metrics>,
        settings: OutboxSettings,
    ) -> Arc<Delivery> {
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let delivery = Arc::new(Delivery {
            store,
            senders: std::sync::RwLock::default(),
            channels,
            metrics,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            instance: uuid::Uuid::new_v4().to_string(),
            lanes: std::sync::OnceLock::new(),
            held: dashmap::DashMap::new(),
            outcomes,
            outcomes_rx: std::sync::Mutex::new(Some(outcomes_rx)),
        });
        let weak = Arc::downgrade(&delivery);
        let lanes = Lanes::new(Arc::new(move |row: OutboxRow| {
            let delivery = weak.upgrade();
            Box::pin(async move {
                if let Some(delivery) = delivery {
                    delivery.deliver(row).await;
                }
            })
        }));
        let _ = delivery.lanes.set(lanes);
        delivery
    }

    /// Deliver rows of `kind` with `sender` (replacing an earlier sender of that kind).
    pub fn register(&self, kind: &'static str, sender: Arc<dyn RowSender>) {
        let mut senders = self.senders.write().expect("senders lock");
        senders.retain(|(known, _)| *known != kind);
        senders.push((kind, sender));
    }

    fn sender(&self, kind: &str) -> Option<Arc<dyn RowSender>> {
        let senders = self.senders.read().expect("senders lock");
        senders
            .iter()
            .find(|(known, _)| *known == kind)
            .map(|(_, sender)| sender.clone())
    }

    /// This process's name in outbox reservations.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.lease_secs)
    }

    fn lanes(&self) -> &Arc<Lanes<OutboxRow>> {
        self.lanes.get().expect("lanes are set in Delivery::new")
    }

    /// Deliver rows this instance just committed (and therefore holds).
    pub fn submit(&self, rows: Vec<OutboxRow>) {
        for row in rows {
            let lane = row.lane.clone();
            self.lanes().push(&lane, row);
        }
    }

    async fn deliver(&self, row: OutboxRow) {
        if let Some((held_by, until_ms)) = self.held.get(&row.lane).map(|hold| *hold)
            && row.id > held_by
        {
            let _ = self
                .outcomes
                .send((row.id, DeliveryOutcome::Deferred { until_ms }));
            return;
        }
        let _permit = self.permits.acquire().await.expect("semaphore stays open");
        let channel = row.channel.clone().unwrap_or_default();
        let outcome = match self.attempt(&row).await {
            Ok(()) => {
                self.metrics.outbound(&channel);
                DeliveryOutcome::Sent
            }
            Err(error) => {
                self.metrics.outbound_failure(&channel);
                let attempts = row.attempts + 1;
                let retriable = error.is_retriable();
                if retriable && attempts < i64::from(self.settings.max_attempts) {
                    let wait = self.backoff(attempts, &error);
                    tracing::warn!(outbox = row.id, channel, attempts, error = %error, retry_in_ms = wait.as_millis() as u64, "delivery failed, will retry");
                    DeliveryOutcome::Retry {
                        at_ms: now_ms() + wait.as_millis() as i64,
                        error: error.to_string(),
                    }
                } else {
                    tracing::error!(outbox = row.id, channel, attempts, error = %error, "delivery failed for good, dead-lettered");
                    self.metrics.outbound_dead(&channel);
                    DeliveryOutcome::Dead {
                        error: error.to_string(),
                    }
                }
            }
        };
        match &outcome {
            DeliveryOutcome::Retry { at_ms, .. } => {
                self.held.insert(row.lane.clone(), (row.id, *at_ms));
            }
            _ => {
                self.held
                    .remove_if(&row.lane, |_, (held_by, _)| *held_by == row.id);
            }
        }
        let _ = self.outcomes.send((row.id, outcome));
    }

    async fn attempt(&self, row: &OutboxRow) -> Result<(), ConnectorError> {
        match row.kind.as_str() {
            "message" => {
                let message = row.message.as_ref().ok_or_else(|| {
                    ConnectorError::Permanent("the message of this outbox row is gone".into())
                })?;
                let connector = self
                    .channels
                    .get(&message.channel)
                    .map_err(|error| ConnectorError::Permanent(error.to_string()))?;
                connector.send(message).await.map(|_receipt| ())
            }
            other => match self.sender(other) {
                Some(sender) => sender.send(row).await,
                None => Err(ConnectorError::Permanent(format!(
                    "unknown outbox kind {other:?}"
                ))),
            },
        }
    }

    fn backoff(&self, attempts: i64, error: &ConnectorError) -> Duration {
        if let ConnectorError::Retriable {
            retry_after: Some(after),
            ..
        } = error
        {
            return *after;
        }
        let exponent = (attempts - 1).clamp(0, 20) as u32;
        let base = self.settings.backoff_base_ms.saturating_mul(1 << exponent);
        let capped = base.min(self.settings.backoff_max_ms);
        // Full jitter on the upper half keeps retries of many rows from moving in lockstep.
        let jittered = rand::rng().random_range(capped / 2..=capped.max(1));
        Duration::from_millis(jittered)
    }

    /// Run until `shutdown`: poll for due rows, write outcomes back. On shutdown, finish what
    /// is in flight and record its outcomes before returning.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut outcomes_rx = self
            .outcomes_rx
            .lock()
            .expect("outcomes lock")
            .take()
            .expect("Delivery::run is called once");
        let writer_stop = CancellationToken::new();
        let writer = {
            let store = self.store.clone();
            let stop = writer_stop.clone();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(1024);
                loop {
                    let first = tokio::select! {
                        first = outcomes_rx.recv() => first,
                        _ = stop.cancelled() => outcomes_rx.try_recv().ok(),
                    };
                    let Some(first) = first else { return };
                    batch.push(first);
                    // Outcomes only need to be durable eventually (an unrecorded one means a
                    // resend after a crash): gather a few milliseconds' worth per write.
                    if !stop.is_cancelled() {
                        tokio::time::sleep(OUTCOME_GATHER).await;
                    }
                    while batch.len() < 1024 {
                        match outcomes_rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    write_outcomes(&store, &batch, &stop).await;
                    batch.clear();
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.poll().await,
            }
        }
        // Every delivery sends its outcome before it returns, so once the lanes are drained
        // the writer only has to empty its queue.
        self.lanes().drain().await;
        writer_stop.cancel();
        let _ = writer.await;
    }

    async fn poll(&self) {
        match self
            .store
            .claim_outbox(&self.instance, self.lease(), 256)
            .await
        {
            Ok(rows) => {
                if !rows.is_empty() {
                    tracing::debug!(rows = rows.len(), "outbox rows due");
                }
                self.submit(rows);
            }
            Err(error) => tracing::warn!(error = %error, "outbox poll failed"),
        }
    }
}

async fn write_outcomes(store: &Store, batch: &[(i64, DeliveryOutcome)], stop: &CancellationToken) {
    let mut delay = Duration::from_millis(50);
    for _ in 0..20 {
        match store.finish_outbox(batch).await {
            Ok(()) => return,
            Err(error) => {
                // An outcome not recorded means a resend later, never a loss.
                tracing::warn!(error = %error, rows = batch.len(), "could not record delivery outcomes, retrying");
                if stop.is_cancelled() && delay >= Duration::from_secs(1) {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
