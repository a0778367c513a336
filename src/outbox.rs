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
//!
//! Each channel instance has its own rate and concurrency limits, and a platform's
//! `retry_after` pauses that instance alone: its rows wait (not counted as attempts) while
//! every other instance keeps sending. Delivery receipts are recorded, so the platform's id of
//! a reply leads back to it, and every delivery or dead letter is a conversation event.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use switchboard_connector::{ConnectorError, OutboundMessage};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channels::{Channels, Instance};
use crate::config::OutboxSettings;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::router::lanes::Lanes;
use crate::store::{DeliveryOutcome, Finished, OutboxRow, Store, now_ms};

/// Most platform ids of earlier messages given to a connector that threads by them.
const THREAD_REFERENCES: i64 = 50;

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
    bus: Arc<dyn EventBus>,
    settings: OutboxSettings,
    instance: String,
    lanes: std::sync::OnceLock<Arc<Lanes<OutboxRow>>>,
    permits: Arc<Semaphore>,
    /// Lanes held by a row waiting for its retry: lane -> (that row's id, its retry time).
    held: dashmap::DashMap<String, (i64, i64)>,
    outcomes: mpsc::UnboundedSender<Finished>,
    outcomes_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Finished>>>,
    /// Threads marked unreachable, `(channel, thread)`: read from the store once, then kept as
    /// this process marks and lifts them, so that a delivery to any other thread reads
    /// nothing. A mark another instance made is not seen here until the platform refuses
    /// this instance too (one refused call), which then marks it here as well.
    marked: tokio::sync::OnceCell<dashmap::DashSet<(String, String)>>,
}

