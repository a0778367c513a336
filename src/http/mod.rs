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

use crate::channels::{Channels, Instance};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub open_sessions: Arc<dyn Fn() -> usize + Send + Sync>,
    pub workflow: Arc<crate::workflow::WorkflowService>,
    pub channels: Arc<Channels>,
    pub bus: Arc<dyn EventBus>,
    /// The demo shop's page with the first web chat instance's widget.
    pub demo_page: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

/// The HTTP app: its own routes, the REST API, and each channel instance's routes under
/// `/channels/{kind}/{name}`, served with that instance's host.
pub fn router(state: AppState, hosts: &[(Arc<Instance>, Arc<dyn ConnectorHost>)]) -> Router {
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
    let api = api::router(api::ApiState {
        workflow: state.workflow.clone(),
        store: state.store.clone(),
        bus: state.bus.clone(),
        channels: state.channels.clone(),
    });
    let mut app: Router = app.with_state(state).merge(api);
    for (instance, host) in hosts {
        if let Some(routes) = instance.connector.clone().routes(host.clone()) {
            app = app.nest(
                &format!("/channels/{}/{}", instance.kind(), instance.name()),
                routes,
            );
        }
    }
    app.layer(tower_http::trace::TraceLayer::new_for_http())
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

async fn metrics(State(state): State<AppState>) -> Response {
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
    let body = state
        .metrics
        .render(depth, (state.open_sessions)(), &channels);
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
    let Some(page) = &state.demo_page else {
        return (StatusCode::NOT_FOUND, "no web chat channel is configured").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page(),
    )
        .into_response()
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
