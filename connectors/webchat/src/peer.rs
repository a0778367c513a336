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

/// The longest `Accept-Language` header read; browsers send a few dozen bytes.
const MAX_HEADER: usize = 256;

/// The longest language tag taken from a request; real ones are a few characters.
const MAX_LANGUAGE_TAG: usize = 35;

/// The language of an `Accept-Language` header with the highest quality (the first of equals),
/// if the header is short and the tag plausible: letters, digits and hyphens, starting with a
/// letter, at most [`MAX_LANGUAGE_TAG`] characters; not `*`. A quality that is not a number in
/// (0, 1] drops its entry.
///
/// Parsed here rather than by the `accept-language` crate: its sort compares qualities that may
/// be NaN (`q=NaN` parses as a float), which makes the standard library's sort panic on a
/// header anyone can send.
pub(crate) fn preferred_language(header: &str) -> Option<Box<str>> {
    if header.len() > MAX_HEADER {
        return None;
    }
    let mut best: Option<(&str, f32)> = None;
    for entry in header.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let tag = parts.next().unwrap_or_default();
        let quality = match parts.next() {
            None => 1.0,
            Some(parameter) => match parameter
                .strip_prefix("q=")
                .and_then(|value| value.parse::<f32>().ok())
            {
                Some(quality) if quality > 0.0 && quality <= 1.0 => quality,
                _ => continue,
            },
        };
        let plausible = tag.len() <= MAX_LANGUAGE_TAG
            && tag.starts_with(|character: char| character.is_ascii_alphabetic())
            && tag
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '-');
        if plausible && best.is_none_or(|(_, best_quality)| quality > best_quality) {
            best = Some((tag, quality));
        }
    }
    best.map(|(tag, _)| tag.into())
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
        assert_eq!(
            preferred_language("fr;q=0.2, *, es;q=0.8").as_deref(),
            Some("es")
        );
        assert_eq!(preferred_language("*"), None);
        // Qualities that are not numbers in (0, 1] drop their entry, and nothing panics.
        let hostile = "a;q=NaN,a;q=0.1,a;q=0.9,".repeat(8);
        assert_eq!(preferred_language(&hostile).as_deref(), Some("a"));
        assert_eq!(preferred_language("en;q=0, ca;q=inf, es;q=-1"), None);
        assert_eq!(preferred_language(&"es,".repeat(200)), None);
        assert_eq!(preferred_language(""), None);
        assert_eq!(preferred_language("<script>"), None);
        assert_eq!(preferred_language(&"a".repeat(200)), None);
    }
}
