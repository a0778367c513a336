//! The HTTP surface: the demo page and widget assets, channel endpoints under `/channels`,
//! health, readiness and metrics, and the back-office REST API under `/api/v1` ([`api`]).

pub mod api;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchboard_connector::ConnectorHost;

use crate::channels::Channels;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub open_sessions: Arc<dyn Fn() -> usize + Send + Sync>,
    pub workflow: Arc<crate::workflow::WorkflowService>,
    /// The customer the demo page is signed in as (`webchat.demo_email`).
    pub demo_identity: Option<DemoIdentity>,
}

/// A demo shop customer, signed for the widget.
#[derive(Debug, Clone)]
pub struct DemoIdentity {
    pub email: String,
    pub signature: String,
}

pub fn router(state: AppState, channels: &Channels, host: Arc<dyn ConnectorHost>) -> Router {
    let mut app = Router::<AppState>::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    #[cfg(feature = "channel-webchat")]
    {
        app = app
            .route("/", get(demo_page))
            .route("/widget.js", get(widget_js))
            .route("/widget.css", get(widget_css));
    }
    let workflow = state.workflow.clone();
    let mut app: Router = app.with_state(state).merge(api::router(workflow));
    for connector in channels.all() {
        if let Some(routes) = connector.clone().routes(host.clone()) {
            app = app.nest(&format!("/channels/{}", connector.kind()), routes);
        }
    }
    app.layer(tower_http::trace::TraceLayer::new_for_http())
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

async fn metrics(State(state): State<AppState>) -> Response {
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
async fn demo_page(State(state): State<AppState>) -> Response {
    let page = match &state.demo_identity {
        None => switchboard_webchat::DEMO_HTML.to_string(),
        Some(identity) => {
            // Both values are checked when configured; escaped all the same.
            let email = escape_html(&identity.email);
            switchboard_webchat::DEMO_HTML
                .replace(
                    "data-open=\"true\"",
                    &format!(
                        "data-open=\"true\" data-user-email=\"{email}\" data-user-signature=\"{}\"",
                        identity.signature
                    ),
                )
                .replace(
                    "<!-- signed-in -->",
                    &format!("<p class=\"signed-in\">Signed in to the demo shop as <strong>{email}</strong>: ask about your orders (1042 to 1045), a refund or a cancellation.</p>"),
                )
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
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
