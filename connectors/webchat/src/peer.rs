//! Where a chat socket comes from: the page's origin, as the upgrade request tells it, and the
//! client's address, as the app's HTTP edge resolved it ([`switchboard_connector::ClientAddress`]).
//! The origin decides whether the socket may open at all; the address keys the per-address
//! rate limits.

use std::net::IpAddr;

use crate::session::normalise_origin;

/// Where a socket comes from, as the upgrade request tells.
pub(crate) struct Peer {
    /// The page's origin (`Origin` header), normalised.
    pub(crate) origin: Option<String>,
    pub(crate) origin_allowed: bool,
    pub(crate) address: Option<IpAddr>,
}

/// Whether a page of `origin` may open the socket. No configured origins: only the server's
/// own pages, whose origin names the host the request was sent to.
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        // Browsers always send Origin on a WebSocket upgrade; a socket without one is a script
        // that could claim any origin, so it gets no identity and no exemption either.
        return false;
    };
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|entry| normalise_origin(entry) == origin);
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    match (authority, host) {
        (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host.trim()),
        _ => false,
    }
}
