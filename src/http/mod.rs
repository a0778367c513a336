//! The HTTP surface: the demo page and widget assets, channel endpoints under `/channels`,
//! health, readiness and metrics, and the back-office REST API under `/api/v1` ([`api`]).
//! [`serve`] accepts connections with the public edge's limits; [`edge`] holds what every
//! request and response shares (headers, JSON errors, content types, rate limits).

pub mod api;
pub mod edge;
pub mod serve;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use switchboard_connector::{ConnectorHost, Secret};
use tokio_util::sync::CancellationToken;

use crate::channels::{Channels, Instance};
use crate::config::HttpSettings;
use crate::events::EventBus;
use crate::http::edge::{CredentialLimits, security_headers};
use crate::metrics::Metrics;
use crate::store::Store;

/// The demo shop's page with a web chat instance's widget, for a browser on the given origin.
pub type DemoPage = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub open_sessions: Arc<dyn Fn() -> usize + Send + Sync>,
    pub workflow: Arc<crate::workflow::WorkflowService>,
    pub channels: Arc<Channels>,
    pub bus: Arc<dyn EventBus>,
    pub console: Arc<crate::console::Console>,
    /// The catalogue's search index, when an embedding model is loaded.
    pub products: Option<Arc<crate::catalogue::ProductIndex>>,
    /// The demo shop's page with the first web chat instance's widget.
    pub demo_page: Option<DemoPage>,
    /// `http.metrics_token`: empty, or the bearer token `/metrics` requires.
    pub metrics_token: Secret,
    /// `http.frame_ancestors` of the pages that host the chat.
    pub frame_ancestors: Arc<str>,
    /// Cancelled when the server stops (see [`event_stream`]).
    pub stopping: Stopping,
}

/// Cancelled when the server stops; every request carries it (an extension).
#[derive(Clone, Debug)]
pub struct Stopping(pub CancellationToken);

/// `stream` as a Server-Sent Events response: a comment every 15 s keeps idle proxies from
/// closing it, nothing caches it, and it ends when the server stops (a clean end, after which
/// the client reconnects, to the next instance if this one is gone), so that an open stream
/// does not hold the shutdown up.
pub fn event_stream<S>(stream: S, stopping: &Stopping) -> Response
where
    S: futures::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let stream = stream.take_until(stopping.0.clone().cancelled_owned());
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// The public app, and the app served on `http.metrics_address` (when that is set, `/metrics`
/// lives only there). The public one has its own routes, the REST API, and each channel
/// instance's routes under `/channels/{kind}/{name}`, served with that instance's host; every
/// route, present and future, gets the edge's layers (see [`edge`]).
pub fn router(
    state: AppState,
    hosts: &[(Arc<Instance>, Arc<dyn ConnectorHost>)],
    settings: &HttpSettings,
) -> (Router, Router) {
    let stopping = state.stopping.clone();
    let metrics_route = Router::<AppState>::new().route("/metrics", get(metrics));
    let metrics_app = security_headers(metrics_route.clone().with_state(state.clone()));
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
    let api = api::router(api::ApiState {
        workflow: state.workflow.clone(),
        store: state.store.clone(),
        bus: state.bus.clone(),
        channels: state.channels.clone(),
        console: Some(state.console.clone()),
        key_limits: Arc::new(CredentialLimits::new(
            settings.api_rate_per_minute,
            settings.api_rate_burst,
        )),
        products: state.products.clone(),
    });
    let console = crate::console::http::router(state.console.clone());
    let mut app: Router = app.with_state(state).merge(api).merge(console);
    for (instance, host) in hosts {
        if let Some(routes) = instance.connector.clone().routes(host.clone()) {
            app = app.nest(
                &format!("/channels/{}/{}", instance.kind(), instance.name()),
                routes,
            );
        }
    }
    let timeout = Duration::from_secs(settings.request_timeout_secs.max(1));
    // Innermost first: JSON errors see the timeout's 408 and the content type's 415. The
    // timeout ends a request that has not been answered in time; a WebSocket, once upgraded,
    // is not bound by it.
    let app = app
        .layer(axum::middleware::from_fn(edge::require_json))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::from_fn(edge::json_errors));
    let app = security_headers(app)
        .layer(axum::Extension(stopping))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    (app, metrics_app)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers. The channels' states are shown beside it: one channel
/// down (a Telegram outage, a wrong mailbox password) makes the server `degraded`, not
/// unready, since every other channel still works.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.store.ping().await;
    let channels: Vec<_> = state
        .channels
        .all()
        .map(|instance| instance.status.view())
        .collect();
    let all_up = state.channels.all().all(|instance| instance.status.is_up());
    let (code, status) = match (&database, all_up) {
        (Err(error), _) => {
            tracing::warn!(error = %error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        (Ok(()), true) => (StatusCode::OK, "ready"),
        (Ok(()), false) => (StatusCode::OK, "degraded"),
    };
    let body = serde_json::json!({
        "status": status,
        "database": if database.is_ok() { "ok" } else { "unreachable" },
        "channels": channels,
    });
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !edge::metrics_authorised(&headers, state.metrics_token.expose()) {
        return edge::metrics_unauthorised();
    }
    let depth = match state.store.outbox_depth().await {
        Ok(depth) => depth,
        Err(error) => {
            tracing::warn!(error = %error, "outbox depth unavailable");
            -1
        }
    };
    let channels: Vec<(&'static str, String, bool)> = state
        .channels
        .all()
        .map(|instance| {
            (
                instance.kind(),
                instance.name().to_string(),
                instance.status.is_up(),
            )
        })
        .collect();
    let body = state.metrics.render(
        depth,
        (state.open_sessions)(),
        &channels,
        state.store.retried_writes(),
    );
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
    let Some(page) = &state.demo_page else {
        return (StatusCode::NOT_FOUND, "no web chat channel is configured").into_response();
    };
    // The page's own origin, as the browser will name it on the chat socket.
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
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page(&origin),
    )
        .into_response();
    for (name, value) in edge::host_page_headers(&state.frame_ancestors) {
        response.headers_mut().insert(name, value);
    }
    response
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
