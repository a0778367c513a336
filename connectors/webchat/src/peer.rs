//! Where a chat socket comes from: the page's origin, as the upgrade request tells it, and the
//! client's address, as the app's HTTP edge resolved it ([`switchboard_connector::ClientAddress`]).
//! The origin decides whether the socket may open at all; the address keys the per-address
//! rate limits; the browser's preferred language is the conversation's language hint.

use std::net::IpAddr;

use crate::session::normalise_origin;

/// Where a socket comes from, as the upgrade request tells.
pub(crate) struct Peer {
    /// The page's origin (`Origin` header), normalised.
    pub(crate) origin: Option<String>,
    pub(crate) origin_allowed: bool,
    pub(crate) address: Option<IpAddr>,
    /// The browser's preferred language (`Accept-Language`), such as `es-ES`.
    pub(crate) language: Option<Box<str>>,
}

/// The longest language tag taken from a request; real ones are a few characters.
const MAX_LANGUAGE_TAG: usize = 35;

/// The first language of an `Accept-Language` header by quality, if it is a plausible tag (not
/// `*`, letters, digits and hyphens, at most [`MAX_LANGUAGE_TAG`] characters).
pub(crate) fn preferred_language(header: &str) -> Option<Box<str>> {
    accept_language::parse(header)
        .into_iter()
        .next()
        .filter(|tag| {
            tag.len() <= MAX_LANGUAGE_TAG
                && tag.starts_with(|character: char| character.is_ascii_alphabetic())
                && tag
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '-')
        })
        .map(String::into_boxed_str)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_language_is_the_best_quality_tag() {
        assert_eq!(
            preferred_language("es-ES,es;q=0.9,en;q=0.8").as_deref(),
            Some("es-ES")
        );
        assert_eq!(preferred_language("en;q=0.5, ca").as_deref(), Some("ca"));
        assert_eq!(preferred_language("*"), None);
        assert_eq!(preferred_language(""), None);
        assert_eq!(preferred_language("<script>"), None);
        assert_eq!(preferred_language(&"a".repeat(200)), None);
    }
}
