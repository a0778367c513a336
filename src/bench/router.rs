//! `switchboard bench router`: web chat visitors over real WebSockets against the router.
//!
//! Three modes:
//! - closed loop (default): every visitor sends a message, waits for the bot's reply, sends the
//!   next; measures the most the router sustains;
//! - `--rate R`: open loop at R messages/s in all, spread over the visitors, sent on schedule
//!   whether or not replies have come; measures latency at a given load;
//! - `--idle N`: N visitors connect, say hello and sit idle; measures the server's resident
//!   memory ([`super::idle`]). The server runs as a child process so that the figure is the
//!   server's alone.
//!
//! `--baseline` first drives a bare server of the same frames ([`super::baseline`]) with the
//! same load, and prints the router's throughput as a share of that ceiling.
//!
//! Without `--url` the server is started in-process (or as a child for `--idle`) with the echo
//! assistant, on `--database` (default: a fresh SQLite file), so the figures are the router's,
//! not the assistant's. With `--url` it drives a server already running; that server's web chat
//! limits (its `[[channel]]` table's `rate_*`, `ip_*` and `frame_*` keys) and
//! `http.max_connections_per_ip` must allow the load, since every visitor comes from one
//! address.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::customers::{self, Script};
use crate::app::{App, AppOptions};
use crate::assistant::EchoAssistant;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct RouterBench {
    /// Drive a server that is already running, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: Option<String>,
    /// Database for the in-process server (sqlite://... or postgres://...); default: a new
    /// SQLite file in a temporary directory.
    #[arg(long)]
    database: Option<String>,
    /// Concurrent visitors.
    #[arg(long, default_value_t = 200)]
    visitors: usize,
    /// Seconds of measured load (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Open loop: messages per second in all. 0 means closed loop (as fast as replies come).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Memory mode: connect this many idle visitors and report the server's resident memory.
    #[arg(long)]
    idle: Option<usize>,
    /// First run the same load against a bare WebSocket server of the same frames (no storage,
    /// no router) and print the router's figure as a share of it.
    #[arg(long)]
    baseline: bool,
    /// The assistant of the in-process server: `echo` answers every message at once (the
    /// router's own cost); `builtin` is the assistant `serve` runs (the configured intents,
    /// knowledge and shop), and needs `--messages`.
    #[arg(long, value_enum, default_value_t = BenchAssistant::Echo)]
    assistant: BenchAssistant,
    /// Customer messages to send instead of generated ones: a CSV file with a header and a
    /// `text` column (`eval/intents-dev.csv` is one). Closed loop, in-process server only.
    #[arg(long)]
    messages: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchAssistant {
    Echo,
    Builtin,
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    ws_url: String,
    app: Option<App>,
    _data_dir: Option<tempdir::TempDir>,
}

pub(crate) mod tempdir {
    /// A directory removed on drop (the bench's scratch database).
    pub struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub fn new(label: &str) -> std::io::Result<TempDir> {
            let path = std::env::temp_dir().join(format!(
                "switchboard-bench-{label}-{}",
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&path)?;
            Ok(TempDir(path))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) fn ws_url(base: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .or_else(|| {
            base.strip_prefix("https://")
                .map(|rest| format!("wss://{rest}"))
        })
        .context("--url must start with http:// or https://")?;
    Ok(format!("{rest}/channels/webchat/web/ws"))
}

/// The web chat keys of a server the benchmark drives: every simulated visitor comes from
/// 127.0.0.1, so the per-visitor, per-address and per-socket limits are lifted.
const LIFTED_WEBCHAT: [(&str, i64); 8] = [
    ("rate_per_minute", 1_000_000),
    ("rate_burst", 100_000),
    ("ip_rate_per_minute", 10_000_000),
    ("ip_rate_burst", 1_000_000),
    ("ip_sessions_per_minute", 10_000_000),
    ("ip_sessions_burst", 1_000_000),
    ("frame_rate_per_minute", 1_000_000),
    ("frame_rate_burst", 100_000),
];

/// The `web` web chat table with its limits lifted.
pub(crate) fn lifted_web_table() -> serde_json::Map<String, serde_json::Value> {
    let mut web = serde_json::Map::new();
    web.insert("kind".into(), "webchat".into());
    web.insert("name".into(), "web".into());
    for (key, value) in LIFTED_WEBCHAT {
        web.insert(key.into(), value.into());
    }
    web
}

/// A config file for a server process the benchmark drives: the web chat and connection
/// limits lifted (channel tables cannot be set through the environment); everything else
/// comes from the defaults and the environment.
fn lifted_config_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let mut text = String::from(
        "[http]\nmax_connections = 100000\nmax_connections_per_ip = 0\n\n[[channel]]\nkind = \"webchat\"\nname = \"web\"\n",
    );
    for (key, value) in LIFTED_WEBCHAT {
        text.push_str(&format!("{key} = {value}\n"));
    }
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).context("writing the benchmark's config file")?;
    Ok(path)
}

/// Start `switchboard serve` as a child process on a free loopback port, with the lifted
/// config ([`lifted_config_file`]) and its data in `data_dir`, the echo assistant and `env`
/// besides; wait until it is ready. The child is killed when dropped. Returns it and its base
/// URL.
pub(crate) async fn start_server_process(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(lifted_config_file(data_dir)?)
        .env("SWITCHBOARD__DATA_DIR", data_dir)
        .env("SWITCHBOARD__HTTP__HOST", "127.0.0.1")
        .env("SWITCHBOARD__HTTP__PORT", port.to_string())
        .env("SWITCHBOARD__ASSISTANT__KIND", "echo")
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server process")?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await?;
    Ok((child, base))
}

pub(super) fn bench_settings(
    mut settings: Settings,
    data_dir: &std::path::Path,
    database: &Option<String>,
) -> Settings {
    settings.data_dir = data_dir.to_path_buf();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.database.url = database.clone().unwrap_or_default();
    settings.assistant.kind = "echo".into();
    settings.channel = crate::config::ChannelTables(vec![lifted_web_table()]);
    settings.http.max_connections = 100_000;
    settings.http.max_connections_per_ip = 0;
    settings
}

async fn start_in_process(options: &RouterBench, settings: Settings) -> anyhow::Result<Server> {
    let data_dir = tempdir::TempDir::new("router")?;
    let mut settings = bench_settings(settings, &data_dir.0, &options.database);
    let assistant: Option<Arc<dyn crate::assistant::Assistant>> = match options.assistant {
        BenchAssistant::Echo => Some(Arc::new(EchoAssistant)),
        BenchAssistant::Builtin => {
            settings.assistant.kind = "builtin".into();
            None
        }
    };
    let app = App::start(
        settings,
        AppOptions {
            assistant,
            ..AppOptions::default()
        },
    )
    .await?;
    Ok(Server {
        ws_url: format!("ws://{}/channels/webchat/web/ws", app.addr),
        app: Some(app),
        _data_dir: Some(data_dir),
    })
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let address = base.trim_start_matches("http://").to_string();
    for _ in 0..300 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let request =
                format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response).await;
                if response.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server at {base} did not become ready")
}

