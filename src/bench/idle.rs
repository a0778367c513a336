//! `switchboard bench router --idle N`: N web chat visitors connect, say hello and sit idle,
//! and the bench reads the server's resident memory before and after. The server runs as a
//! child process so that the figure is the server's alone.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::router::{
    Socket, client_config, describe_db, same_origin_request, start_server_process, tempdir,
    welcome, ws_url,
};

/// A server process started for the measurement, killed on drop.
struct ChildServer {
    ws_url: String,
    child: tokio::process::Child,
    _data_dir: tempdir::TempDir,
}

/// Measure `idle` sessions against a server started on `database` (default: a fresh SQLite
/// file), with this process's descriptor limit at `fd_limit` (0: unlimited).
pub(super) async fn run(
    database: &Option<String>,
    idle: usize,
    fd_limit: u64,
) -> anyhow::Result<()> {
    if idle > 250 * 20_000 {
        bail!("--idle goes up to 5,000,000 sessions (250 loopback addresses of 20,000)");
    }
    if fd_limit > 0 && (fd_limit as usize) < idle + 100 {
        bail!("open files limit {fd_limit} is too low for {idle} sessions; raise ulimit -n");
    }
    let mut server = start_child(database).await?;
    let pid = server.child.id().context("server process id")?;
    println!(
        "bench router --idle: {idle} idle web chat sessions against a server process (pid {pid}), database {}",
        describe_db(database)
    );
    let before = resident_kib(pid)?;
    let mut sockets = Vec::with_capacity(idle);
    let started = Instant::now();
    let mut batch = Vec::new();
    for index in 0..idle {
        // 20,000 sessions per source address: 127.0.0.1, then 127.0.0.2, ...
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (index / 20_000) as u8);
        batch.push(connect_from(&server.ws_url, source));
        if batch.len() == 100 {
            for socket in futures::future::join_all(batch.drain(..)).await {
                sockets.push(socket?);
            }
        }
    }
    for socket in futures::future::join_all(batch.drain(..)).await {
        sockets.push(socket?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = resident_kib(pid)?;
    let rss_mb = after as f64 / 1024.0;
    let per_session_kib = (after.saturating_sub(before)) as f64 / idle as f64;
    println!(
        "server resident memory: {:.1} MB before, {rss_mb:.1} MB with {idle} sessions ({per_session_kib:.1} KiB per session); connected in {connect_secs:.1} s",
        before as f64 / 1024.0
    );
    drop(sockets);
    let _ = server.child.kill().await;
    println!(
        "idle_sessions={idle} rss_mb={rss_mb:.1} baseline_mb={:.1} per_session_kib={per_session_kib:.1}",
        before as f64 / 1024.0
    );
    Ok(())
}

async fn start_child(database: &Option<String>) -> anyhow::Result<ChildServer> {
    let data_dir = tempdir::TempDir::new("idle")?;
    let database = database.clone().unwrap_or_default();
    let (child, base) =
        start_server_process(&data_dir.0, &[("SWITCHBOARD__DATABASE__URL", &database)]).await?;
    Ok(ChildServer {
        ws_url: ws_url(&base)?,
        child,
        _data_dir: data_dir,
    })
}

/// A visitor's connection and handshake from the loopback address `source`. One source
/// address reaches one server port from at most as many sockets as there are ephemeral ports
/// (about 28,000 by default), so many sessions are spread over several: all of 127.0.0.0/8 is
/// the loopback.
async fn connect_from(url: &str, source: std::net::Ipv4Addr) -> anyhow::Result<Socket> {
    let request = same_origin_request(url)?;
    let authority = request
        .uri()
        .authority()
        .context("the URL names a host")?
        .as_str()
        .to_string();
    let server = tokio::net::lookup_host(&authority)
        .await?
        .find(std::net::SocketAddr::is_ipv4)
        .with_context(|| format!("{authority} has no IPv4 address"))?;
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind(std::net::SocketAddr::new(source.into(), 0))
        .with_context(|| format!("binding a client socket to {source}"))?;
    let stream = tcp.connect(server).await?;
    stream.set_nodelay(true)?;
    let (socket, _) = tokio_tungstenite::client_async_with_config(
        request,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(client_config()),
    )
    .await?;
    Ok(welcome(socket).await?.0)
}

pub(crate) fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// One `kB` field of `/proc/PID/status` (`VmRSS`, `RssAnon`, `RssFile`, `RssShmem`).
pub(crate) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} not found in /proc/{pid}/status"))
}
