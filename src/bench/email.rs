//! `switchboard bench email`: a busy support inbox, against the project's mail peer
//! (tests/peers/mail: Postfix and Dovecot on loopback; `sudo bash tests/peers/mail/install.sh`
//! then `sudo bash tests/peers/mail/start.sh`).
//!
//! An in-process server (echo assistant, SQLite unless `--database`) reads a fresh support
//! mailbox with the email channel. `--customers` customers, each with a mailbox of its own, hand
//! `--mails` mails in all to the peer's MX over `--senders` pooled SMTP connections, as fast as
//! Postfix takes them; every mail has a subject of its own, so each is a new conversation and
//! gets one answer. The bench follows the store (each mail's arrival, by its Message-ID) and
//! the customers' inboxes (each answer, by its `In-Reply-To`) over held-open IMAP sessions,
//! and prints: the MX's acceptance rate, mails/s ingested and answered, p50/p99 from the MX's
//! acceptance to the answer in the customer's inbox, and the process's memory (server and
//! bench client share it). Arrival and answer times are seen by polling: every 50 ms for the
//! store, one pass over the inboxes at a time for answers; both add at most that much.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use switchboard_email::testing::{Inbox, MailUser, Mx, channel_table, mailbox};
use tokio::sync::Mutex;

use super::idle::resident_kib;
use super::router::{bench_settings, tempdir};
use crate::app::{App, AppOptions};
use crate::assistant::EchoAssistant;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct EmailBench {
    /// Mails delivered in all.
    #[arg(long, default_value_t = 200)]
    mails: usize,
    /// Customers writing them, each from a mailbox of its own.
    #[arg(long, default_value_t = 20)]
    customers: usize,
    /// SMTP connections handing mail to the MX at once.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Seconds to wait for the last answer.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Database (sqlite://... or postgres://...); a fresh SQLite file when not given.
    #[arg(long)]
    database: Option<String>,
}

const CHANNEL: &str = "bench-mail";

/// When each mail was accepted by the MX, stored by us, and answered in its customer's inbox.
#[derive(Default)]
struct Timeline {
    accepted: HashMap<String, Instant>,
    stored: HashMap<String, Instant>,
    answered: HashMap<String, Instant>,
}

pub async fn run(options: EmailBench, settings: Settings) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.mails > 0 && options.customers > 0 && options.senders > 0,
        "--mails, --customers and --senders must be at least 1"
    );
    let mx = format!("127.0.0.1:{}", switchboard_email::testing::MX_PORT);
    if tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&mx))
        .await
        .map_or(true, |connected| connected.is_err())
    {
        bail!(
            "the mail peer is not running on {mx}: start it with \
             `sudo bash tests/peers/mail/install.sh && sudo bash tests/peers/mail/start.sh`"
        );
    }
    println!(
        "bench email: {} mails from {} customers over {} SMTP connections, to the mail peer",
        options.mails, options.customers, options.senders
    );
    let data_dir = tempdir::TempDir::new("email")?;
    let support = mailbox("bench-support");
    let mut settings = bench_settings(settings, &data_dir.0, &options.database);
    settings.channel.0.push(channel_table(CHANNEL, &support));
    let app = App::start(
        settings,
        AppOptions {
            assistant: Some(Arc::new(EchoAssistant)),
            ..AppOptions::default()
        },
    )
    .await?;
    let outcome = measure(&options, &app, &support).await;
    app.shutdown().await;
    outcome
}