/// Connect and complete the hello/welcome handshake.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Socket> {
    Ok(connect_session(url).await?.0)
}

/// Connect as a new visitor: the socket after its welcome, and the visitor's id.
pub(crate) async fn connect_session(url: &str) -> anyhow::Result<(Socket, String)> {
    let (socket, _) = tokio_tungstenite::connect_async_with_config(
        same_origin_request(url)?,
        Some(client_config()),
        true,
    )
    .await?;
    welcome(socket).await
}

/// The benches' visitor sockets read with a buffer sized for chat frames. Tungstenite's
/// default (128 KiB, zeroed before every read) made the visitors' reads cost more of the two
/// cores than the server's.
pub(crate) fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// Say hello as a new visitor and wait for the welcome: the socket and the visitor's id.
pub(super) async fn welcome(mut socket: Socket) -> anyhow::Result<(Socket, String)> {
    socket
        .send(Message::text(r#"{"type":"hello","token":null}"#))
        .await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"welcome\"") => {
                let welcome: serde_json::Value = serde_json::from_str(&text)?;
                let visitor_id = welcome["visitor_id"]
                    .as_str()
                    .context("a welcome without visitor_id")?
                    .to_string();
                return Ok((socket, visitor_id));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("closed before welcome"),
        }
    }
}

/// A WebSocket request that says it comes from a page of the server itself, as the widget on
/// the demo page would (the server refuses other origins by default).
pub(crate) fn same_origin_request(
    url: &str,
) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.to_string())
        .context("the URL names a host")?;
    let scheme = if url.starts_with("wss:") {
        "https"
    } else {
        "http"
    };
    request
        .headers_mut()
        .insert("origin", format!("{scheme}://{authority}").parse()?);
    Ok(request)
}

