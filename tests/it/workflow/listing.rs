//! Listing tasks: filters, pagination cursors and what each reader may see.

use super::support::{refund, shop};
use crate::both_backends;
use crate::helpers::Backend;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard::workflow::settings::CustomType;
use switchboard::workflow::{Scope, TaskStatus};

async fn lists_filter_and_paginate(backend: Backend) {
    let shop = shop(backend, |settings| {
        settings.workflow.webhooks.clear();
        settings.workflow.custom_types.push(CustomType {
            name: "warranty_claim".into(),
            label: "warranty claim".into(),
            queue: "support".into(),
            requires_order: true,
            approval: "required".into(),
            approver_role: String::new(),
            schema: r#"{"type": "object", "required": ["sku"],
                        "properties": {"sku": {"type": "string", "minLength": 3}}}"#
                .into(),
        });
    })
    .await;
    let (_visitor, context) = shop.customer("jordi@example.cat").await;
    let writer = shop.key(&[Scope::TasksWrite, Scope::TasksRead], &[]).await;
    let mut created = Vec::new();
    for n in 0..5 {
        let body = json!({"type": "callback", "contact_id": context.contact_id,
                          "queue": if n % 2 == 0 { "support" } else { "vip" },
                          "payload": {"phone": format!("+34 600 000 00{n}")}});
        let (status, task) = shop.post(&writer, "/api/v1/tasks", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        assert_eq!(task["conversation_id"], context.conversation_id.as_str());
        created.push(task["id"].as_str().unwrap().to_string());
    }
    let refund = shop
        .app
        .app
        .workflow
        .open_task(context.clone(), refund("2001", 6000), None)
        .await
        .unwrap()
        .task;
    assert_eq!(refund.status, TaskStatus::AwaitingApproval);
    // A custom type from config: its JSON schema checks the payload, its rule decides.
    let claim = json!({"type": "warranty_claim", "contact_id": context.contact_id,
                       "order_id": "2002", "payload": {"sku": "T"}});
    let (status, refused) = shop.post(&writer, "/api/v1/tasks", &claim).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["field"], "payload.sku");
    let claim = json!({"type": "warranty_claim", "contact_id": context.contact_id,
                       "order_id": "2002", "payload": {"sku": "TEA-10"}});
    let (status, created_claim) = shop.post(&writer, "/api/v1/tasks", &claim).await;
    assert_eq!(status, StatusCode::CREATED, "{created_claim}");
    assert_eq!(created_claim["status"], "awaiting_approval");
    assert_eq!(created_claim["queue"], "support");
    let notices = shop.system_messages(&context.conversation_id).await;
    assert!(
        notices
            .last()
            .unwrap()
            .contains("your warranty claim request for order 2002"),
        "{notices:?}"
    );

    // Pages of two, newest first, until the cursor runs out.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/tasks?type=callback&limit=2&cursor={cursor}"),
            None => "/api/v1/tasks?type=callback&limit=2".to_string(),
        };
        let (status, page) = shop.get(&writer, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(
            data.iter()
                .map(|task| task["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created);

    let count = |page: &Value| page["data"].as_array().unwrap().len();
    let (_, vip) = shop.get(&writer, "/api/v1/tasks?queue=vip").await;
    assert_eq!(count(&vip), 2);
    let (_, waiting) = shop
        .get(&writer, "/api/v1/tasks?status=awaiting_approval")
        .await;
    assert_eq!(count(&waiting), 2);
    assert_eq!(waiting["data"][0]["id"], created_claim["id"]);
    assert_eq!(waiting["data"][1]["id"], refund.id.as_str());
    let (_, finance) = shop
        .get(
            &writer,
            "/api/v1/tasks?type=refund&queue=finance&status=awaiting_approval",
        )
        .await;
    assert_eq!(count(&finance), 1);
    let (_, theirs) = shop
        .get(
            &writer,
            &format!("/api/v1/contacts/{}/tasks?limit=10", context.contact_id),
        )
        .await;
    assert_eq!(count(&theirs), 7);
    let (status, unknown) = shop
        .get(&writer, "/api/v1/contacts/no-such-contact/tasks")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["error"]["code"], "contact_not_found");
    let (status, refused) = shop.get(&writer, "/api/v1/tasks?status=lost").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["field"], "status");
    let (status, refused) = shop.get(&writer, "/api/v1/tasks?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["field"], "limit");
    let (status, refused) = shop.get(&writer, "/api/v1/tasks?cursor=%25%25").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["field"], "cursor");

    // Orders: the contact's, through the linked email; the customer's own list.
    let (status, orders) = shop
        .get(
            &writer,
            &format!("/api/v1/contacts/{}/orders", context.contact_id),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = orders["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["2002", "2001"]);
    let (status, order) = shop.get(&writer, "/api/v1/orders/2001").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["customer_email"], "jordi@example.cat");
    assert_eq!(order["total_cents"], 6000);
    let (status, _) = shop.get(&writer, "/api/v1/orders/9999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let own = shop
        .app
        .app
        .workflow
        .customer_orders(context.clone())
        .await
        .unwrap();
    assert_eq!(own.len(), 2);
    let mine = shop
        .app
        .app
        .workflow
        .tasks_of_customer(context)
        .await
        .unwrap();
    assert_eq!(mine.len(), 7);
}
both_backends!(
    workflow_lists_filter_and_paginate,
    lists_filter_and_paginate
);
