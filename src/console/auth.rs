//! Who is asking: the session cookie and its CSRF token, or an admin API key, as axum
//! extractors; signing in and out over HTTP; console errors as the API's errors. Sessions
//! travel in an HttpOnly, SameSite=Strict cookie; every state-changing request must also carry
//! the session's CSRF token in `X-CSRF-Token` (and, when the browser sends one, an `Origin` of
//! this server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::accounts::{Role, Staff};
use super::pages;
use super::{Console, ConsoleError};
use crate::http::api::ApiError;

pub const SESSION_COOKIE: &str = "sb_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A console error as the API's error.
pub fn api_error(error: ConsoleError) -> ApiError {
    let message = error.to_string();
    match error {
        ConsoleError::Invalid { field, message } => ApiError::invalid(field, message),
        ConsoleError::Unauthenticated => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
        ConsoleError::BadCredentials => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", message)
        }
        // The sign-in limit is counted per minute.
        ConsoleError::RateLimited => ApiError::rate_limited(Duration::from_secs(60), &message),
        ConsoleError::Forbidden { code, .. } => ApiError::new(StatusCode::FORBIDDEN, code, message),
        ConsoleError::NotFound { code, .. } => ApiError::new(StatusCode::NOT_FOUND, code, message),
        ConsoleError::Conflict { code, .. } => ApiError::new(StatusCode::CONFLICT, code, message),
        ConsoleError::Workflow(error) => ApiError::from(error),
        ConsoleError::Store(_) | ConsoleError::Internal(_) => {
            tracing::error!(error = %message, "console request failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        api_error(self).into_response()
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| cookie::Cookie::split_parse(value.to_string()))
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_string())
        .filter(|token| !token.is_empty())
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser's `Origin` (if it sent one) is this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// Equal in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

/// A state-changing request from another site's page: refused whatever it carries.
fn cross_origin() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        "send requests from this server's own console page",
    )
}

/// The person behind a request's session cookie, with the CSRF check for state-changing
/// methods. `None` without a cookie; an error for a dead session or a missing token.
pub async fn session_staff(console: &Console, parts: &Parts) -> Result<Option<Staff>, ApiError> {
    let Some(token) = session_token(&parts.headers) else {
        return Ok(None);
    };
    let staff = console
        .session(&token)
        .await
        .map_err(api_error)?
        .ok_or_else(|| api_error(ConsoleError::Unauthenticated))?;
    if !is_safe(&parts.method) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !same_origin(&parts.headers) {
            return Err(cross_origin());
        }
        if !same_token(sent, &staff.csrf_token) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_token_invalid",
                "send the session's CSRF token in X-CSRF-Token",
            ));
        }
    }
    Ok(Some(staff))
}

impl FromRequestParts<Arc<Console>> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Staff, ApiError> {
        if let Some(staff) = session_staff(console, parts).await? {
            return Ok(staff);
        }
        // Admin endpoints also serve API keys with the admin scope.
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty());
        if let Some(key) = key {
            let actor = console
                .workflow
                .authenticate(key)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| api_error(ConsoleError::Unauthenticated))?;
            let principal = actor.api_key_principal().cloned();
            if let Some(principal) = principal
                && actor.has_scope(crate::workflow::Scope::Admin)
            {
                return Ok(Staff {
                    id: format!("api_key:{}", principal.id),
                    email: format!("api_key:{}", principal.id),
                    name: principal.name,
                    role: Role::Admin,
                    roles: principal.roles,
                    teams: Vec::new(),
                    availability: "offline".into(),
                    csrf_token: String::new(),
                    via_api_key: true,
                });
            }
            return Err(api_error(ConsoleError::Forbidden {
                code: "missing_scope",
                message: "the console's endpoints take API keys with the admin scope".into(),
            }));
        }
        Err(api_error(ConsoleError::Unauthenticated))
    }
}

/// A page's viewer: signed in, or sent to the sign-in page.
pub struct Viewer(pub Staff);

impl FromRequestParts<Arc<Console>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Viewer, Response> {
        match session_staff(console, parts).await {
            Ok(Some(staff)) => Ok(Viewer(staff)),
            _ => Err(Redirect::to("/console/login").into_response()),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<Arc<Console>> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> std::result::Result<Option<Viewer>, std::convert::Infallible> {
        Ok(session_staff(console, parts)
            .await
            .ok()
            .flatten()
            .map(Viewer))
    }
}

pub(super) async fn login_page() -> Response {
    pages::login()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

pub(super) async fn login(
    State(console): State<Arc<Console>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> std::result::Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(cross_origin());
    }
    let credentials: Credentials = crate::http::api::parse_json(&bytes)?;
    // The client's address as the edge resolved it (the trusted proxy header when configured).
    let address = extensions
        .get::<switchboard_connector::ClientAddress>()
        .map(|client| client.0)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip())
        });
    let opened = console
        .sign_in(&credentials.email, &credentials.password, address)
        .await
        .map_err(api_error)?;
    let mut cookie = cookie::Cookie::build((SESSION_COOKIE, opened.token))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::hours(
            console.settings.session_hours as i64,
        ));
    if console.secure_cookies() {
        cookie = cookie.secure(true);
    }
    let home = match opened.staff.role {
        Role::Backoffice => "/console/tasks",
        _ => "/console/queue",
    };
    // The page reads its CSRF token from its meta tag; programs from here (or /api/me).
    let csrf_token = opened.staff.csrf_token.clone();
    let mut response =
        Json(json!({"user": opened.staff, "home": home, "csrf_token": csrf_token})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie.build().to_string()).expect("cookie is header-safe"),
    );
    Ok(response)
}

pub(super) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .expect("cookie is header-safe")
}

pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    _staff: Staff,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    if let Some(token) = session_token(&headers) {
        console.sign_out(&token).await?;
    }
    let mut response = Json(json!({"signed_out": true})).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}
