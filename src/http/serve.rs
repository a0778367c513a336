//! The accept loop: HTTP/1.1 over TCP with the limits a public edge needs.
//!
//! `axum::serve` has no header-read timeout and no connection caps, so a client that sends
//! half a request header holds its socket forever, and a few thousand such clients exhaust the
//! process's descriptors. Here every connection needs a permit (a global cap and one per client
//! address), hyper closes a connection whose header does not arrive in time, and refusals are
//! counted in the metrics. HTTP/1.1 only: the server speaks plain TCP, where HTTP/2 (h2c) is
//! not used by browsers, and version sniffing would wait for bytes that a slow client never
//! sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use switchboard_connector::ClientAddress;

use crate::http::edge::client_address;
use crate::metrics::Metrics;

/// Connection limits of the HTTP server (`[http]` in the config file).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A request's header must arrive within this, or the connection is closed.
    pub header_read_timeout: Duration,
    /// Open connections at once (WebSockets included); more are closed on accept.
    pub max_connections: usize,
    /// Open connections from one client address; 0: no per-address cap.
    pub max_connections_per_ip: usize,
    /// The header a trusted reverse proxy sets to the client address; empty: the TCP peer.
    pub client_address_header: Arc<str>,
}

/// Open connections per client address; a slot is given back when its guard drops.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    fn acquire(table: &Arc<PerAddress>, address: IpAddr, limit: usize) -> Option<AddressSlot> {
        if limit == 0 {
            return Some(AddressSlot {
                table: table.clone(),
                address,
            });
        }
        let mut open = table.open.lock().expect("connection table lock");
        let count = open.entry(address).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: table.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("connection table lock");
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// What one accepted connection holds until it closes.
struct Held {
    _permit: OwnedSemaphorePermit,
    _slot: AddressSlot,
    metrics: Arc<Metrics>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Serve `app` on `listener` until `stop`; then finish open requests (WebSockets close with
/// the channels) and return once every connection is gone.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.edge_rejection("max_connections");
            tracing::debug!(%peer, "connection refused: too many open connections");
            continue;
        };
        let Some(slot) =
            PerAddress::acquire(&per_address, peer.ip(), limits.max_connections_per_ip)
        else {
            metrics.edge_rejection("max_connections_per_ip");
            tracing::debug!(%peer, "connection refused: too many from this address");
            continue;
        };
        metrics.connection_opened();
        let held = Held {
            _permit: permit,
            _slot: slot,
            metrics: metrics.clone(),
        };
        // Chat frames are small and latency-bound: no Nagle delay.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(error = %error, "could not set TCP_NODELAY");
        }
        let trusted_header = limits.client_address_header.clone();
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                let client = client_address(request.headers(), peer, &trusted_header);
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(ClientAddress(client));
                request
            });
        let service = TowerToHyperService::new(service);
        let header_read_timeout = limits.header_read_timeout;
        let stop = stop.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _held = held;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                if error.is_timeout() {
                    metrics.edge_rejection("header_read_timeout");
                }
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}
