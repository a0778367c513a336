//! The HTTP order source: orders read from the shop's own API.

use super::support::{refund, shop, system_frame};
use crate::both_backends;
use crate::helpers::Backend;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use switchboard::workflow::{Scope, TaskStatus, WorkflowError};

async fn shop_api(
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if id != "77001" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let delivered = chrono::Utc::now() - chrono::Duration::days(2);
    axum::Json(json!({
        "number": 77001,
        "customer": {"email": "Marta@Example.com"},
        "state": "completed",
        "total": "39.90",
        "currency": "EUR",
        "created": "2026-01-01T10:00:00Z",
        "delivered": delivered.to_rfc3339(),
        "lines": [{"sku": "MUG-01", "title": "Mug", "qty": 2, "price": "19.95"}]
    }))
    .into_response()
}

async fn orders_from_the_shop_api(backend: Backend) {
    let shop_app = axum::Router::new()
        .route("/orders/{id}", get(shop_api))
        .route(
            "/customers/orders",
            get(|| async { axum::Json(json!({"orders": []})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shop_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, shop_app).await });
    let shop = shop(backend, move |settings| {
        let http = &mut settings.workflow.http_orders;
        settings.workflow.order_source = "http".into();
        http.order_url = format!("{shop_url}/orders/{{order_id}}");
        http.customer_orders_url = format!("{shop_url}/customers/orders?email={{email}}");
        http.amounts_in_cents = false;
        http.fields.id = "/number".into();
        http.fields.customer_email = "/customer/email".into();
        http.fields.status = "/state".into();
        http.fields.total = "/total".into();
        http.fields.placed_at = "/created".into();
        http.fields.delivered_at = "/delivered".into();
        http.fields.items = "/lines".into();
        http.fields.item_name = "/title".into();
        http.fields.item_quantity = "/qty".into();
        http.fields.item_unit_price = "/price".into();
        http.fields.list = "/orders".into();
        http.statuses.insert("completed".into(), "delivered".into());
    })
    .await;
    let (mut visitor, context) = shop.customer("marta@example.com").await;
    let task = shop
        .app
        .app
        .workflow
        .open_task(context.clone(), refund("77001", 3990), None)
        .await
        .unwrap()
        .task;
    assert_eq!(task.status, TaskStatus::Approved);
    system_frame(&mut visitor, "39.90 EUR").await;
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (status, order) = shop.get(&reader, "/api/v1/orders/77001").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["items"][0]["unit_price_cents"], 1995);
    let error = shop
        .app
        .app
        .workflow
        .open_task(context, refund("404", 100), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            WorkflowError::NotFound {
                code: "order_not_found",
                ..
            }
        ),
        "{error:?}"
    );
}
both_backends!(workflow_http_order_source, orders_from_the_shop_api);
