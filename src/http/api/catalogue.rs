//! `/api/v1/catalogue`: products from the configured catalogue source, and a search over their
//! names and descriptions in English, Spanish and Catalan.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Caller, ErrorBody, parse_limit};
use crate::catalogue::Found;
use crate::workflow::{Product, Scope, WorkflowError};

/// Most products one search returns.
const MAX_RESULTS: i64 = 50;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SearchParams {
    /// What the customer calls the product, in any of the three languages.
    pub q: Option<String>,
    /// `en`, `es` or `ca`; detected from `q` when absent.
    pub language: Option<String>,
    /// At most this many products (1 to 50; 10 when absent).
    // Read as text, so that a bad value gets this API's error rather than the extractor's.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 50)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    /// Products on sale, best match first.
    pub data: Vec<Found>,
}

/// Search the catalogue.
#[utoipa::path(
    get,
    path = "/api/v1/catalogue",
    tag = "catalogue",
    params(SearchParams),
    responses(
        (status = 200, body = SearchResults),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn search_catalogue(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<SearchParams>,
) -> Result<Json<SearchResults>, ApiError> {
    caller.require(Scope::TasksRead)?;
    let query = params.q.unwrap_or_default();
    if query.trim().is_empty() {
        return Err(ApiError::invalid("q", "is required: what to search for"));
    }
    if query.chars().count() > 500 {
        return Err(ApiError::invalid("q", "is longer than 500 characters"));
    }
    let language = match params.language.as_deref().filter(|l| !l.trim().is_empty()) {
        Some(language) => Some(
            crate::knowledge::language::normalise(language)
                .ok_or_else(|| ApiError::invalid("language", "must be en, es or ca"))?,
        ),
        None => None,
    };
    let limit = parse_limit(params.limit.as_deref())?.unwrap_or(10);
    if !(1..=MAX_RESULTS).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 50"));
    }
    // No index: the catalogue was empty at start (and only a shop's own catalogue changes
    // while running, which always has one).
    let Some(index) = &state.products else {
        return Ok(Json(SearchResults { data: Vec::new() }));
    };
    let found = index
        .search(&query, language, limit as usize)
        .await
        .map_err(|error| WorkflowError::CatalogueUnavailable(error.to_string()))?;
    Ok(Json(SearchResults { data: found }))
}

/// One product, sold or not.
#[utoipa::path(
    get,
    path = "/api/v1/catalogue/{sku}",
    tag = "catalogue",
    params(("sku" = String, Path, description = "The product's SKU")),
    responses(
        (status = 200, body = Product),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_product(
    State(state): State<ApiState>,
    caller: Caller,
    Path(sku): Path<String>,
) -> Result<Json<Product>, ApiError> {
    caller.require(Scope::TasksRead)?;
    let product = state.workflow.product(&sku).await?;
    product.map(Json).ok_or_else(|| {
        WorkflowError::not_found("product_not_found", format!("product {sku}")).into()
    })
}
