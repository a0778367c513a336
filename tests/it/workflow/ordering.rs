//! Orders priced from the catalogue: the built-in catalogue seeded from the demo file, its
//! rules (unknown, retired, out of stock, too many, a guest), the sales approval of a large
//! order told to the customer, the catalogue API and its search in three languages, and the
//! HTTP catalogue adapter against a local shop.

use super::support::{Shop, shop, system_frame};
use crate::both_backends;
use crate::helpers::Backend;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use switchboard::workflow::{NewTask, Scope, TaskStatus, VerifiedContext, WorkflowError};

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The demo shop's catalogue, searched with the real embedding model.
fn with_catalogue(settings: &mut switchboard::config::Settings) {
    settings.workflow.catalogue_seed = repo("config/demo/catalogue.json");
    settings.assistant.model_dir = repo("models/all-MiniLM-L6-v2");
}

fn order(lines: Value) -> NewTask {
    NewTask {
        kind: "order".into(),
        contact_id: None,
        conversation_id: None,
        order_id: None,
        queue: None,
        payload: json!({"lines": lines, "shipping_address": "Carrer de la Força 12, 17004 Girona"}),
    }
}

async fn refused(shop: &Shop, context: &VerifiedContext, lines: Value) -> WorkflowError {
    shop.app
        .app
        .workflow
        .open_task(context.clone(), order(lines), None)
        .await
        .expect_err("the order is refused")
}

fn code(error: &WorkflowError) -> &'static str {
    match error {
        WorkflowError::PolicyRefused { code, .. } | WorkflowError::Forbidden { code, .. } => code,
        other => panic!("not a refusal: {other:?}"),
    }
}

