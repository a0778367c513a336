//! `/api/v1/reports`: the console's reports as JSON (see [`crate::console::reports`]).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use super::{ApiError, ApiState, Caller, ErrorBody};
use crate::console::reports::ReportQuery;
use crate::workflow::Scope;

/// Conversations per channel and language, containment, handoffs and their reasons, first
/// response and resolution times (median, p90), satisfaction, and tasks by type and state with
/// time to approval, over a period, per day or hour, optionally for one channel or team.
#[utoipa::path(
    get,
    path = "/api/v1/reports",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The report", body = Object),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn report(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<ReportQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let Some(console) = &state.console else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "console_unavailable",
            "reports need the console",
        ));
    };
    console
        .report(&query)
        .await
        .map(Json)
        .map_err(crate::console::auth::api_error)
}