impl Delivery {
    pub fn new(
        store: Store,
        channels: Arc<Channels>,
        metrics: Arc<Metrics>,
        bus: Arc<dyn EventBus>,
        settings: OutboxSettings,
    ) -> Arc<Delivery> {
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let delivery = Arc::new(Delivery {
            store,
            senders: std::sync::RwLock::default(),
            channels,
            metrics,
            bus,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            instance: uuid::Uuid::new_v4().to_string(),
            lanes: std::sync::OnceLock::new(),
            held: dashmap::DashMap::new(),
            outcomes,
            outcomes_rx: std::sync::Mutex::new(Some(outcomes_rx)),
            marked: tokio::sync::OnceCell::new(),
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

    /// Where committed changes are published (the workflow's task changes go out here too).
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
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

    fn finish(&self, row: &OutboxRow, outcome: DeliveryOutcome) {
        let _ = self.outcomes.send(Finished {
            outbox_id: row.id,
            lane: row.lane.clone(),
            message_id: row.message_id.clone(),
            outcome,
        });
    }

    async fn deliver(&self, mut row: OutboxRow) {
        if let Some((held_by, until_ms)) = self.held.get(&row.lane).map(|hold| *hold)
            && row.id > held_by
        {
            self.finish(&row, DeliveryOutcome::Deferred { until_ms });
            return;
        }
        let instance = match row.kind.as_str() {
            "message" => row
                .channel
                .as_deref()
                .and_then(|name| self.channels.get(name).ok())
                .cloned(),
            _ => None,
        };
        if let Some(until_ms) = instance
            .as_ref()
            .and_then(|instance| instance.paused_until())
        {
            // The platform asked this instance to wait: not an attempt, just later. The lane
            // is held like a retry, so that newer rows of the conversation stay behind it.
            self.held.insert(row.lane.clone(), (row.id, until_ms));
            self.finish(&row, DeliveryOutcome::Deferred { until_ms });
            return;
        }
        let _permit = self.permits.acquire().await.expect("semaphore stays open");
        let _instance_permit = match &instance {
            Some(instance) => instance.ready().await,
            None => None,
        };
        let channel = row.channel.clone().unwrap_or_default();
        let outcome = match self.attempt(&mut row, instance.as_deref()).await {
            Ok(platform_message_id) => {
                self.metrics.outbound(&channel);
                DeliveryOutcome::Sent {
                    platform_message_id,
                }
            }
            Err(error) => {
                self.metrics.outbound_failure(&channel);
                let attempts = row.attempts + 1;
                let retriable = error.is_retriable();
                if let (Some(instance), Some(pause)) = (&instance, error.retry_after()) {
                    tracing::warn!(
                        channel,
                        pause_ms = pause.as_millis() as u64,
                        "platform asked to slow down, pausing the channel"
                    );
                    instance.pause(pause);
                }
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
        self.finish(&row, outcome);
    }

    /// One delivery attempt; the platform's id of the delivered message, if it gave one.
    async fn attempt(
        &self,
        row: &mut OutboxRow,
        instance: Option<&Instance>,
    ) -> Result<Option<String>, ConnectorError> {
        if row.kind != "message" {
            return match self.sender(&row.kind) {
                Some(sender) => sender.send(row).await.map(|()| None),
                None => Err(ConnectorError::Permanent(format!(
                    "unknown outbox kind {:?}",
                    row.kind
                ))),
            };
        }
        let Some(instance) = instance else {
            let known = self.channels.names().join(", ");
            return Err(ConnectorError::Permanent(format!(
                "no channel instance named {:?} (running: {known})",
                row.channel.as_deref().unwrap_or_default()
            )));
        };
        let message = row.message.as_mut().ok_or_else(|| {
            ConnectorError::Permanent("the message of this outbox row is gone".into())
        })?;
        if instance.connector.capabilities().thread_references && message.references.is_empty() {
            let (references, last_inbound) = self
                .store
                .thread_references(&message.conversation_id, message.seq, THREAD_REFERENCES)
                .await
                .map_err(|error| ConnectorError::retriable(error.to_string()))?;
            message.references = references;
            if message.in_reply_to.is_none() {
                message.in_reply_to = last_inbound;
            }
        }
        self.check_reachable(message).await?;
        let receipt = match instance.connector.send(message).await {
            Ok(receipt) => receipt,
            Err(ConnectorError::Unreachable(reason)) => {
                tracing::warn!(channel = %message.channel, thread = %message.thread, %reason, "thread unreachable, marked");
                match self
                    .store
                    .mark_unreachable(&message.channel, &message.thread, &reason)
                    .await
                {
                    Ok(()) => {
                        if let Some(marked) = self.marked.get() {
                            marked.insert((message.channel.clone(), message.thread.clone()));
                        }
                    }
                    Err(error) => tracing::error!(error = %error, "unreachable mark not stored"),
                }
                return Err(ConnectorError::Unreachable(reason));
            }
            Err(error) => return Err(error),
        };
        Ok(receipt.platform_message_id)
    }

    /// Refuse a delivery to a thread marked unreachable, unless the customer wrote there since
    /// the mark (then the mark is lifted).
    async fn check_reachable(&self, message: &OutboundMessage) -> Result<(), ConnectorError> {
        let marked = self
            .marked
            .get_or_try_init(|| async {
                let threads = self.store.unreachable_threads().await?;
                Ok::<_, crate::store::StoreError>(threads.into_iter().collect())
            })
            .await
            .map_err(|error| ConnectorError::retriable(error.to_string()))?;
        if marked.is_empty() {
            return Ok(());
        }
        let key = (message.channel.clone(), message.thread.clone());
        if !marked.contains(&key) {
            return Ok(());
        }
        let mark = self
            .store
            .unreachable(&message.channel, &message.thread)
            .await
            .map_err(|error| ConnectorError::retriable(error.to_string()))?;
        let Some(mark) = mark else {
            // Lifted elsewhere (another instance).
            marked.remove(&key);
            return Ok(());
        };
        let written = self
            .store
            .lift_unreachable_if_written(&message.channel, &message.thread, &mark)
            .await
            .map_err(|error| ConnectorError::retriable(error.to_string()))?;
        if !written {
            return Err(ConnectorError::Unreachable(format!(
                "not sent: the thread is marked unreachable since {} ({})",
                crate::store::rfc3339(mark.since_ms),
                mark.reason
            )));
        }
        marked.remove(&key);
        tracing::info!(channel = %message.channel, thread = %message.thread, "the customer wrote again: thread reachable");
        Ok(())
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
            let bus = self.bus.clone();
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
                    write_outcomes(&store, bus.as_ref(), &batch, &stop).await;
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

async fn write_outcomes(
    store: &Store,
    bus: &dyn EventBus,
    batch: &[Finished],
    stop: &CancellationToken,
) {
    let mut delay = Duration::from_millis(50);
    for _ in 0..20 {
        match store.finish_outbox(batch).await {
            Ok(events) => {
                bus.publish(&events);
                return;
            }
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