fn message_frame(visitor: usize, n: u64) -> Message {
    Message::text(format!(
        r#"{{"type":"message","client_id":"v{visitor}-m{n}","text":"bench message {n} from visitor {visitor}"}}"#
    ))
}

fn is_bot_reply(text: &str) -> bool {
    text.starts_with(r#"{"type":"message""#) && text.contains(r#""author":"bot""#)
}

struct Totals {
    sent: AtomicU64,
    replies: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Totals {
    /// One visitor's figures: messages sent, replies in the window and their latencies.
    async fn add(
        &self,
        sent: u64,
        answered: u64,
        latency: &hdrhistogram::Histogram<u64>,
    ) -> anyhow::Result<()> {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.replies.fetch_add(answered, Ordering::Relaxed);
        self.latency.lock().await.add(latency)?;
        Ok(())
    }
}

pub async fn run(options: RouterBench, settings: Settings) -> anyhow::Result<()> {
    // Each side of an idle session holds a descriptor: the server process and this one
    // raise their limits alike (the server inherits this process's).
    let fd_limit = super::raise_fd_limit_to(options.idle.map_or(0, |idle| idle as u64 + 1_000));
    if let Some(idle) = options.idle {
        if options.url.is_some() {
            bail!(
                "--idle measures a server it starts itself; it cannot read another host's memory"
            );
        }
        return super::idle::run(&options.database, idle, fd_limit).await;
    }
    if options.messages.is_some() && (options.url.is_some() || options.rate != 0) {
        bail!(
            "--messages drives the in-process server in a closed loop: leave out --url and --rate"
        );
    }
    if options.assistant == BenchAssistant::Builtin && options.messages.is_none() {
        bail!(
            "--assistant builtin needs --messages FILE: generated texts are not customer \
             messages, and the assistant hands such visitors over after two unsure turns"
        );
    }
    // Read before the server starts: a bad file is refused without a server to tear down.
    let texts = options
        .messages
        .as_deref()
        .map(customers::read_texts)
        .transpose()?;
    let mut server = match &options.url {
        Some(url) => Server {
            ws_url: ws_url(url)?,
            app: None,
            _data_dir: None,
        },
        None => start_in_process(&options, settings).await?,
    };
    let target = options
        .url
        .clone()
        .unwrap_or_else(|| format!("in-process, database {}", describe_db(&options.database)));
    let mode = if options.rate == 0 {
        "closed loop".to_string()
    } else {
        format!("open loop at {} msg/s", options.rate)
    };
    let script = match (texts, &server.app) {
        (Some(texts), Some(app)) => Some(Arc::new(Script::new(texts, app.router.clone()))),
        _ => None,
    };
    let assistant = match options.assistant {
        BenchAssistant::Echo => "echo assistant",
        BenchAssistant::Builtin => "builtin assistant",
    };
    let texts = match (&script, &options.messages) {
        (Some(script), Some(path)) => {
            format!(
                "{} customer messages from {}",
                script.messages(),
                path.display()
            )
        }
        _ => "generated messages".to_string(),
    };
    println!(
        "bench router: {} visitors, {} s, {mode}, {assistant}, {texts}, against {target}",
        options.visitors, options.seconds
    );

    let ceiling = if options.baseline {
        let bare = super::baseline::start().await?;
        println!("baseline: the same load against a bare server of the same frames");
        let figures = load(
            &bare.ws_url,
            options.visitors,
            options.seconds,
            options.rate,
            None,
        )
        .await?;
        println!("router: the load against Switchboard");
        Some(figures)
    } else {
        None
    };
    let figures = load(
        &server.ws_url,
        options.visitors,
        options.seconds,
        options.rate,
        script.clone(),
    )
    .await?;
    let (msgs_per_s, p50, p90, p99, max) = (
        figures.msgs_per_s,
        figures.p50_ms,
        figures.p90_ms,
        figures.p99_ms,
        figures.max_ms,
    );
    // Writes the store did again because another writer won a race on a unique constraint
    // (an event or message number): in process only.
    let retried = match &server.app {
        Some(app) => format!(" retried_writes={}", app.store.retried_writes()),
        None => String::new(),
    };
    if let Some(app) = server.app.take() {
        app.shutdown().await;
    }
    let cpu = match figures.cpu_us_per_msg {
        Some(per_msg) => format!(" cpu_us_per_msg={per_msg:.1}"),
        None => String::new(),
    };
    let versus = match ceiling {
        Some(bare) => {
            // The cost per message as a share too: the bare server's CPU per message over the
            // router's, which holds whether or not the router filled the cores.
            let cpu_share = match (bare.cpu_us_per_msg, figures.cpu_us_per_msg) {
                (Some(bare_cpu), Some(router_cpu)) if router_cpu > 0.0 => format!(
                    " baseline_cpu_us_per_msg={bare_cpu:.1} cpu_share_of_baseline={:.3}",
                    bare_cpu / router_cpu
                ),
                _ => String::new(),
            };
            format!(
                " baseline_msgs_per_s={:.0} baseline_p99_ms={:.2} share_of_baseline={:.3}{cpu_share}",
                bare.msgs_per_s,
                bare.p99_ms,
                msgs_per_s / bare.msgs_per_s.max(f64::MIN_POSITIVE)
            )
        }
        None => String::new(),
    };
    let left_bot = match &script {
        Some(script) => format!(
            " conversations_left_bot={}",
            script.left_bot.load(Ordering::Relaxed)
        ),
        None => String::new(),
    };
    println!(
        "msgs_per_s={msgs_per_s:.0} p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} max_ms={max:.2} visitors={} errors={}{cpu}{retried}{left_bot}{versus}",
        options.visitors, figures.errors
    );
    Ok(())
}

/// What one load run measured.
#[derive(Debug, Clone, Copy)]
pub struct LoadFigures {
    pub msgs_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// This process's CPU time (every thread: the server when it runs in-process, and the
    /// load generator) over the measured window, per answered message.
    pub cpu_us_per_msg: Option<f64>,
}

/// Drive `visitors` web chat visitors against `ws_url` for `seconds` (after a second of
/// warm-up): closed loop, or open loop at `rate` messages/s in all; generated texts, or the
/// customer messages of `script` (closed loop). Prints what it saw.
pub async fn load(
    ws_url: &str,
    visitors: usize,
    seconds: u64,
    rate: u64,
    script: Option<Arc<Script>>,
) -> anyhow::Result<LoadFigures> {
    let options = RouterBench {
        url: None,
        database: None,
        visitors,
        seconds,
        rate,
        idle: None,
        baseline: false,
        assistant: BenchAssistant::Echo,
        messages: None,
    };
    let totals = Arc::new(Totals {
        sent: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let mut sockets = Vec::with_capacity(options.visitors);
    for _ in 0..options.visitors {
        sockets.push(connect_session(ws_url).await?);
    }
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + Duration::from_secs(options.seconds);
    let per_visitor_interval = if options.rate == 0 {
        None
    } else {
        Some(Duration::from_secs_f64(
            options.visitors as f64 / options.rate as f64,
        ))
    };
    let cpu_window = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let start = super::process_cpu();
        tokio::time::sleep_until(stop_at.into()).await;
        super::process_cpu()?.checked_sub(start?)
    });
    let mut tasks = Vec::with_capacity(options.visitors);
    for (visitor, session) in sockets.into_iter().enumerate() {
        let totals = totals.clone();
        let script = script.clone();
        let ws_url = ws_url.to_string();
        tasks.push(tokio::spawn(async move {
            let result = match (per_visitor_interval, script) {
                (None, Some(script)) => {
                    scripted(
                        visitor,
                        session,
                        &ws_url,
                        &script,
                        &totals,
                        measure_from,
                        stop_at,
                    )
                    .await
                }
                (None, None) => {
                    closed_loop(visitor, session.0, &totals, measure_from, stop_at).await
                }
                (Some(interval), _) => {
                    open_loop(visitor, session.0, &totals, interval, measure_from, stop_at).await
                }
            };
            if let Err(error) = result {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("visitor {visitor}: {error}");
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let cpu = cpu_window.await.ok().flatten();
    let measured = options.seconds as f64;
    let replies = totals.replies.load(Ordering::Relaxed);
    let cpu_us_per_msg = cpu
        .filter(|_| replies > 0)
        .map(|cpu| cpu.as_secs_f64() * 1e6 / replies as f64);
    let latency = totals.latency.lock().await;
    let msgs_per_s = replies as f64 / measured;
    let (p50, p90, p99, max) = (
        super::percentile_ms(&latency, 0.50),
        super::percentile_ms(&latency, 0.90),
        super::percentile_ms(&latency, 0.99),
        latency.max() as f64 / 1000.0,
    );
    println!(
        "messages answered in the measured window: {replies} (sent {}), visitor errors: {}",
        totals.sent.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed)
    );
    println!(
        "latency inbound frame -> reply frame: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    if let (Some(cpu), Some(per_msg)) = (cpu, cpu_us_per_msg) {
        println!(
            "this process's CPU in the measured window: {:.2} s, {per_msg:.1} us per answered message",
            cpu.as_secs_f64()
        );
    }
    Ok(LoadFigures {
        msgs_per_s,
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
        max_ms: max,
        errors: totals.errors.load(Ordering::Relaxed),
        cpu_us_per_msg,
    })
}

pub(super) fn describe_db(database: &Option<String>) -> String {
    match database {
        Some(url) => crate::config::redact_url(url),
        None => "sqlite (temporary file)".into(),
    }
}

async fn closed_loop(
    visitor: usize,
    mut socket: Socket,
    totals: &Totals,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<()> {
    let mut n = 0u64;
    let mut local = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut answered = 0u64;
    while Instant::now() < stop_at {
        n += 1;
        let sent_at = Instant::now();
        socket.send(message_frame(visitor, n)).await?;
        wait_reply(&mut socket).await?;
        let now = Instant::now();
        if sent_at >= measure_from && now <= stop_at {
            local.record(now.duration_since(sent_at).as_micros().max(1) as u64)?;
            answered += 1;
        }
    }
    totals.add(n, answered, &local).await?;
    let _ = socket.close(None).await;
    Ok(())
}

/// [`customers::closed_loop`] with its figures added to `totals`.
async fn scripted(
    visitor: usize,
    session: (Socket, String),
    ws_url: &str,
    script: &Script,
    totals: &Totals,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<()> {
    let mut local = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (sent, answered) = customers::closed_loop(
        visitor,
        session,
        ws_url,
        script,
        &mut local,
        measure_from,
        stop_at,
    )
    .await?;
    totals.add(sent, answered, &local).await
}

async fn wait_reply(socket: &mut Socket) -> anyhow::Result<()> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no reply within 30 s")?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                if is_bot_reply(&text) {
                    return Ok(());
                }
                if text.contains(r#""type":"error""#) {
                    bail!("server error: {text}");
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection closed"),
        }
    }
}

async fn open_loop(
    visitor: usize,
    socket: Socket,
    totals: &Totals,
    interval: Duration,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<()> {
    let (mut sink, mut stream) = socket.split();
    // Replies of one conversation come back in order, so a queue of send times matches them.
    let pending: Arc<std::sync::Mutex<std::collections::VecDeque<Instant>>> = Arc::default();
    let receiver = {
        let pending = pending.clone();
        async move {
            let mut local = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut answered = 0u64;
            let grace = stop_at + Duration::from_secs(5);
            loop {
                let remaining = grace.saturating_duration_since(Instant::now());
                let frame = match tokio::time::timeout(remaining, stream.next()).await {
                    Ok(frame) => frame,
                    Err(_) => break,
                };
                let Some(frame) = frame else { break };
                let Message::Text(text) = frame? else {
                    continue;
                };
                if !is_bot_reply(&text) {
                    continue;
                }
                let now = Instant::now();
                let sent_at = pending.lock().expect("pending lock").pop_front();
                if let Some(sent_at) = sent_at {
                    if sent_at >= measure_from && sent_at <= stop_at {
                        local.record(now.duration_since(sent_at).as_micros().max(1) as u64)?;
                        answered += 1;
                    }
                    if sent_at > stop_at
                        || (Instant::now() > stop_at
                            && pending.lock().expect("pending lock").is_empty())
                    {
                        break;
                    }
                }
            }
            anyhow::Ok((local, answered))
        }
    };
    let sender = async {
        // Spread visitors over the interval so that the load is smooth, not in waves.
        let offset = interval.mul_f64((visitor as f64 * 0.618_034) % 1.0);
        let mut next = Instant::now() + offset;
        let mut n = 0u64;
        while next < stop_at {
            tokio::time::sleep_until(next.into()).await;
            n += 1;
            pending
                .lock()
                .expect("pending lock")
                .push_back(Instant::now());
            sink.send(message_frame(visitor, n)).await?;
            next += interval;
        }
        anyhow::Ok(n)
    };
    let (sent, received) = tokio::join!(sender, receiver);
    let sent = sent?;
    let (local, answered) = received?;
    totals.add(sent, answered, &local).await
}
