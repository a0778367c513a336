//! What every request and response at the public edge shares: the client's address (the TCP
//! peer, or the trusted proxy's header), security headers, the API's JSON error body for
//! rejections that happen before a handler runs (query parsing, content type, method, size,
//! timeouts), `Content-Type` enforcement on JSON endpoints, per-credential rate limits, and
//! the `/metrics` token.
//!
//! The hooks for routes added later (a channel's webhooks under `/channels/<kind>/<name>/`,
//! the console's pages and JSON API): every route gets the headers, the timeout and the client
//! address (`switchboard_connector::ClientAddress` in the request's extensions, set by
//! [`crate::http::serve`]); JSON errors and the content type
//! apply under the prefixes of [`JSON_PREFIXES`]; a route that authenticates a credential (an
//! API key, a console session) checks it against a [`CredentialLimits`].

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::Digest;

use crate::http::api::ApiError;

/// Paths whose answers are JSON: their rejections are the API's JSON error body, and a body
/// sent to them must say it is JSON. The console's JSON API joins this list when it lands.
pub const JSON_PREFIXES: [&str; 2] = ["/api/", "/console/api/"];

fn is_json_path(path: &str) -> bool {
    JSON_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// The client's address: the TCP peer, or, when `trusted_header` is set (a reverse proxy the
/// operator trusts sets it), the last address in that header, the one the proxy appended.
pub fn client_address(
    headers: &axum::http::HeaderMap,
    peer: SocketAddr,
    trusted_header: &str,
) -> IpAddr {
    if !trusted_header.is_empty()
        && let Some(text) = headers.get(trusted_header).and_then(|v| v.to_str().ok())
        // Whatever stands before the last entry, the client may have written itself.
        && let Some(address) = text
            .rsplit(',')
            .next()
            .and_then(|entry| entry.trim().parse::<IpAddr>().ok())
    {
        return address;
    }
    peer.ip()
}

/// Requests per credential (an API key, a console session), keyed by the credential's
/// SHA-256 so the table never holds a secret. GCRA buckets from `governor`.
pub struct CredentialLimits {
    limiter: DefaultKeyedRateLimiter<[u8; 32]>,
    clock: DefaultClock,
}

impl CredentialLimits {
    /// `per_minute` sustained, `burst` above it; 0 counts as 1.
    pub fn new(per_minute: u32, burst: u32) -> CredentialLimits {
        let per_minute = NonZeroU32::new(per_minute.max(1)).expect("at least one");
        let burst = NonZeroU32::new(burst.max(1)).expect("at least one");
        CredentialLimits {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// One request with `credential`: `Err(wait)` when it is over its rate. Call it only once
    /// the credential is known to be valid, so that made-up ones cannot grow the table.
    pub fn check(&self, credential: &[u8]) -> Result<(), Duration> {
        let key: [u8; 32] = sha2::Sha256::digest(credential).into();
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The policy of every response that is not a chat host page: nothing may load from it, frame
/// it, or sniff its type. `if_not_present`, so that the demo page sets its own.
pub fn security_headers<S>(router: axum::Router<S>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    fixed.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}

/// The headers of a page that hosts the chat widget: its own scripts and styles, the chat
/// socket, and `frame-ancestors` as configured (`http.frame_ancestors`).
pub fn host_page_headers(frame_ancestors: &str) -> Vec<(HeaderName, HeaderValue)> {
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
         form-action 'none'; frame-ancestors {frame_ancestors}"
    );
    let mut headers = vec![(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&policy).unwrap_or_else(|_| {
            HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'")
        }),
    )];
    // X-Frame-Options cannot name origins: send it only when nobody may frame the page, and
    // let browsers that know CSP follow frame-ancestors otherwise.
    let frame_options = if frame_ancestors.trim() == "'none'" {
        "DENY"
    } else {
        // An "allow" value that no browser honours would be worse than this one, which
        // modern browsers ignore when frame-ancestors is present.
        "SAMEORIGIN"
    };
    headers.push((
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static(frame_options),
    ));
    headers
}

/// The stable code of an HTTP status that the framework answered by itself.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        status if status.is_server_error() => "internal",
        _ => "http_error",
    }
}

/// Longest framework message passed on to the client (they are short; this bounds a surprise).
const MAX_MESSAGE: usize = 300;

/// Under `/api/`: a rejection answered before any handler ran (a plain-text or empty error)
/// becomes the API's JSON error body with a stable code; the status and other headers (such
/// as `Allow` and `Retry-After`) are kept.
pub async fn json_errors(request: Request, next: Next) -> Response {
    if !is_json_path(request.uri().path()) {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let mut message: String = text.trim().chars().take(MAX_MESSAGE).collect();
    if message.is_empty() || status.is_server_error() {
        message = status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase();
    }
    let rewritten = match query_field(&message) {
        Some((field, reason)) if status == StatusCode::BAD_REQUEST => {
            ApiError::invalid(field, reason)
        }
        _ => ApiError::edge(status, code_for(status), message),
    }
    .into_response();
    let (rewritten_parts, body) = rewritten.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &rewritten_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

/// The parameter and the reason of axum's refusal of a query string, which names the parameter
/// first: "Failed to deserialize query string: after: invalid digit found in string".
fn query_field(message: &str) -> Option<(&str, &str)> {
    let (field, reason) = message
        .strip_prefix("Failed to deserialize query string: ")?
        .split_once(": ")?;
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    (!field.is_empty() && field.chars().all(plain)).then_some((field, reason))
}

/// Whether a `Content-Type` names JSON (`application/json`, `application/x+json`, with
/// parameters).
fn is_json_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Under `/api/`: a request with a body must say it is JSON. A form or `text/plain` body is
/// what a cross-site page can send without a preflight, so accepting it would let any site
/// drive the API with a browser's ambient credentials if the API ever grows them.
pub async fn require_json(request: Request, next: Next) -> Response {
    let with_body = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !with_body || !is_json_path(request.uri().path()) {
        return next.run(request).await;
    }
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .map_or(
            request.headers().contains_key(header::TRANSFER_ENCODING),
            |length| length.trim() != "0",
        );
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    match content_type {
        Some(value) if is_json_type(value) => next.run(request).await,
        None if !has_body => next.run(request).await,
        _ => ApiError::edge(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        )
        .into_response(),
    }
}

/// `/metrics` with `http.metrics_token` set: only with `Authorization: Bearer <token>`.
pub fn metrics_authorised(headers: &axum::http::HeaderMap, token: &str) -> bool {
    use subtle_compare::equal;
    if token.is_empty() {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|presented| equal(presented.trim().as_bytes(), token.as_bytes()))
}

/// A comparison whose time does not depend on where the inputs differ.
mod subtle_compare {
    pub fn equal(left: &[u8], right: &[u8]) -> bool {
        if left.len() != right.len() {
            return false;
        }
        left.iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

/// An empty 401 for `/metrics` (Prometheus reads the status, not a body).
pub fn metrics_unauthorised() -> Response {
    let mut response = Response::new(Body::from("metrics require a bearer token\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON; charset=utf-8"));
        assert!(is_json_type("application/merge-patch+json"));
        assert!(!is_json_type("text/plain"));
        assert!(!is_json_type("application/x-www-form-urlencoded"));
    }
}
