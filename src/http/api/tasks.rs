//! `/api/v1/tasks`: open tasks (idempotently), list and filter them, read one with its audit
//! trail and deliveries, and move them through their lifecycle.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Caller, ErrorBody, parse_json, parse_limit};
use crate::store::TaskFilter;
use crate::workflow::{
    Delivery, NewTask, Scope, Task, TaskEvent, TaskPage, TaskStatus, Transition,
};

/// Filters and paging of task lists.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only tasks in this status.
    pub status: Option<String>,
    /// Only tasks of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only tasks in this queue.
    pub queue: Option<String>,
    pub order_id: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    // Read as text, so that a bad value gets this API's error rather than the extractor's.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

impl ListParams {
    pub(super) fn filter(&self) -> TaskFilter {
        TaskFilter {
            status: self.status.clone(),
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            contact_id: None,
            order_id: self.order_id.clone(),
            queues: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskEventList {
    pub data: Vec<TaskEvent>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub data: Vec<Delivery>,
}

/// An approver's decision.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Why, for the audit trail (not shown to the customer).
    #[serde(default)]
    pub reason: Option<String>,
    /// A sentence for the customer, appended to the notice they get.
    #[serde(default)]
    pub customer_note: Option<String>,
    /// Refuse (409) if the task is no longer at this version.
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// Open a task for a contact. With an `Idempotency-Key`, repeating the request returns the
/// original task (with `Idempotent-Replayed: true`) and changes nothing; the same key with a
/// different body is refused with 422.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "tasks",
    request_body = NewTask,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the request safe to repeat (1 to 255 visible ASCII characters)")
    ),
    responses(
        (status = 201, description = "Created (or replayed)", body = Task,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "Malformed request; `field` names what failed", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Missing scope, or the order is not the contact's", body = ErrorBody),
        (status = 404, description = "Unknown contact, conversation or order", body = ErrorBody),
        (status = 409, description = "The order already has an open refund", body = ErrorBody),
        (status = 422, description = "Idempotency key reused, or refused by a policy", body = ErrorBody),
        (status = 503, description = "The order source is unavailable", body = ErrorBody)
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn create_task(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::TasksWrite)?;
    let request: NewTask = parse_json(&body)?;
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::invalid("Idempotency-Key", "must be visible ASCII characters")
        })?),
        None => None,
    };
    let created = state.workflow.create_task(&caller.0, request, key).await?;
    let replayed = if created.replayed { "true" } else { "false" };
    Ok((
        StatusCode::CREATED,
        [("idempotent-replayed", HeaderValue::from_static(replayed))],
        Json(created.task),
    )
        .into_response())
}

/// List tasks, newest first, filtered by status, type, queue or order.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListParams),
    responses(
        (status = 200, body = TaskPage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn list_tasks(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<TaskPage>, ApiError> {
    caller.require(Scope::TasksRead)?;
    let limit = parse_limit(params.limit.as_deref())?;
    let page = state
        .workflow
        .list(&caller.0, params.filter(), params.cursor.as_deref(), limit)
        .await?;
    Ok(Json(page))
}

/// One task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, body = Task),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_task(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(state.workflow.get(&caller.0, &id).await?))
}

/// The audit trail of a task: every change, who made it, when, why, before and after.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, body = TaskEventList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn task_events(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskEventList>, ApiError> {
    let data = state.workflow.events(&caller.0, &id).await?;
    Ok(Json(TaskEventList { data }))
}

/// The notices to the customer and the webhooks a task caused, with their delivery state
/// (`pending`, `sent`, `dead`).
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/deliveries",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, body = DeliveryList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn task_deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    let data = state.workflow.deliveries(&caller.0, &id).await?;
    Ok(Json(DeliveryList { data }))
}

/// Move a task to another status. `approved` and `rejected` need `tasks:approve` (and the
/// task's approver role); the rest need `tasks:write`. Moves the lifecycle does not allow are
/// refused with 409 `invalid_transition`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/transitions",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body = Transition,
    responses(
        (status = 200, body = Task),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Invalid transition, or the task changed (expected_version)", body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:write", "tasks:approve"]))
)]
pub async fn transition_task(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Task>, ApiError> {
    if !caller.0.has_scope(Scope::TasksWrite) {
        caller.require(Scope::TasksApprove)?;
    }
    let transition: Transition = parse_json(&body)?;
    Ok(Json(
        state
            .workflow
            .transition(&caller.0, &id, transition)
            .await?,
    ))
}

async fn decide(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    body: &[u8],
    status: TaskStatus,
) -> Result<Json<Task>, ApiError> {
    caller.require(Scope::TasksApprove)?;
    // The body is optional: none, whitespace or JSON null all mean "no reason given".
    let blank = body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null";
    let decision: DecisionRequest = if blank {
        DecisionRequest::default()
    } else {
        parse_json(body)?
    };
    let transition = Transition {
        status,
        reason: decision.reason,
        customer_note: decision.customer_note,
        expected_version: decision.expected_version,
    };
    Ok(Json(
        state.workflow.transition(&caller.0, id, transition).await?,
    ))
}

/// Approve a task that awaits approval (`tasks:approve`, plus the task's approver role).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/approve",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body(content = Option<DecisionRequest>, description = "Optional"),
    responses(
        (status = 200, body = Task),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing scope or role", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:approve"]))
)]
pub async fn approve_task(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Task>, ApiError> {
    decide(&state, &caller, &id, &body, TaskStatus::Approved).await
}

/// Reject a task that awaits approval (`tasks:approve`, plus the task's approver role).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/reject",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body(content = Option<DecisionRequest>, description = "Optional"),
    responses(
        (status = 200, body = Task),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing scope or role", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:approve"]))
)]
pub async fn reject_task(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Task>, ApiError> {
    decide(&state, &caller, &id, &body, TaskStatus::Rejected).await
}
