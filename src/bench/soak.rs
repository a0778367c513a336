//! `switchboard bench soak --minutes N`: a steady mix for a long while, to show leaks and drift.
//!
//! The server runs as a child process (so its memory and descriptors are its own), with the
//! echo assistant and a fresh SQLite file. Against it, at a steady rate: visitors chatting (a
//! message, its reply, the next), back-office API reads with an API key, idle sockets that stay
//! open, and new visitors that connect, say one thing and leave (so per-visitor state comes and
//! goes). Every `--report-secs` it prints the server's resident memory, open descriptors and
//! the p99 of chat replies and API calls in that window; the last line compares the first
//! window with the last, as `name=value` pairs. A server that leaks shows it in the
//! difference, not in any single figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::idle::{resident_kib, status_kib};
use super::router::{connect, start_server_process, tempdir, ws_url};

#[derive(Debug, clap::Args)]
pub struct SoakBench {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Visitors that keep chatting.
    #[arg(long, default_value_t = 50)]
    chatters: usize,
    /// Chat messages per second, all chatters together.
    #[arg(long, default_value_t = 20)]
    chat_rate: u64,
    /// API requests per second.
    #[arg(long, default_value_t = 10)]
    api_rate: u64,
    /// Sockets that say hello and then sit idle for the whole run.
    #[arg(long, default_value_t = 500)]
    idle: usize,
    /// New visitors per second that connect, send one message and leave.
    #[arg(long, default_value_t = 5)]
    churn: u64,
    /// Seconds per report window.
    #[arg(long, default_value_t = 60)]
    report_secs: u64,
}

/// What one report window measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    rss_kib: u64,
    /// The parts of `rss_kib`: anonymous memory (the heap and stacks), mapped files (the
    /// binary, the model) and shared memory (SQLite's WAL index).
    anon_kib: u64,
    file_kib: u64,
    shmem_kib: u64,
    /// The database's files on disk: the database, its WAL and the WAL index.
    database_kib: u64,
    descriptors: u64,
    chat_p99_ms: f64,
    api_p99_ms: f64,
}

struct Totals {
    chat: Mutex<hdrhistogram::Histogram<u64>>,
    api: Mutex<hdrhistogram::Histogram<u64>>,
    chat_sent: AtomicU64,
    api_sent: AtomicU64,
    errors: AtomicU64,
}

fn histogram() -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    Ok(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// The size of the files in the data directory whose name starts with `switchboard` (the
/// SQLite database, its WAL and WAL index), in KiB.
fn database_kib(data_dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("switchboard")
        {
            bytes += entry.metadata()?.len();
        }
    }
    Ok(bytes / 1024)
}

fn descriptors(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Send a message and wait for its echo; the time it took.
async fn round_trip(
    socket: &mut super::router::Socket,
    client_id: &str,
    text: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let frame = serde_json::json!({"type": "message", "client_id": client_id, "text": text});
    socket.send(Message::text(frame.to_string())).await?;
    let expected = format!("echo: {text}");
    let wait = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(body) = frame?
                && body.contains("\"bot\"")
                && body.contains(&expected)
            {
                return Ok(());
            }
        }
        bail!("socket closed while waiting for a reply")
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .context("no reply within 10 s")??;
    Ok(started.elapsed())
}

async fn chatter(id: usize, url: String, every: Duration, totals: Arc<Totals>, stop: Instant) {
    let mut socket = match connect(&url).await {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("chatter {id} could not connect: {error}");
            totals.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // Spread the chatters over the interval so the rate is steady, not bursty.
    tokio::time::sleep(every.mul_f64(id as f64 / 64.0 % 1.0)).await;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while Instant::now() < stop {
        ticks.tick().await;
        n += 1;
        let text = format!("soak {id} {n}");
        match round_trip(&mut socket, &format!("s{id}-{n}"), &text).await {
            Ok(elapsed) => {
                let micros = elapsed.as_micros().max(1) as u64;
                let _ = totals.chat.lock().await.record(micros);
                totals.chat_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("chatter {id}: {error}; reconnecting");
                match connect(&url).await {
                    Ok(fresh) => socket = fresh,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        }
    }
}

async fn api_caller(base: String, key: String, rate: u64, totals: Arc<Totals>, stop: Instant) {
    let client = reqwest::Client::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < stop {
        ticks.tick().await;
        let started = Instant::now();
        let response = client
            .get(format!("{base}/api/v1/tasks?limit=20"))
            .bearer_auth(&key)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                let micros = started.elapsed().as_micros().max(1) as u64;
                let _ = totals.api.lock().await.record(micros);
                totals.api_sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("api answered {}", response.status());
            }
            Err(error) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("api request failed: {error}");
            }
        }
    }
}

async fn churner(url: String, per_second: u64, totals: Arc<Totals>, stop: Instant) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(1) as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while Instant::now() < stop {
        ticks.tick().await;
        n += 1;
        let url = url.clone();
        let totals = totals.clone();
        tokio::spawn(async move {
            let visit = async {
                let mut socket = connect(&url).await?;
                round_trip(&mut socket, "hi", &format!("passing by {n}")).await?;
                socket.close(None).await?;
                anyhow::Ok(())
            };
            if let Err(error) = visit.await {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("passing visitor {n}: {error}");
            }
        });
    }
}

