//! Prometheus metrics, exposed in the text format by the `prometheus-client` crate (the
//! Prometheus project's own Rust client: it gets names, escaping, `_total` suffixes and the
//! exposition format right, so this module only declares the series).

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the router latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    kind: String,
    instance: String,
}

/// The router latency histogram, observed in durations.
pub struct Latency(Histogram);

impl Latency {
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

pub struct Metrics {
    registry: Registry,
    inbound: Family<ChannelLabel, Counter>,
    inbound_duplicates: Family<ChannelLabel, Counter>,
    outbound: Family<ChannelLabel, Counter>,
    outbound_failures: Family<ChannelLabel, Counter>,
    outbound_dead: Family<ChannelLabel, Counter>,
    handoffs: Counter,
    outbox_depth: Gauge<i64, AtomicI64>,
    webchat_sessions: Gauge<i64, AtomicI64>,
    channel_up: Family<InstanceLabel, Gauge<i64, AtomicI64>>,
    /// Connections, requests and frames refused at the edge, per stable reason label.
    edge_rejections: Family<ReasonLabel, Counter>,
    /// Open HTTP connections, WebSockets included.
    http_connections: Gauge<i64, AtomicI64>,
    /// The store's writes run again after losing a race to a concurrent writer.
    retried_writes: Counter,
    /// From an inbound message being stored to its turn being committed.
    pub router_latency: Latency,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("switchboard");
        let inbound = Family::<ChannelLabel, Counter>::default();
        registry.register(
            "inbound_messages",
            "Inbound messages stored, per channel instance",
            inbound.clone(),
        );
        let inbound_duplicates = Family::<ChannelLabel, Counter>::default();
        registry.register(
            "inbound_duplicates",
            "Inbound messages dropped as redeliveries, per channel instance",
            inbound_duplicates.clone(),
        );
        let outbound = Family::<ChannelLabel, Counter>::default();
        registry.register(
            "outbound_messages",
            "Outbound messages delivered, per channel instance",
            outbound.clone(),
        );
        let outbound_failures = Family::<ChannelLabel, Counter>::default();
        registry.register(
            "outbound_failures",
            "Failed delivery attempts, per channel instance",
            outbound_failures.clone(),
        );
        let outbound_dead = Family::<ChannelLabel, Counter>::default();
        registry.register(
            "outbound_dead_letters",
            "Outbound messages given up on, per channel instance",
            outbound_dead.clone(),
        );
        let handoffs = Counter::<u64, AtomicU64>::default();
        registry.register(
            "handoffs",
            "Conversations handed from the bot to a queue",
            handoffs.clone(),
        );
        let router_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "router_latency",
            "From an inbound message stored to its turn committed",
            prometheus_client::registry::Unit::Seconds,
            router_latency.clone(),
        );
        let outbox_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "outbox_depth",
            "Outbox rows waiting for delivery",
            outbox_depth.clone(),
        );
        let webchat_sessions = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "webchat_sessions",
            "Open web chat WebSocket sessions",
            webchat_sessions.clone(),
        );
        let channel_up = Family::<InstanceLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "channel_up",
            "1 while a channel instance runs and its platform answers, else 0",
            channel_up.clone(),
        );
        let edge_rejections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "edge_rejections",
            "Connections, requests and frames refused at the edge, per reason",
            edge_rejections.clone(),
        );
        let http_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_connections",
            "Open HTTP connections, WebSockets included",
            http_connections.clone(),
        );
        let retried_writes = Counter::<u64, AtomicU64>::default();
        registry.register(
            "store_retried_writes",
            "Writes run again after losing a race on a unique constraint to a concurrent writer \
             (the same event or message number, the same conversation opened twice)",
            retried_writes.clone(),
        );
        Metrics {
            registry,
            retried_writes,
            edge_rejections,
            http_connections,
            inbound,
            inbound_duplicates,
            outbound,
            outbound_failures,
            outbound_dead,
            handoffs,
            outbox_depth,
            webchat_sessions,
            channel_up,
            router_latency: Latency(router_latency),
        }
    }
}

fn label(channel: &str) -> ChannelLabel {
    ChannelLabel {
        channel: channel.to_string(),
    }
}

impl Metrics {
    pub fn inbound(&self, channel: &str) {
        self.inbound.get_or_create(&label(channel)).inc();
    }

    pub fn inbound_duplicate(&self, channel: &str) {
        self.inbound_duplicates.get_or_create(&label(channel)).inc();
    }

    pub fn outbound(&self, channel: &str) {
        self.outbound.get_or_create(&label(channel)).inc();
    }

    pub fn outbound_failure(&self, channel: &str) {
        self.outbound_failures.get_or_create(&label(channel)).inc();
    }

    pub fn outbound_dead(&self, channel: &str) {
        self.outbound_dead.get_or_create(&label(channel)).inc();
    }

    pub fn handoff(&self) {
        self.handoffs.inc();
    }

    /// Something refused at the edge: `reason` is a stable label such as `max_connections`.
    pub fn edge_rejection(&self, reason: &'static str) {
        self.edge_rejections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn connection_opened(&self) {
        self.http_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.http_connections.dec();
    }

    pub fn open_connections(&self) -> i64 {
        self.http_connections.get()
    }

    /// The exposition text. What is read at scrape time is passed in: the outbox depth, open
    /// web chat sessions, each channel instance as (kind, name, up), and the store's retried
    /// writes since start ([`crate::store::Store::retried_writes`]).
    pub fn render(
        &self,
        outbox_depth: i64,
        open_sessions: usize,
        channels: &[(&'static str, String, bool)],
        retried_writes: u64,
    ) -> String {
        self.outbox_depth.set(outbox_depth);
        // The store counts from start and only up: the counter takes the larger of the two,
        // in one atomic step, so that scrapes at the same time do not add the same writes twice.
        self.retried_writes
            .inner()
            .fetch_max(retried_writes, std::sync::atomic::Ordering::Relaxed);
        self.webchat_sessions.set(open_sessions as i64);
        for (kind, name, up) in channels {
            self.channel_up
                .get_or_create(&InstanceLabel {
                    kind: kind.to_string(),
                    instance: name.clone(),
                })
                .set(i64::from(*up));
        }
        let mut out = String::with_capacity(4096);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %error, "metrics not encoded");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_writes_follow_the_stores_count() {
        let metrics = Metrics::default();
        let text = metrics.render(0, 0, &[], 0);
        assert!(
            text.contains("switchboard_store_retried_writes_total 0"),
            "{text}"
        );
        metrics.render(0, 0, &[], 3);
        let text = metrics.render(0, 0, &[], 7);
        assert!(
            text.contains("switchboard_store_retried_writes_total 7"),
            "{text}"
        );
    }
}