async fn measure(options: &EmailBench, app: &App, support: &str) -> anyhow::Result<()> {
    // The mailbox's first connection records its cursor: from then on, mail is answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.store.cursor(CHANNEL, "imap:INBOX").await?.is_none() {
        if Instant::now() > deadline {
            bail!("the email channel did not connect to the mailbox within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_start = resident_kib(std::process::id())?;
    let customers: Vec<MailUser> = (0..options.customers)
        .map(|_| MailUser::new("bench-customer"))
        .collect();
    let mut inboxes = Vec::new();
    for customer in &customers {
        inboxes.push(customer.open_inbox().await.context("a customer's inbox")?);
    }
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let stored_watch = tokio::spawn(watch_store(
        app.store.clone(),
        timeline.clone(),
        stop.clone(),
    ));
    let answer_watch = tokio::spawn(watch_inboxes(inboxes, timeline.clone(), stop.clone()));

    let started = Instant::now();
    let transport = Mx::new();
    let deliveries = futures::stream::iter(0..options.mails).map(|index| {
        let customer = &customers[index % customers.len()];
        let message_id = format!("bench-{index}.{}", customer.address);
        let raw = customer.compose(
            support,
            &format!("Question {index} about my order"),
            &message_id,
            None,
            "",
            &format!("Hello, this is question {index}: where is my parcel?"),
        );
        let transport = transport.clone();
        let timeline = timeline.clone();
        async move {
            transport
                .deliver(&customer.address, support, raw.as_bytes())
                .await?;
            timeline
                .lock()
                .await
                .accepted
                .insert(message_id, Instant::now());
            Ok::<(), String>(())
        }
    });
    let mut refused = 0usize;
    let mut deliveries = deliveries.buffer_unordered(options.senders);
    while let Some(outcome) = deliveries.next().await {
        if let Err(error) = outcome {
            refused += 1;
            if refused <= 5 {
                eprintln!("{error}");
            }
        }
    }
    let handed = started.elapsed();
    let accepted = timeline.lock().await.accepted.len();
    println!(
        "the MX accepted {accepted} of {} mails in {:.2} s ({:.1} mails/s); refused {refused}",
        options.mails,
        handed.as_secs_f64(),
        accepted as f64 / handed.as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs(options.timeout);
    let mut rss_peak = rss_start;
    loop {
        rss_peak = rss_peak.max(resident_kib(std::process::id())?);
        let done = {
            let timeline = timeline.lock().await;
            timeline.answered.len() >= accepted && timeline.stored.len() >= accepted
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    stored_watch.await?;
    answer_watch.await?;
    let rss_end = resident_kib(std::process::id())?;
    let timeline = timeline.lock().await;
    report(
        options,
        &timeline,
        started,
        accepted,
        refused,
        [rss_start, rss_peak, rss_end],
    )
}

/// Record when each accepted mail shows in the store, by its Message-ID.
async fn watch_store(
    store: crate::store::Store,
    timeline: Arc<Mutex<Timeline>>,
    stop: tokio_util::sync::CancellationToken,
) {
    while !stop.is_cancelled() {
        let waiting: Vec<String> = {
            let timeline = timeline.lock().await;
            timeline
                .accepted
                .keys()
                .filter(|id| !timeline.stored.contains_key(*id))
                .cloned()
                .collect()
        };
        for id in waiting {
            match store.find_message(CHANNEL, &id).await {
                Ok(Some(_)) => {
                    timeline.lock().await.stored.insert(id, Instant::now());
                }
                Ok(None) => {}
                Err(error) => eprintln!("store: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Record when each answer reaches its customer's inbox, by the mail it answers.
async fn watch_inboxes(
    mut inboxes: Vec<Inbox>,
    timeline: Arc<Mutex<Timeline>>,
    stop: tokio_util::sync::CancellationToken,
) {
    while !stop.is_cancelled() {
        for inbox in &mut inboxes {
            match inbox.new_mails().await {
                Ok(mails) => {
                    let seen = Instant::now();
                    let mut timeline = timeline.lock().await;
                    for mail in mails {
                        for answered in mail.in_reply_to {
                            timeline.answered.entry(answered).or_insert(seen);
                        }
                    }
                }
                Err(error) => eprintln!("a customer's inbox: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for inbox in inboxes {
        inbox.close().await;
    }
}

fn report(
    options: &EmailBench,
    timeline: &Timeline,
    started: Instant,
    accepted: usize,
    refused: usize,
    [rss_start, rss_peak, rss_end]: [u64; 3],
) -> anyhow::Result<()> {
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let mut answered = 0usize;
    let mut last_answer = started;
    let mut last_stored = started;
    for (id, accepted_at) in &timeline.accepted {
        if let Some(stored_at) = timeline.stored.get(id) {
            last_stored = last_stored.max(*stored_at);
        }
        if let Some(answered_at) = timeline.answered.get(id) {
            answered += 1;
            last_answer = last_answer.max(*answered_at);
            let ms = answered_at
                .saturating_duration_since(*accepted_at)
                .as_millis() as u64;
            latency.record(ms.max(1))?;
        }
    }
    let stored = timeline
        .stored
        .keys()
        .filter(|id| timeline.accepted.contains_key(*id))
        .count();
    let rate = |count: usize, until: Instant| {
        count as f64
            / until
                .saturating_duration_since(started)
                .as_secs_f64()
                .max(0.001)
    };
    let ingested_per_s = rate(stored, last_stored);
    let answered_per_s = rate(answered, last_answer);
    println!(
        "ingested: {stored} of {accepted} stored, {ingested_per_s:.1} mails/s (from the first hand-over to the last stored)"
    );
    println!(
        "answered: {answered} of {accepted} in the customers' inboxes, {answered_per_s:.1} mails/s (from the first hand-over to the last answer)"
    );
    println!(
        "MX acceptance -> answer in the customer's inbox: p50 {} ms, p99 {} ms, max {} ms",
        latency.value_at_quantile(0.50),
        latency.value_at_quantile(0.99),
        latency.max()
    );
    println!(
        "memory (server and bench client, one process): {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after",
        rss_start as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!(
        "mails={} customers={} accepted={accepted} refused={refused} stored={stored} answered={answered} ingested_per_s={ingested_per_s:.1} answered_per_s={answered_per_s:.1} p50_ms={} p99_ms={} rss_peak_mib={:.1}",
        options.mails,
        options.customers,
        latency.value_at_quantile(0.50),
        latency.value_at_quantile(0.99),
        rss_peak as f64 / 1024.0
    );
    if answered < accepted {
        bail!(
            "{} of {accepted} mails were not answered within {} s",
            accepted - answered,
            options.timeout
        );
    }
    Ok(())
}
