//! The back office's REST API under `/api/v1`: tasks, orders, the catalogue, contacts' tasks,
//! webhook deliveries and the inbound status endpoint, with its OpenAPI 3.1 document at
//! `/api/v1/openapi.json`. The document is generated from the handlers themselves (utoipa):
//! a route exists here only if it is registered with its documentation.
//!
//! Callers authenticate with `Authorization: Bearer <API key>`; what a key may do is its scopes
//! (`tasks:read`, `tasks:write`, `tasks:approve`, `conversations:read`, `admin`) and roles, judged by the workflow
//! service, which is the only place that authorises. Errors are
//! `{"error": {"code", "message", "field"?}}` with stable codes ([`ApiError`]).

mod catalogue;
mod contacts;
pub mod conversations;
mod reports;
mod tasks;
mod webhooks;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::workflow::{Actor, Scope, WorkflowError, WorkflowService};

#[derive(Clone)]
pub struct ApiState {
    pub workflow: Arc<WorkflowService>,
    pub store: crate::store::Store,
    pub bus: Arc<dyn crate::events::EventBus>,
    pub channels: Arc<crate::channels::Channels>,
    /// Console sessions are accepted beside API keys (the console's pages call this API).
    pub console: Option<Arc<crate::console::Console>>,
    /// Requests per API key (`http.api_rate_*`), checked once the key is known to be valid.
    pub key_limits: Arc<crate::http::edge::CredentialLimits>,
    /// The catalogue's search index; `None` without an embedding model.
    pub products: Option<Arc<crate::catalogue::ProductIndex>>,
}

/// The error body of every failed request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_request`, `malformed_json`, `unauthorized`,
    /// `missing_scope`, `missing_role`, `order_not_owned`, `task_not_found`,
    /// `invalid_transition`, `refund_already_open`, `idempotency_key_reused`, ...
    pub code: String,
    /// For people.
    pub message: String,
    /// With `invalid_request`: the failing field, e.g. `payload.amount_cents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The one error type at the HTTP edge. Server faults are logged and answered with a bare
/// `internal` error; their details never leave the process.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    field: Option<String>,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A rejection at the HTTP edge, before or around the handlers (see `http::edge`).
    pub fn edge(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(status, code, message)
    }

    /// 429 `rate_limited` with `Retry-After` (whole seconds, rounded up).
    pub fn rate_limited(retry_after: std::time::Duration, message: &str) -> ApiError {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(seconds.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(error: WorkflowError) -> ApiError {
        let message = error.to_string();
        match error {
            WorkflowError::Invalid { field, message } => ApiError::invalid(field, message),
            WorkflowError::Unauthenticated { code, .. } => {
                ApiError::new(StatusCode::UNAUTHORIZED, code, message)
            }
            WorkflowError::Forbidden { code, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            WorkflowError::NotFound { code, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, code, message)
            }
            WorkflowError::InvalidTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", message)
            }
            WorkflowError::Conflict { code, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            WorkflowError::IdempotencyMismatch => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            ),
            WorkflowError::PolicyRefused { code, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            WorkflowError::OrdersUnavailable(_) => {
                tracing::warn!(error = %message, "order source unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "order_source_unavailable",
                    "the order source is unavailable, try again later",
                )
            }
            WorkflowError::CatalogueUnavailable(_) => {
                tracing::warn!(error = %message, "catalogue unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "catalogue_unavailable",
                    "the catalogue is unavailable, try again later",
                )
            }
            WorkflowError::Store(_) => {
                tracing::error!(error = %message, "api request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Actor);

impl Caller {
    fn require(&self, scope: Scope) -> Result<(), ApiError> {
        self.0.require(scope).map_err(ApiError::from)
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Caller, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid API key as Authorization: Bearer <key>",
            )
        };
        let authorization = parts.headers.get(header::AUTHORIZATION);
        if authorization.is_none()
            && let Some(console) = &state.console
            && let Some(staff) = crate::console::auth::session_staff(console, parts).await?
        {
            return Ok(Caller(staff.actor()));
        }
        let key = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or_else(unauthorized)?;
        let Some(actor) = state.workflow.authenticate(key).await? else {
            return Err(unauthorized());
        };
        // Counted only once the key is known to be valid: random keys cannot grow the table.
        if let Err(wait) = state.key_limits.check(key.as_bytes()) {
            return Err(ApiError::rate_limited(
                wait,
                "too many requests with this API key, retry later",
            ));
        }
        Ok(Caller(actor))
    }
}

/// Parse a JSON body; a failure names the field (`payload.amount_cents`, `type`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {error}"),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // A missing field is reported on its parent: name the field itself. (An unknown field
        // is already the last segment of the path.)
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (".", None) => "body".to_string(),
            (path, None) => path.to_string(),
        };
        ApiError::invalid(field, message)
    })
}

fn parse_limit(limit: Option<&str>) -> Result<Option<i64>, ApiError> {
    // `limit=` (empty) is the same as no limit.
    limit
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| ApiError::invalid("limit", "must be an integer"))
        })
        .transpose()
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `switchboard apikey create`, sent as a bearer token",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard back-office API",
        version = "1",
        description = "Tasks opened by customers (refunds, orders, cancellations, address \
            changes, returns, callbacks, custom types), their approvals and status changes, \
            orders, and webhook deliveries. Every status change is told to the customer on \
            their conversation and announced by signed webhooks (Standard Webhooks)."
    ),
    modifiers(&SecurityAddon),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "tasks", description = "Back-office tasks and their lifecycle"),
        (name = "orders", description = "Orders from the configured order source"),
        (name = "catalogue", description = "Products from the configured catalogue source, and their search"),
        (name = "contacts", description = "Customers: their tasks, orders and linked emails"),
        (name = "webhooks", description = "Webhook deliveries and inbound status updates"),
        (name = "conversations", description = "Conversation events, live and read back, and attachments"),
        (name = "reports", description = "Figures computed from the conversation and task events")
    )
)]
struct ApiDoc;

/// The routes and their document, before the state is attached.
fn documented() -> (axum::Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::create_task, tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::task_events))
        .routes(routes!(tasks::task_deliveries))
        .routes(routes!(tasks::transition_task))
        .routes(routes!(tasks::approve_task))
        .routes(routes!(tasks::reject_task))
        .routes(routes!(contacts::get_order))
        .routes(routes!(catalogue::search_catalogue))
        .routes(routes!(catalogue::get_product))
        .routes(routes!(contacts::contact_tasks))
        .routes(routes!(contacts::contact_orders))
        .routes(routes!(contacts::link_email))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(webhooks::inbound_event))
        .routes(routes!(conversations::conversation_events))
        .routes(routes!(conversations::conversation_stream))
        .routes(routes!(conversations::message_attachment))
        .routes(routes!(reports::report))
        .split_for_parts()
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

/// The API's routes, ready to merge into the app.
pub fn router(state: ApiState) -> axum::Router {
    let (routes, document) = documented();
    let document = document.to_json().expect("the OpenAPI document serialises");
    routes
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        document,
                    )
                }
            }),
        )
        .with_state(state)
}
