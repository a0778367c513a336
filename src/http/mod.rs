//! The HTTP surface: the demo page and widget assets, channel endpoints under `/channels`,
//! health, readiness and metrics, and the back-office REST API under `/api/v1` ([`api`]).

pub mod api;
pub mod edge;
pub mod serve;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchboard_connector::ConnectorHost;

use crate::channels::Channels;
use crate::config::HttpSettings;
use crate::http::edge::security_headers;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// `http.metrics_token`: empty, or the bearer token `/metrics` requires.
    pub metrics_token: Arc<str>,
    /// `http.frame_ancestors` of the pages that host the chat.
    pub frame_ancestors: Arc<str>,
    pub metrics: Arc<Metrics>,
    pub open_sessions: Arc<dyn Fn() -> usize + Send + Sync>,
    pub workflow: Arc<crate::workflow::WorkflowService>,
    /// The customer the demo page is signed in as (`webchat.demo_email`).
    pub demo_identity: Option<DemoIdentity>,
}

/// A demo shop customer (demo mode only): the demo page signs a short-lived identity token
/// for them at every load.
#[derive(Debug, Clone)]
pub struct DemoIdentity {
    pub email: String,
    #[cfg(feature = "channel-webchat")]
    pub verifier: switchboard_webchat::session::IdentityVerifier,
}

/// Lifetime of the demo page's identity token: a copied page stops working within the hour.
#[cfg(feature = "channel-webchat")]
const DEMO_TOKEN_SECS: i64 = 3600;

/// The public app, and the app served on `http.metrics_address` (if set, `/metrics` lives only
/// there).
pub fn router(
    state: AppState,
    channels: &Channels,
    host: Arc<dyn ConnectorHost>,
    settings: &HttpSettings,
) -> (Router, Router) {
    let metrics_route = Router::<AppState>::new().route("/metrics", get(metrics));
    let metrics_app = security_headers(metrics_route.clone()).with_state(state.clone());
    let mut app = Router::<AppState>::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if settings.metrics_address.is_empty() {
        app = app.merge(metrics_route);
    }
    #[cfg(feature = "channel-webchat")]
    {
        app = app
            .route("/", get(demo_page))
            .route("/widget.js", get(widget_js))
            .route("/widget.css", get(widget_css));
    }
    let workflow = state.workflow.clone();
    let rate = api::ApiRate {
        per_minute: settings.api_rate_per_minute,
        burst: settings.api_rate_burst,
    };
    let mut app: Router = app.with_state(state).merge(api::router(workflow, rate));
    for connector in channels.all() {
        if let Some(routes) = connector.clone().routes(host.clone()) {
            app = app.nest(&format!("/channels/{}", connector.kind()), routes);
        }
    }
    let timeout = Duration::from_secs(settings.request_timeout_secs.max(1));
    // Innermost first: JSON errors see the timeout's 408 and the content type's 415.
    let app = app
        .layer(axum::middleware::from_fn(edge::require_json))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::from_fn(edge::json_errors));
    let app = security_headers(app).layer(tower_http::trace::TraceLayer::new_for_http());
    (app, metrics_app)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !edge::metrics_authorised(&headers, &state.metrics_token) {
        return edge::metrics_unauthorised();
    }
    let depth = match state.store.outbox_depth().await {
        Ok(depth) => depth,
        Err(error) => {
            tracing::warn!(error = %error, "outbox depth unavailable");
            -1
        }
    };
    let body = state.metrics.render(depth, (state.open_sessions)());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(feature = "channel-webchat")]
async fn demo_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let page = match &state.demo_identity {
        None => switchboard_webchat::DEMO_HTML.to_string(),
        Some(identity) => {
            // The token is for this page's own origin, as the browser will name it.
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("localhost");
            let scheme = match headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
            {
                Some("https") => "https",
                _ => "http",
            };
            let origin = format!("{scheme}://{host}");
            let expires = chrono::Utc::now().timestamp() + DEMO_TOKEN_SECS;
            let token = identity
                .verifier
                .issue_token(&identity.email, &origin, expires);
            // The email is checked when configured and the token is base64url; escaped all
            // the same.
            let email = escape_html(&identity.email);
            let token = escape_html(&token);
            switchboard_webchat::DEMO_HTML
                .replace(
                    "data-open=\"true\"",
                    &format!("data-open=\"true\" data-user-token=\"{token}\""),
                )
                .replace(
                    "<!-- signed-in -->",
                    &format!("<p class=\"signed-in\">Signed in to the demo shop as <strong>{email}</strong>: ask about your orders (1042 to 1045), a refund or a cancellation.</p>"),
                )
        }
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response();
    for (name, value) in edge::host_page_headers(&state.frame_ancestors) {
        response.headers_mut().insert(name, value);
    }
    response
}

#[cfg(feature = "channel-webchat")]
fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(feature = "channel-webchat")]
async fn widget_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            // Any site may embed the widget.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        switchboard_webchat::WIDGET_JS,
    )
        .into_response()
}

#[cfg(feature = "channel-webchat")]
async fn widget_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        switchboard_webchat::WIDGET_CSS,
    )
        .into_response()
}
