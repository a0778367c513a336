//! `/api/v1/webhooks`: the state of outbound webhook deliveries (dead letters included, with a
//! retry), and `/api/v1/inbound/events`, where the back office pushes signed status updates.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Caller, ErrorBody, parse_limit};
use crate::workflow::{DeliveryPage, Scope, Task};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `sent` or `dead`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    // Read as text, so that a bad value gets this API's error rather than the extractor's.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// The outcome of an inbound status update.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InboundResponse {
    pub task: Task,
    /// True when this `webhook-id` had been processed before; nothing changed.
    pub duplicate: bool,
}

/// Webhook deliveries, oldest first; `status=dead` lists the dead letters.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/deliveries",
    tag = "webhooks",
    params(DeliveryParams),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn list_deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<DeliveryPage>, ApiError> {
    caller.require(Scope::Admin)?;
    let limit = parse_limit(params.limit.as_deref())?;
    let page = state
        .workflow
        .webhook_deliveries(
            &caller.0,
            params.status.as_deref(),
            params.cursor.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(page))
}

/// Give a dead-lettered delivery a fresh set of attempts.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/deliveries/{id}/retry",
    tag = "webhooks",
    params(("id" = i64, Path, description = "Delivery id")),
    responses(
        (status = 204, description = "Queued again"),
        (status = 400, description = "The id is not a delivery id", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No webhook delivery has this id", body = ErrorBody),
        (status = 409, description = "Not a dead letter", body = ErrorBody)
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn retry_delivery(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Who may ask comes before what is asked.
    caller.require(Scope::Admin)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "must be an integer"))?;
    state.workflow.retry_delivery(&caller.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A status update from the back office, signed per Standard Webhooks with
/// `workflow.inbound.secret` (`webhook-id`, `webhook-timestamp`, `webhook-signature`). The body
/// is `{"type": "task.status", "data": {"task_id", "status", "reason", "customer_note"}}`. A
/// repeated `webhook-id` changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/inbound/events",
    tag = "webhooks",
    params(
        ("webhook-id" = String, Header, description = "Unique per event"),
        ("webhook-timestamp" = String, Header, description = "Seconds since the Unix epoch"),
        ("webhook-signature" = String, Header, description = "v1,<base64 HMAC-SHA256 of id.timestamp.body>")
    ),
    request_body(content = Object, description = "A task.status event"),
    responses(
        (status = 200, body = InboundResponse),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Missing or invalid signature", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn inbound_event(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<InboundResponse>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let outcome = state
        .workflow
        .inbound_update(
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
        )
        .await?;
    Ok(Json(InboundResponse {
        task: outcome.task,
        duplicate: outcome.duplicate,
    }))
}
