//! `switchboard bench console`: agents' live views while the router is under load.
//!
//! Two runs of the router bench's closed loop on a fresh in-process server each (echo
//! assistant, SQLite unless `--database`): first with no console open, then with `--agents`
//! agents signed in over HTTP, each following the queue's live feed (Server-Sent Events), as
//! the console page does. It prints the router's throughput of both runs and, for the second,
//! how long events took from their commit (the event's time) to each agent's feed: p50 and
//! p99 over every item every agent received. Times are in whole milliseconds, as events carry
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::Mutex;

use super::router::{LoadFigures, bench_settings, load, tempdir};
use crate::app::{App, AppOptions};
use crate::assistant::EchoAssistant;
use crate::config::Settings;
use crate::console::Role;
use crate::console::accounts::NewUser;

#[derive(Debug, clap::Args)]
pub struct ConsoleBench {
    /// Agents following the live feed in the second run.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Concurrent web chat visitors (closed loop).
    #[arg(long, default_value_t = 200)]
    visitors: usize,
    /// Seconds of measured load per run (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Database (sqlite://... or postgres://...; each run needs its own, so a PostgreSQL URL
    /// should name a database that can be reused: it is left as the run leaves it).
    #[arg(long)]
    database: Option<String>,
}

const PASSWORD: &str = "bench-agent-password";

async fn start(
    settings: &Settings,
    database: &Option<String>,
) -> anyhow::Result<(App, tempdir::TempDir)> {
    let data_dir = tempdir::TempDir::new("console")?;
    let mut settings = bench_settings(settings.clone(), &data_dir.0, database);
    settings.console.login_attempts_per_address = 1_000_000;
    settings.console.login_attempts_per_account = 1_000_000;
    let app = App::start(
        settings,
        AppOptions {
            assistant: Some(Arc::new(EchoAssistant)),
            ..AppOptions::default()
        },
    )
    .await?;
    Ok((app, data_dir))
}

struct Deliveries {
    items: AtomicU64,
    latency_ms: Mutex<hdrhistogram::Histogram<u64>>,
}

/// Sign in one agent and follow the feed until `stop`, recording each item's delay.
async fn agent(
    base: String,
    email: String,
    deliveries: Arc<Deliveries>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/console/login"))
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .context("no session cookie")?
        .to_string();
    let feed = http
        .get(format!("{base}/console/api/feed"))
        .header("cookie", cookie)
        .send()
        .await?;
    anyhow::ensure!(
        feed.status().is_success(),
        "feed answered {}",
        feed.status()
    );
    let mut stream = feed.bytes_stream();
    let mut buffer = String::new();
    let mut local = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut items = 0u64;
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => break,
            chunk = stream.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let received = crate::store::now_ms();
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.contains("event: items") && !block.contains("event:items") {
                continue;
            }
            let Some(data) = block.lines().find_map(|line| line.strip_prefix("data:")) else {
                continue;
            };
            let batch: Vec<serde_json::Value> = serde_json::from_str(data.trim())?;
            for item in batch {
                if let Some(created) = item["created_at_ms"].as_i64() {
                    local.record((received - created).max(0) as u64 + 1)?;
                    items += 1;
                }
            }
        }
    }
    deliveries.items.fetch_add(items, Ordering::Relaxed);
    deliveries.latency_ms.lock().await.add(&local)?;
    Ok(())
}

pub async fn run(options: ConsoleBench, settings: Settings) -> anyhow::Result<()> {
    super::raise_fd_limit();
    println!(
        "bench console: {} visitors, {} s per run; first without agents, then with {} agents on the live feed",
        options.visitors, options.seconds, options.agents
    );
    let (app, _dir) = start(&settings, &options.database).await?;
    let ws_url = format!("ws://{}/channels/webchat/web/ws", app.addr);
    println!("run 1: no console open");
    let without: LoadFigures = load(&ws_url, options.visitors, options.seconds, 0, None).await?;
    app.shutdown().await;

    let (app, _dir) = start(&settings, &options.database).await?;
    let base = format!("http://{}", app.addr);
    let ws_url = format!("ws://{}/channels/webchat/web/ws", app.addr);
    for index in 0..options.agents {
        app.console
            .create_user(NewUser {
                email: format!("agent{index}@bench.test"),
                name: format!("Agent {index}"),
                password: PASSWORD.into(),
                role: Role::Agent,
                roles: Vec::new(),
                teams: vec!["support".into()],
            })
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    let deliveries = Arc::new(Deliveries {
        items: AtomicU64::new(0),
        latency_ms: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 600_000, 3)?),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let mut agents = Vec::new();
    for index in 0..options.agents {
        agents.push(tokio::spawn(agent(
            base.clone(),
            format!("agent{index}@bench.test"),
            deliveries.clone(),
            stop.clone(),
        )));
    }
    // Let every agent sign in and open the feed before the load starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("run 2: {} agents following the live feed", options.agents);
    let with: LoadFigures = load(&ws_url, options.visitors, options.seconds, 0, None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut failed = 0;
    for task in agents {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failed += 1;
                eprintln!("agent: {error}");
            }
            Err(error) => {
                failed += 1;
                eprintln!("agent task: {error}");
            }
        }
    }
    app.shutdown().await;
    let latency = deliveries.latency_ms.lock().await;
    // Recorded as delay + 1 ms so that a same-millisecond delivery is recordable.
    let quantile = |q: f64| latency.value_at_quantile(q).saturating_sub(1);
    let items = deliveries.items.load(Ordering::Relaxed);
    println!(
        "router throughput: {:.0} msg/s without agents, {:.0} msg/s with {} agents ({:+.1}%)",
        without.msgs_per_s,
        with.msgs_per_s,
        options.agents,
        (with.msgs_per_s / without.msgs_per_s.max(1.0) - 1.0) * 100.0
    );
    println!(
        "feed delivery (event commit -> agent): {items} items over {} agents, p50 {} ms, p99 {} ms, max {} ms; agent errors: {failed}",
        options.agents,
        quantile(0.50),
        quantile(0.99),
        latency.max().saturating_sub(1)
    );
    println!(
        "agents={} msgs_per_s_without={:.0} msgs_per_s_with={:.0} delivery_p50_ms={} delivery_p99_ms={} items={items} agent_errors={failed}",
        options.agents,
        without.msgs_per_s,
        with.msgs_per_s,
        quantile(0.50),
        quantile(0.99)
    );
    Ok(())
}
