//! `switchboard bench tasks`: task creation through the REST API, over HTTP, with idempotency
//! keys on (every request carries a fresh `Idempotency-Key`, so every create checks and records
//! one).
//!
//! Closed loop: `--clients` concurrent HTTP clients each create a task, wait for the answer,
//! create the next. The tasks are callback requests on web chat conversations that the bench
//! opens first over the real WebSocket protocol, so every task also writes its customer notice
//! and outbox row, as in production. Without `--url` a server is started in-process on a fresh
//! SQLite file (or `--database`) with an admin key made for the run; with `--url` it drives a
//! running server and needs a key with `tasks:write` (`--key` or `SWITCHBOARD_API_KEY`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::app::{App, AppOptions};
use crate::assistant::EchoAssistant;
use crate::config::Settings;
use crate::workflow::{Actor, Scope};

#[derive(Debug, clap::Args)]
pub struct TasksBench {
    /// Drive a server that is already running, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: Option<String>,
    /// API key with tasks:write for --url.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Database for the in-process server; default: a new SQLite file in a temporary directory.
    #[arg(long)]
    database: Option<String>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Web chat conversations the tasks are spread over.
    #[arg(long, default_value_t = 16)]
    conversations: usize,
    /// Seconds of measured load (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

struct Totals {
    created: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
}

fn scratch_dir() -> anyhow::Result<std::path::PathBuf> {
    let path =
        std::env::temp_dir().join(format!("switchboard-bench-tasks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// A web chat visitor writes once; returns their conversation id (from a resumed welcome).
async fn open_conversation(base: &str, n: usize) -> anyhow::Result<String> {
    let ws = format!(
        "{}/channels/webchat/web/ws",
        base.replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
        super::router::same_origin_request(&ws)?,
        Some(super::router::client_config()),
        false,
    )
    .await?;
    socket
        .send(Message::text(r#"{"type":"hello","token":null}"#))
        .await?;
    let mut token = None;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            let frame: serde_json::Value = serde_json::from_str(&text)?;
            if frame["type"] == "welcome" {
                token = frame["token"].as_str().map(str::to_string);
                break;
            }
        }
    }
    let token = token.context("no welcome from the web chat")?;
    let hello = serde_json::json!({"type": "message", "client_id": format!("bench-{n}"),
                                   "text": "hello from the task bench"});
    socket.send(Message::text(hello.to_string())).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no ack within 30 s")?;
        match frame {
            Some(Ok(Message::Text(text))) if text.contains(r#""type":"ack""#) => break,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("web chat closed"),
        }
    }
    let _ = socket.close(None).await;
    // Resuming the session tells us the conversation it is in.
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
        super::router::same_origin_request(&ws)?,
        Some(super::router::client_config()),
        false,
    )
    .await?;
    socket
        .send(Message::text(
            serde_json::json!({"type": "hello", "token": token}).to_string(),
        ))
        .await?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            let frame: serde_json::Value = serde_json::from_str(&text)?;
            if frame["type"] == "welcome" {
                let _ = socket.close(None).await;
                return frame["conversation_id"]
                    .as_str()
                    .map(str::to_string)
                    .context("the welcome names no conversation");
            }
        }
    }
    bail!("no welcome on resume")
}

pub async fn run(options: TasksBench, settings: Settings) -> anyhow::Result<()> {
    super::raise_fd_limit();
    let mut scratch = None;
    let mut app = None;
    let (base, key) = match &options.url {
        Some(url) => {
            let key = options
                .key
                .clone()
                .context("--url needs --key (or SWITCHBOARD_API_KEY) with tasks:write")?;
            (url.trim_end_matches('/').to_string(), key)
        }
        None => {
            let dir = scratch_dir()?;
            let mut settings = settings;
            settings.data_dir = dir.clone();
            settings.http.host = "127.0.0.1".into();
            settings.http.port = 0;
            settings.database.url = options.database.clone().unwrap_or_default();
            settings.log.level = "warn".into();
            settings.workflow.webhooks.clear();
            let started = App::start(
                settings,
                AppOptions {
                    assistant: Some(Arc::new(EchoAssistant)),
                    ..AppOptions::default()
                },
            )
            .await?;
            let (_, key) = started
                .workflow
                .create_api_key(
                    &Actor::operator("bench", Vec::new()),
                    "bench tasks",
                    &[Scope::TasksWrite],
                    &[],
                )
                .await?;
            let base = format!("http://{}", started.addr);
            app = Some(started);
            scratch = Some(dir);
            (base, key)
        }
    };
    let target = match &options.url {
        Some(url) => url.clone(),
        None => format!(
            "in-process, database {}",
            options
                .database
                .as_deref()
                .map(crate::config::redact_url)
                .unwrap_or_else(|| "sqlite (temporary file)".into())
        ),
    };
    println!(
        "bench tasks: {} clients, {} conversations, {} s, idempotency keys on, against {target}",
        options.clients, options.conversations, options.seconds
    );
    let mut conversations = Vec::new();
    for n in 0..options.conversations.max(1) {
        conversations.push(open_conversation(&base, n).await?);
    }
    let conversations = Arc::new(conversations);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .tcp_nodelay(true)
        .build()?;
    let totals = Arc::new(Totals {
        created: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(1);
    let stop_at = measure_from + Duration::from_secs(options.seconds);
    let url = format!("{base}/api/v1/tasks");
    let mut workers = Vec::new();
    for worker in 0..options.clients.max(1) {
        let client = client.clone();
        let totals = totals.clone();
        let conversations = conversations.clone();
        let url = url.clone();
        let key = key.clone();
        let run_id = run_id.clone();
        workers.push(tokio::spawn(async move {
            let mut local = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram bounds");
            let mut created = 0u64;
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let conversation = &conversations[(worker + n as usize) % conversations.len()];
                let body = serde_json::json!({
                    "type": "callback",
                    "conversation_id": conversation,
                    "payload": {"phone": "+34 600 000 000", "topic": format!("bench {worker}/{n}")}
                });
                let sent_at = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("idempotency-key", format!("{run_id}-{worker}-{n}"))
                    .json(&body)
                    .send()
                    .await;
                let ok = match response {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        status == reqwest::StatusCode::CREATED
                    }
                    Err(_) => false,
                };
                let now = Instant::now();
                if sent_at >= measure_from && now <= stop_at {
                    if ok {
                        created += 1;
                        let _ = local.record(now.duration_since(sent_at).as_micros().max(1) as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            totals.created.fetch_add(created, Ordering::Relaxed);
            totals.errors.fetch_add(errors, Ordering::Relaxed);
            let _ = totals.latency.lock().await.add(&local);
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    // A replay of an earlier request must come back as a replay.
    let replay = client
        .post(&url)
        .bearer_auth(&key)
        .header("idempotency-key", format!("{run_id}-0-1"))
        .json(&serde_json::json!({
            "type": "callback",
            "conversation_id": conversations[1 % conversations.len()],
            "payload": {"phone": "+34 600 000 000", "topic": "bench 0/1"}
        }))
        .send()
        .await?;
    let replayed = replay
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    let created = totals.created.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let latency = totals.latency.lock().await;
    let tasks_per_s = created as f64 / options.seconds as f64;
    let (p50, p90, p99, max) = (
        super::percentile_ms(&latency, 0.50),
        super::percentile_ms(&latency, 0.90),
        super::percentile_ms(&latency, 0.99),
        latency.max() as f64 / 1000.0,
    );
    println!(
        "tasks created in the measured window: {created}, errors: {errors}, replay of the first request recognised: {replayed}"
    );
    println!(
        "latency POST /api/v1/tasks -> 201: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    if let Some(app) = app {
        app.shutdown().await;
    }
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    println!(
        "tasks_per_s={tasks_per_s:.0} p50_ms={p50:.2} p99_ms={p99:.2} max_ms={max:.2} clients={} errors={errors} replay_ok={replayed}",
        options.clients
    );
    Ok(())
}