async fn orders_are_priced_from_the_catalogue(backend: Backend) {
    let shop = shop(backend, with_catalogue).await;
    let (mut visitor, context) = shop.customer("ana@example.com").await;
    let workflow = shop.app.app.workflow.clone();
    let reader = shop.key(&[Scope::TasksRead], &[]).await;

    // Two lines of one SKU are one line; prices come from the catalogue, not the request.
    let small = workflow
        .open_task(
            context.clone(),
            order(
                json!([{"sku": "LAMP-BLUE", "quantity": 1}, {"sku": "LAMP-BLUE", "quantity": 1}]),
            ),
            None,
        )
        .await
        .unwrap()
        .task;
    assert_eq!(small.status, TaskStatus::Approved);
    assert_eq!(small.queue, "sales");
    assert_eq!(small.payload["total_cents"], 9800);
    assert_eq!(small.payload["currency"], "EUR");
    assert_eq!(
        small.payload["lines"],
        json!([{"sku": "LAMP-BLUE", "name": "Blue table lamp", "quantity": 2,
                "unit_price_cents": 4900, "total_cents": 9800}])
    );
    system_frame(&mut visitor, "(98.00 EUR) has been approved").await;

    // Above the limit: waits for the sales role, and the customer hears of the approval.
    let large = workflow
        .open_task(
            context.clone(),
            order(json!([{"sku": "KETTLE-2", "quantity": 1}, {"sku": "TEA-10", "quantity": 2}])),
            None,
        )
        .await
        .unwrap()
        .task;
    assert_eq!(large.status, TaskStatus::AwaitingApproval);
    assert_eq!(large.approver_role.as_deref(), Some("sales"));
    assert_eq!(large.payload["total_cents"], 18990 + 2 * 1500);
    system_frame(&mut visitor, "(219.90 EUR)").await;
    let finance = shop
        .key(&[Scope::TasksRead, Scope::TasksApprove], &["finance"])
        .await;
    let approve = format!("/api/v1/tasks/{}/approve", large.id);
    let (status, body) = shop.post(&finance, &approve, &json!({})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "finance is not sales: {body}"
    );
    let sales = shop
        .key(&[Scope::TasksRead, Scope::TasksApprove], &["sales"])
        .await;
    let (status, body) = shop.post(&sales, &approve, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    system_frame(&mut visitor, "(219.90 EUR) has been approved").await;
    // The back office sees the lines and the total over the API and by webhook.
    let (status, read) = shop
        .get(&reader, &format!("/api/v1/tasks/{}", large.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["payload"]["lines"][0]["name"], "Electric kettle");
    assert_eq!(read["payload"]["total_cents"], 21990);
    let admin = shop.key(&[Scope::Admin], &[]).await;
    shop.settled_deliveries(&admin, &large.id).await;
    let hooked = shop.receiver.events_of(&large.id);
    assert!(
        hooked
            .iter()
            .any(|event| event["data"]["after"]["payload"]["total_cents"] == 21990),
        "{hooked:?}"
    );

    // The rules, each with its reason; none leaves a task behind.
    let count = |body: Value| body["data"].as_array().unwrap().len();
    let before = count(shop.get(&reader, "/api/v1/tasks").await.1);
    let unknown = refused(&shop, &context, json!([{"sku": "NOPE-1", "quantity": 1}])).await;
    assert_eq!(code(&unknown), "product_unknown");
    let retired = refused(&shop, &context, json!([{"sku": "MUG-OLD", "quantity": 1}])).await;
    assert_eq!(code(&retired), "product_unavailable");
    let empty = refused(
        &shop,
        &context,
        json!([{"sku": "GRINDER-1", "quantity": 1}]),
    )
    .await;
    assert_eq!(code(&empty), "out_of_stock");
    let short = refused(&shop, &context, json!([{"sku": "POT-05", "quantity": 9}])).await;
    assert_eq!(code(&short), "out_of_stock");
    assert!(short.to_string().contains("8 in stock"), "{short}");
    let many = refused(&shop, &context, json!([{"sku": "MUG-01", "quantity": 11}])).await;
    assert_eq!(code(&many), "quantity_above_maximum");
    // Lines of one product are counted together before the limits.
    let split = refused(
        &shop,
        &context,
        json!([{"sku": "MUG-01", "quantity": 6}, {"sku": "MUG-01", "quantity": 6}]),
    )
    .await;
    assert_eq!(code(&split), "quantity_above_maximum");
    let split = refused(
        &shop,
        &context,
        json!([{"sku": "POT-05", "quantity": 5}, {"sku": "POT-05", "quantity": 4}]),
    )
    .await;
    assert_eq!(code(&split), "out_of_stock");
    // Prices are the catalogue's: a payload naming its own is refused by the schema.
    let error = workflow
        .open_task(
            context.clone(),
            NewTask {
                payload: json!({"lines": [{"sku": "MUG-01", "quantity": 1, "unit_price_cents": 1}],
                                "shipping_address": "Carrer de la Força 12, 17004 Girona"}),
                ..order(json!([]))
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WorkflowError::Invalid { field, .. } if field == "payload.lines.0.unit_price_cents"),
        "{error:?}"
    );
    let error = workflow
        .open_task(
            context.clone(),
            NewTask {
                payload: json!({"lines": [{"sku": "MUG-01", "quantity": 1}], "total_cents": 1,
                                "shipping_address": "Carrer de la Força 12, 17004 Girona"}),
                ..order(json!([]))
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WorkflowError::Invalid { field, .. } if field == "payload.total_cents"),
        "{error:?}"
    );
    // One bad line refuses the whole order.
    let mixed = refused(
        &shop,
        &context,
        json!([{"sku": "MUG-01", "quantity": 1}, {"sku": "GRINDER-1", "quantity": 1}]),
    )
    .await;
    assert_eq!(code(&mixed), "out_of_stock");
    // A guest of the chat, not linked to a shop customer, is asked to sign in.
    let guest = shop.app.visitor().await;
    let mut guest = guest;
    guest.send_and_ack("g-1", "hello").await;
    guest.bot_reply().await;
    let guest_conversation = shop.app.conversation_of(&guest).await;
    let guest_context = workflow.context_for(&guest_conversation).await.unwrap();
    let signed_out = refused(
        &shop,
        &guest_context,
        json!([{"sku": "MUG-01", "quantity": 1}]),
    )
    .await;
    assert_eq!(code(&signed_out), "customer_not_signed_in");
    // Told to sign in before anything about the catalogue.
    let signed_out = refused(
        &shop,
        &guest_context,
        json!([{"sku": "NOPE-1", "quantity": 1}]),
    )
    .await;
    assert_eq!(code(&signed_out), "customer_not_signed_in");
    // No SKU, no address: the schema names the field.
    let error = workflow
        .open_task(
            context.clone(),
            NewTask {
                payload: json!({"lines": [{"sku": "MUG-01", "quantity": 1}]}),
                ..order(json!([]))
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WorkflowError::Invalid { field, .. } if field == "payload.shipping_address"),
        "{error:?}"
    );
    assert_eq!(count(shop.get(&reader, "/api/v1/tasks").await.1), before);
}
both_backends!(
    orders_priced_from_the_catalogue,
    orders_are_priced_from_the_catalogue
);

async fn the_catalogue_api_finds_products_in_three_languages(backend: Backend) {
    let shop = shop(backend, with_catalogue).await;
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (status, lamp) = shop.get(&reader, "/api/v1/catalogue/LAMP-BLUE").await;
    assert_eq!(status, StatusCode::OK, "{lamp}");
    assert_eq!(lamp["names"]["ca"], "Làmpada de taula blava");
    assert_eq!(lamp["price_cents"], 4900);
    let (status, missing) = shop.get(&reader, "/api/v1/catalogue/NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "product_not_found");

    let first = |body: &Value| {
        body["data"][0]["product"]["sku"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for (query, sku) in [
        ("/api/v1/catalogue?q=blue+lamp", "LAMP-BLUE"),
        (
            "/api/v1/catalogue?q=l%C3%A1mpara+azul&language=es",
            "LAMP-BLUE",
        ),
        ("/api/v1/catalogue?q=la+l%C3%A0mpada+blava", "LAMP-BLUE"),
        ("/api/v1/catalogue?q=a+kettle+to+boil+water", "KETTLE-2"),
        ("/api/v1/catalogue?q=bullidor+d%27aigua", "KETTLE-2"),
        ("/api/v1/catalogue?q=molinillo+de+caf%C3%A9", "GRINDER-1"),
        ("/api/v1/catalogue?q=t%C3%A9+verde", "TEA-10"),
    ] {
        let (status, found) = shop.get(&reader, query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {found}");
        assert_eq!(first(&found), sku, "{query}: {found}");
    }
    // A product found in several languages is listed once; retired ones never.
    let (_, mugs) = shop
        .get(&reader, "/api/v1/catalogue?q=mug+taza+tassa&limit=5")
        .await;
    let skus: Vec<&str> = mugs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| found["product"]["sku"].as_str().unwrap())
        .collect();
    let mut unique = skus.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), skus.len(), "{skus:?}");
    assert!(skus.contains(&"MUG-01"), "{skus:?}");
    assert!(!skus.contains(&"MUG-OLD"), "{skus:?}");
    // Bad requests name the field; a key without tasks:read is refused.
    for (query, field) in [
        ("/api/v1/catalogue", "q"),
        ("/api/v1/catalogue?q=lamp&language=fr", "language"),
        ("/api/v1/catalogue?q=lamp&limit=0", "limit"),
        ("/api/v1/catalogue?q=lamp&limit=many", "limit"),
    ] {
        let (status, body) = shop.get(&reader, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let writer = shop.key(&[Scope::TasksWrite], &[]).await;
    let (status, _) = shop.get(&writer, "/api/v1/catalogue?q=lamp").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A product taken out of the seed file is retired at the next seeding, not deleted.
    let dir = tempfile::tempdir().unwrap();
    let smaller = dir.path().join("catalogue.json");
    let mut file: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("config/demo/catalogue.json")).unwrap())
            .unwrap();
    file["products"]
        .as_array_mut()
        .unwrap()
        .retain(|product| product["sku"] != "LAMP-FLOOR");
    std::fs::write(&smaller, file.to_string()).unwrap();
    switchboard::workflow::catalogue::seed(shop.app.store(), &smaller)
        .await
        .unwrap();
    let (status, floor) = shop.get(&reader, "/api/v1/catalogue/LAMP-FLOOR").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(floor["active"], false, "{floor}");
    let (_, lamp) = shop.get(&reader, "/api/v1/catalogue/LAMP-BLUE").await;
    assert_eq!(lamp["active"], true);
}
both_backends!(
    catalogue_api,
    the_catalogue_api_finds_products_in_three_languages
);

/// The shop's own catalogue API, in its own shape.
async fn shop_product(
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match shop_products()
        .into_iter()
        .find(|product| product["id"] == id)
    {
        Some(product) => axum::Json(product).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn shop_products() -> Vec<Value> {
    vec![
        json!({"id": "SOFA-3", "title": {"en": "Three-seat sofa", "es": "Sofá de tres plazas"},
               "body": {"en": "Grey linen, oak legs"}, "price": "899.00", "money": "EUR",
               "inventory": 2, "status": "active"}),
        json!({"id": "RUG-9", "title": "Wool rug", "price": "120.50", "money": "EUR",
               "inventory": 0, "status": "active"}),
        // Left out of the search index with a warning; the others are indexed.
        json!({"id": "broken", "title": "No price"}),
    ]
}

async fn orders_from_the_shops_catalogue(backend: Backend) {
    let shop_app = axum::Router::new()
        .route("/products/{id}", get(shop_product))
        .route(
            "/products",
            get(|| async { axum::Json(json!({"items": shop_products()})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shop_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, shop_app).await });
    let shop = shop(backend, move |settings| {
        settings.assistant.model_dir = repo("models/all-MiniLM-L6-v2");
        settings.workflow.catalogue_source = "http".into();
        let http = &mut settings.workflow.http_catalogue;
        http.product_url = format!("{shop_url}/products/{{sku}}");
        http.products_url = format!("{shop_url}/products");
        http.amounts_in_cents = false;
        http.fields.sku = "/id".into();
        http.fields.name = "/title".into();
        http.fields.description = "/body".into();
        http.fields.price = "/price".into();
        http.fields.currency = "/money".into();
        http.fields.stock = "/inventory".into();
        http.fields.active = "/status".into();
        http.fields.list = "/items".into();
    })
    .await;
    let (mut visitor, context) = shop.customer("ana@example.com").await;
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (status, sofa) = shop.get(&reader, "/api/v1/catalogue/SOFA-3").await;
    assert_eq!(status, StatusCode::OK, "{sofa}");
    assert_eq!(sofa["price_cents"], 89900);
    assert_eq!(sofa["names"]["es"], "Sofá de tres plazas");
    let (status, _) = shop.get(&reader, "/api/v1/catalogue/NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, found) = shop
        .get(&reader, "/api/v1/catalogue?q=un+sof%C3%A1&language=es")
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["data"][0]["product"]["sku"], "SOFA-3", "{found}");

    let workflow = shop.app.app.workflow.clone();
    let task = workflow
        .open_task(
            context.clone(),
            order(json!([{"sku": "SOFA-3", "quantity": 1}])),
            None,
        )
        .await
        .unwrap()
        .task;
    assert_eq!(task.status, TaskStatus::AwaitingApproval);
    assert_eq!(task.payload["total_cents"], 89900);
    system_frame(&mut visitor, "(899.00 EUR)").await;
    let rug = refused(&shop, &context, json!([{"sku": "RUG-9", "quantity": 1}])).await;
    assert_eq!(code(&rug), "out_of_stock");
    let broken = shop
        .app
        .app
        .workflow
        .open_task(
            context.clone(),
            order(json!([{"sku": "broken", "quantity": 1}])),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(broken, WorkflowError::CatalogueUnavailable(_)),
        "{broken:?}"
    );
}
both_backends!(http_catalogue, orders_from_the_shops_catalogue);
