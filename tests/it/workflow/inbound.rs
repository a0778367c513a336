//! The inbound endpoint: the back office pushes signed status updates; a replayed
//! `webhook-id` changes nothing.

use super::support::{refund, shop, sign_inbound, sqlx_language, system_frame};
use crate::both_backends;
use crate::helpers::Backend;
use serde_json::{Value, json};
use switchboard::workflow::{Scope, TaskStatus};

async fn back_office_pushes_status(backend: Backend) {
    let shop = shop(backend, |settings| {
        settings.workflow.inbound.roles = vec!["finance".into()];
    })
    .await;
    let (mut visitor, context) = shop.customer("lucia@example.es").await;
    // A Spanish-speaking customer gets Spanish notices.
    sqlx_language(&shop, &context.conversation_id, "es").await;
    let task = shop
        .app
        .app
        .workflow
        .open_task(context, refund("3001", 2450), None)
        .await
        .unwrap()
        .task;
    assert_eq!(task.status, TaskStatus::Approved);
    system_frame(&mut visitor, "ha sido aprobada").await;

    let push = |id: &str, body: String, signature: Option<String>| {
        let mut request = shop
            .http
            .post(shop.app.http_url("/api/v1/inbound/events"))
            // As Standard Webhooks senders send it; the API refuses bodies of other types.
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header(
                "webhook-timestamp",
                chrono::Utc::now().timestamp().to_string(),
            )
            .body(body.clone());
        let signature =
            signature.unwrap_or_else(|| sign_inbound(id, chrono::Utc::now().timestamp(), &body));
        request = request.header("webhook-signature", signature);
        request.send()
    };
    let body = json!({"type": "task.status", "data": {"task_id": task.id, "status": "in_progress",
                      "reason": "picked up by the ERP"}})
    .to_string();
    let response = push("evt-1", body.clone(), None).await.unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["duplicate"], false);
    assert_eq!(outcome["task"]["status"], "in_progress");
    system_frame(&mut visitor, "está en curso").await;

    // The same event again changes nothing; a tampered one is refused.
    let response = push("evt-1", body.clone(), None).await.unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["duplicate"], true);
    let tampered = body.replace("in_progress", "done");
    let genuine_signature = sign_inbound("evt-2", chrono::Utc::now().timestamp(), &body);
    let response = push("evt-2", tampered, Some(genuine_signature))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "invalid_signature");

    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (_, events) = shop
        .get(&reader, &format!("/api/v1/tasks/{}/events", task.id))
        .await;
    let events = events["data"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["actor"], "backoffice:inbound");
    assert_eq!(events[2]["reason"], "picked up by the ERP");
}
both_backends!(workflow_inbound_status_updates, back_office_pushes_status);
