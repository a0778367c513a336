//! Prometheus metrics, kept in atomics and rendered in the text exposition format.
//!
//! A handful of series does not justify a metrics framework: counters per channel, one latency
//! histogram, and gauges read at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds of the router latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    inbound: DashMap<String, AtomicU64>,
    inbound_duplicates: DashMap<String, AtomicU64>,
    outbound: DashMap<String, AtomicU64>,
    outbound_failures: DashMap<String, AtomicU64>,
    outbound_dead: DashMap<String, AtomicU64>,
    handoffs: AtomicU64,
    /// Requests, frames and connections refused at the edge, per reason (rate limits, caps,
    /// timeouts, origins).
    edge_rejections: DashMap<String, AtomicU64>,
    /// Open HTTP connections (WebSockets included).
    http_connections: AtomicU64,
    /// From an inbound message being stored to its turn being committed.
    pub router_latency: Histogram,
}

fn bump(map: &DashMap<String, AtomicU64>, channel: &str) {
    if let Some(counter) = map.get(channel) {
        counter.fetch_add(1, Ordering::Relaxed);
        return;
    }
    map.entry(channel.to_string())
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

fn render_counter(map: &DashMap<String, AtomicU64>, name: &str, help: &str, out: &mut String) {
    render_labelled(map, name, "channel", help, out);
}

fn render_labelled(
    map: &DashMap<String, AtomicU64>,
    name: &str,
    label: &str,
    help: &str,
    out: &mut String,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let mut rows: Vec<(String, u64)> = map
        .iter()
        .map(|entry| (entry.key().clone(), entry.value().load(Ordering::Relaxed)))
        .collect();
    rows.sort();
    for (channel, value) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{channel}\"}} {value}");
    }
}

impl Metrics {
    pub fn inbound(&self, channel: &str) {
        bump(&self.inbound, channel);
    }

    pub fn inbound_duplicate(&self, channel: &str) {
        bump(&self.inbound_duplicates, channel);
    }

    pub fn outbound(&self, channel: &str) {
        bump(&self.outbound, channel);
    }

    pub fn outbound_failure(&self, channel: &str) {
        bump(&self.outbound_failures, channel);
    }

    pub fn outbound_dead(&self, channel: &str) {
        bump(&self.outbound_dead, channel);
    }

    /// Something refused at the edge: `reason` is a stable label such as `rate_limited`.
    pub fn edge_rejection(&self, reason: &str) {
        bump(&self.edge_rejections, reason);
    }

    pub fn connection_opened(&self) {
        self.http_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.http_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn open_connections(&self) -> u64 {
        self.http_connections.load(Ordering::Relaxed)
    }

    pub fn handoff(&self) {
        self.handoffs.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; gauges read at scrape time are passed in.
    pub fn render(&self, outbox_depth: i64, open_sessions: usize) -> String {
        let mut out = String::with_capacity(4096);
        render_counter(
            &self.inbound,
            "switchboard_inbound_messages_total",
            "Inbound messages stored, per channel.",
            &mut out,
        );
        render_counter(
            &self.inbound_duplicates,
            "switchboard_inbound_duplicates_total",
            "Inbound messages dropped as redeliveries, per channel.",
            &mut out,
        );
        render_counter(
            &self.outbound,
            "switchboard_outbound_messages_total",
            "Outbound messages delivered, per channel.",
            &mut out,
        );
        render_counter(
            &self.outbound_failures,
            "switchboard_outbound_failures_total",
            "Failed delivery attempts, per channel.",
            &mut out,
        );
        render_counter(
            &self.outbound_dead,
            "switchboard_outbound_dead_letters_total",
            "Outbound messages given up on, per channel.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_handoffs_total Conversations handed from the bot to a queue."
        );
        let _ = writeln!(out, "# TYPE switchboard_handoffs_total counter");
        let _ = writeln!(
            out,
            "switchboard_handoffs_total {}",
            self.handoffs.load(Ordering::Relaxed)
        );
        self.router_latency.render(
            "switchboard_router_latency_seconds",
            "From an inbound message stored to its turn committed.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_outbox_depth Outbox rows waiting for delivery."
        );
        let _ = writeln!(out, "# TYPE switchboard_outbox_depth gauge");
        let _ = writeln!(out, "switchboard_outbox_depth {outbox_depth}");
        let _ = writeln!(
            out,
            "# HELP switchboard_webchat_sessions Open web chat WebSocket sessions."
        );
        let _ = writeln!(out, "# TYPE switchboard_webchat_sessions gauge");
        let _ = writeln!(out, "switchboard_webchat_sessions {open_sessions}");
        render_labelled(
            &self.edge_rejections,
            "switchboard_edge_rejections_total",
            "reason",
            "Connections, requests and frames refused at the edge, per reason.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_http_connections Open HTTP connections, WebSockets included."
        );
        let _ = writeln!(out, "# TYPE switchboard_http_connections gauge");
        let _ = writeln!(
            out,
            "switchboard_http_connections {}",
            self.open_connections()
        );
        out
    }
}
