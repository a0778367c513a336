//! The OpenAPI document matches the API it describes.

use super::support::{refund, shop};
use crate::both_backends;
use crate::helpers::Backend;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard::workflow::Scope;

/// Every documented operation exists and answers with a documented status, whose body
/// validates against the documented schema; every route the API serves is documented.
async fn openapi_matches_the_api(backend: Backend) {
    let shop = shop(backend, |settings| {
        settings.workflow.webhooks.clear();
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        settings.workflow.catalogue_seed = repo.join("config/demo/catalogue.json");
        settings.assistant.model_dir = repo.join("models/all-MiniLM-L6-v2");
    })
    .await;
    let (_visitor, context) = shop.customer("ana@example.com").await;
    let task = shop
        .app
        .app
        .workflow
        .open_task(context.clone(), refund("1043", 9_000), None)
        .await
        .unwrap()
        .task;
    let key = shop
        .key(
            &[
                Scope::Admin,
                Scope::TasksRead,
                Scope::TasksWrite,
                Scope::TasksApprove,
            ],
            &["finance"],
        )
        .await;
    let response = shop
        .http
        .get(shop.app.http_url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    // The same document as the library builds (what `documented()` registers as routes).
    assert_eq!(
        document,
        serde_json::to_value(switchboard::http::api::openapi()).unwrap()
    );

    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.clone(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("get", "/api/v1/catalogue"),
        ("get", "/api/v1/catalogue/{sku}"),
        ("get", "/api/v1/contacts/{id}/orders"),
        ("get", "/api/v1/contacts/{id}/tasks"),
        ("get", "/api/v1/conversations/{id}/events"),
        ("get", "/api/v1/conversations/{id}/stream"),
        ("get", "/api/v1/messages/{id}/attachments/{index}"),
        ("get", "/api/v1/orders/{id}"),
        ("get", "/api/v1/reports"),
        ("get", "/api/v1/tasks"),
        ("get", "/api/v1/tasks/{id}"),
        ("get", "/api/v1/tasks/{id}/deliveries"),
        ("get", "/api/v1/tasks/{id}/events"),
        ("get", "/api/v1/webhooks/deliveries"),
        ("post", "/api/v1/contacts/links"),
        ("post", "/api/v1/inbound/events"),
        ("post", "/api/v1/tasks"),
        ("post", "/api/v1/tasks/{id}/approve"),
        ("post", "/api/v1/tasks/{id}/reject"),
        ("post", "/api/v1/tasks/{id}/transitions"),
        ("post", "/api/v1/webhooks/deliveries/{id}/retry"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(operations, expected);

    // A real request for each operation.
    let link = json!({"channel": "webchat", "platform_user_id": "nobody", "email": "x@y.z"});
    let create = json!({"type": "callback", "contact_id": context.contact_id,
                        "payload": {"phone": "+34 600 000 000"}});
    let requests: Vec<(&str, String, Option<Value>)> = vec![
        ("get", "/api/v1/catalogue?q=blue+lamp&limit=2".into(), None),
        ("get", "/api/v1/catalogue/LAMP-BLUE".into(), None),
        ("get", "/api/v1/catalogue/NOPE".into(), None),
        ("get", "/api/v1/catalogue?q=".into(), None),
        (
            "get",
            format!("/api/v1/contacts/{}/orders", context.contact_id),
            None,
        ),
        (
            "get",
            format!("/api/v1/contacts/{}/tasks?limit=1", context.contact_id),
            None,
        ),
        ("get", "/api/v1/orders/1042".into(), None),
        ("get", "/api/v1/reports?bucket=day".into(), None),
        ("get", "/api/v1/tasks?status=awaiting_approval".into(), None),
        ("get", format!("/api/v1/tasks/{}", task.id), None),
        ("get", format!("/api/v1/tasks/{}/deliveries", task.id), None),
        ("get", format!("/api/v1/tasks/{}/events", task.id), None),
        (
            "get",
            "/api/v1/webhooks/deliveries?status=dead".into(),
            None,
        ),
        ("post", "/api/v1/contacts/links".into(), Some(link)),
        ("post", "/api/v1/inbound/events".into(), Some(json!({}))),
        ("post", "/api/v1/tasks".into(), Some(create)),
        (
            "post",
            format!("/api/v1/tasks/{}/approve", task.id),
            Some(json!({})),
        ),
        (
            "post",
            format!("/api/v1/tasks/{}/reject", task.id),
            Some(json!({})),
        ),
        (
            "post",
            format!("/api/v1/tasks/{}/transitions", task.id),
            Some(json!({"status": "in_progress"})),
        ),
        (
            "post",
            "/api/v1/webhooks/deliveries/1/retry".into(),
            Some(json!({})),
        ),
        // Errors are documented too.
        ("get", "/api/v1/tasks/no-such-task".into(), None),
        ("post", "/api/v1/tasks".into(), Some(json!({"type": 5}))),
    ];
    let validator_for = |reference: &Value| {
        let mut schema = json!({"components": document["components"].clone()});
        for (name, value) in reference.as_object().unwrap() {
            schema[name] = value.clone();
        }
        jsonschema::validator_for(&schema).unwrap()
    };
    for (method, path, body) in requests {
        let (status, _, answer) = shop
            .call(
                method.to_uppercase().parse().unwrap(),
                &key,
                &path,
                body.as_ref(),
                None,
            )
            .await;
        let template = expected
            .iter()
            .map(|(_, template)| template)
            .find(|template| {
                let pattern = template.split('/').collect::<Vec<_>>();
                let actual = path
                    .split('?')
                    .next()
                    .unwrap()
                    .split('/')
                    .collect::<Vec<_>>();
                pattern.len() == actual.len()
                    && pattern
                        .iter()
                        .zip(&actual)
                        .all(|(p, a)| p == a || p.starts_with('{'))
            })
            .unwrap_or_else(|| panic!("{path} matches no documented path"));
        let operation = &document["paths"][template][method];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let documented = &operation["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which is not documented: {answer}"
        );
        if let Some(schema) = documented.pointer("/content/application~1json/schema") {
            let validator = validator_for(schema);
            let errors: Vec<String> = validator
                .iter_errors(&answer)
                .map(|error| format!("{} at {}", error, error.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path} ({status}) does not match its schema: {errors:?}\n{answer}"
            );
        }
    }
    // Routes that are not documented do not exist.
    let (status, _) = shop.get(&key, "/api/v1/tasks/x/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
both_backends!(workflow_openapi_document, openapi_matches_the_api);
