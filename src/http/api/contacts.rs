//! `/api/v1/orders` and `/api/v1/contacts`: orders from the order source, a contact's tasks and
//! orders, and linking a contact to a shop customer's email.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::tasks::ListParams;
use super::{ApiError, ApiState, Caller, ErrorBody, parse_json, parse_limit};
use crate::workflow::{Order, Scope, TaskPage};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderList {
    pub data: Vec<Order>,
}

/// Vouch that a channel identity is a shop customer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The channel instance's name, as in `[[channel]]` (`web` for the default web chat), not
    /// its kind.
    pub channel: String,
    /// The channel's id for the person; for web chat, the visitor id.
    pub platform_user_id: String,
    /// The shop customer's email: the contact may then act on that customer's orders.
    pub email: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkResponse {
    pub contact_id: String,
    pub email: String,
}

/// One order.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, body = Order),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_order(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(state.workflow.order(&caller.0, &id).await?))
}

/// A contact's tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/contacts/{id}/tasks",
    tag = "contacts",
    params(("id" = String, Path, description = "Contact id"), ListParams),
    responses(
        (status = 200, body = TaskPage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn contact_tasks(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<TaskPage>, ApiError> {
    caller.require(Scope::TasksRead)?;
    let limit = parse_limit(params.limit.as_deref())?;
    let page = state
        .workflow
        .contact_tasks(
            &caller.0,
            &id,
            params.filter(),
            params.cursor.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(page))
}

/// A contact's orders (through the emails linked to the contact), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/contacts/{id}/orders",
    tag = "contacts",
    params(("id" = String, Path, description = "Contact id")),
    responses(
        (status = 200, body = OrderList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn contact_orders(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderList>, ApiError> {
    let data = state.workflow.orders_of_contact(&caller.0, &id).await?;
    Ok(Json(OrderList { data }))
}

/// Link the contact behind a channel identity to a shop customer's email (for example the
/// shop's back end, which knows who is logged in, telling Switchboard who a web chat visitor
/// is). The contact exists once the person has written a first message.
#[utoipa::path(
    post,
    path = "/api/v1/contacts/links",
    tag = "contacts",
    request_body = LinkRequest,
    responses(
        (status = 200, body = LinkResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn link_email(
    State(state): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<LinkResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let request: LinkRequest = parse_json(&body)?;
    let contact_id = state
        .workflow
        .link_email(
            &caller.0,
            &request.channel,
            &request.platform_user_id,
            &request.email,
        )
        .await?;
    Ok(Json(LinkResponse {
        contact_id,
        email: crate::workflow::orders::normalise_email(&request.email),
    }))
}