/// An API key on the child's database, made with the `apikey` command like an operator would.
async fn create_api_key(
    exe: &std::path::Path,
    data_dir: &std::path::Path,
) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(exe)
        .args([
            "apikey",
            "create",
            "--name",
            "soak",
            "--scope",
            "tasks:read",
        ])
        .env("SWITCHBOARD__DATA_DIR", data_dir)
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        .output()
        .await
        .context("running apikey create")?;
    if !output.status.success() {
        bail!(
            "apikey create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let key = String::from_utf8(output.stdout)?.trim().to_string();
    if key.is_empty() {
        bail!("apikey create printed no key");
    }
    Ok(key)
}

pub async fn run(options: SoakBench) -> anyhow::Result<()> {
    let fd_limit = super::raise_fd_limit();
    let data_dir = tempdir::TempDir::new("soak")?;
    let exe = std::env::current_exe()?;
    // The schema exists before the key is made: the key command migrates too, but the server
    // should be the one that creates the database.
    let (mut child, base) = start_server_process(
        &data_dir.0,
        &[
            ("SWITCHBOARD__HTTP__API_RATE_PER_MINUTE", "1000000"),
            ("SWITCHBOARD__HTTP__API_RATE_BURST", "100000"),
        ],
    )
    .await?;
    let pid = child.id().context("server pid")?;
    let key = create_api_key(&exe, &data_dir.0).await?;
    let url = ws_url(&base)?;
    println!(
        "soak: {} min; {} chatters at {} msg/s, {} API req/s, {} idle sockets, {} passing visitors/s; open files limit {fd_limit}",
        options.minutes,
        options.chatters,
        options.chat_rate,
        options.api_rate,
        options.idle,
        options.churn
    );

    let mut idle = Vec::with_capacity(options.idle);
    for _ in 0..options.idle {
        idle.push(connect(&url).await?);
    }
    let totals = Arc::new(Totals {
        chat: Mutex::new(histogram()?),
        api: Mutex::new(histogram()?),
        chat_sent: AtomicU64::new(0),
        api_sent: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let started = Instant::now();
    let stop = started + Duration::from_secs(options.minutes * 60);
    let every = Duration::from_secs_f64(options.chatters as f64 / options.chat_rate.max(1) as f64);
    let mut tasks = Vec::new();
    for id in 0..options.chatters {
        tasks.push(tokio::spawn(chatter(
            id,
            url.clone(),
            every,
            totals.clone(),
            stop,
        )));
    }
    tasks.push(tokio::spawn(api_caller(
        base.clone(),
        key,
        options.api_rate,
        totals.clone(),
        stop,
    )));
    tasks.push(tokio::spawn(churner(
        url.clone(),
        options.churn,
        totals.clone(),
        stop,
    )));

    let mut windows: Vec<Window> = Vec::new();
    let report_every = Duration::from_secs(options.report_secs.max(5));
    let mut next_report = started + report_every;
    while next_report <= stop + Duration::from_millis(10) {
        tokio::time::sleep_until(next_report.into()).await;
        next_report += report_every;
        let (chat_p99_ms, chat_count) = {
            let mut chat = totals.chat.lock().await;
            let figures = (super::percentile_ms(&chat, 0.99), chat.len());
            chat.reset();
            figures
        };
        let (api_p99_ms, api_count) = {
            let mut api = totals.api.lock().await;
            let figures = (super::percentile_ms(&api, 0.99), api.len());
            api.reset();
            figures
        };
        let window = Window {
            rss_kib: resident_kib(pid)?,
            anon_kib: status_kib(pid, "RssAnon")?,
            file_kib: status_kib(pid, "RssFile")?,
            shmem_kib: status_kib(pid, "RssShmem")?,
            database_kib: database_kib(&data_dir.0)?,
            descriptors: descriptors(pid)?,
            chat_p99_ms,
            api_p99_ms,
        };
        println!(
            "t={:>4}s rss={} KiB (anon {}, file {}, shmem {}) database={} KiB fds={} chat: {} replies p99={:.1} ms; api: {} calls p99={:.1} ms; errors so far {}",
            started.elapsed().as_secs(),
            window.rss_kib,
            window.anon_kib,
            window.file_kib,
            window.shmem_kib,
            window.database_kib,
            window.descriptors,
            chat_count,
            window.chat_p99_ms,
            api_count,
            window.api_p99_ms,
            totals.errors.load(Ordering::Relaxed)
        );
        windows.push(window);
    }
    for task in tasks {
        let _ = task.await;
    }
    drop(idle);
    let _ = child.kill().await;
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        bail!("the run was shorter than one report window");
    };
    println!(
        "rss_start_kib={} rss_end_kib={} rss_growth_kib={} anon_growth_kib={} file_growth_kib={} shmem_growth_kib={} database_growth_kib={} fds_start={} fds_end={} chat_p99_start_ms={:.1} chat_p99_end_ms={:.1} api_p99_start_ms={:.1} api_p99_end_ms={:.1} chat_replies={} api_calls={} errors={}",
        first.rss_kib,
        last.rss_kib,
        last.rss_kib as i64 - first.rss_kib as i64,
        last.anon_kib as i64 - first.anon_kib as i64,
        last.file_kib as i64 - first.file_kib as i64,
        last.shmem_kib as i64 - first.shmem_kib as i64,
        last.database_kib as i64 - first.database_kib as i64,
        first.descriptors,
        last.descriptors,
        first.chat_p99_ms,
        last.chat_p99_ms,
        first.api_p99_ms,
        last.api_p99_ms,
        totals.chat_sent.load(Ordering::Relaxed),
        totals.api_sent.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed)
    );
    Ok(())
}
