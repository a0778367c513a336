//! Requests the workflow refuses (another customer's order or conversation, a forged context,
//! a second open refund, a wrong scope, an invalid transition, a malformed payload, a policy
//! refusal, an idempotency key reused with another body) change nothing and leave no side
//! effects.

use super::support::{refund, shop};
use crate::both_backends;
use crate::helpers::Backend;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard::workflow::{Scope, VerifiedContext, WorkflowError};

async fn refusals_change_nothing(backend: Backend) {
    let shop = shop(backend, |_| {}).await;
    let (_visitor, context) = shop.customer("ana@example.com").await;
    let conversation_id = context.conversation_id.clone();
    let workflow = shop.app.app.workflow.clone();
    let writer = shop.key(&[Scope::TasksWrite, Scope::TasksRead], &[]).await;
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let admin = shop.key(&[Scope::Admin], &[]).await;
    let first = workflow
        .open_task(context.clone(), refund("1042", 1000), None)
        .await
        .unwrap()
        .task;
    let settled = shop.settled_deliveries(&admin, &first.id).await.len();
    let tasks_before = shop.get(&reader, "/api/v1/tasks").await.1["data"]
        .as_array()
        .unwrap()
        .len();
    let notices_before = shop.system_messages(&conversation_id).await.len();

    // Another customer's order, through the assistant's door and through the API.
    let error = workflow
        .open_task(context.clone(), refund("2001", 1000), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            WorkflowError::Forbidden {
                code: "order_not_owned",
                ..
            }
        ),
        "{error:?}"
    );
    let body = json!({"type": "refund", "contact_id": context.contact_id, "order_id": "2001",
                      "payload": {"amount_cents": 100}});
    let (status, refused) = shop.post(&writer, "/api/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refused["error"]["code"], "order_not_owned");
    // A customer cannot open tasks for someone else's conversation either.
    let mut foreign = refund("1042", 100);
    foreign.contact_id = Some("someone-else".into());
    let error = workflow
        .open_task(context.clone(), foreign, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, WorkflowError::Forbidden { .. }),
        "{error:?}"
    );
    // A forged context (the contact of another conversation) is caught against the store.
    let forged = VerifiedContext {
        contact_id: "not-the-contact".into(),
        ..context.clone()
    };
    let error = workflow
        .open_task(forged, refund("1042", 100), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            WorkflowError::Forbidden {
                code: "context_mismatch",
                ..
            }
        ),
        "{error:?}"
    );

    // A second open refund on the same order.
    let error = workflow
        .open_task(context.clone(), refund("1042", 500), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            WorkflowError::Conflict {
                code: "refund_already_open",
                ..
            }
        ),
        "{error:?}"
    );

    // Wrong scope.
    let ok_body = json!({"type": "callback", "conversation_id": conversation_id,
                         "payload": {"phone": "+34 600 000 000"}});
    let (status, refused) = shop.post(&reader, "/api/v1/tasks", &ok_body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refused["error"]["code"], "missing_scope");
    let (status, refused) = shop.post("sbk_not-a-key", "/api/v1/tasks", &ok_body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused["error"]["code"], "unauthorized");

    // An invalid transition: an approved refund cannot be approved again, nor be done
    // without being worked on.
    let finance = shop.key(&[Scope::TasksApprove], &["finance"]).await;
    let (status, refused) = shop
        .post(
            &finance,
            &format!("/api/v1/tasks/{}/approve", first.id),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(refused["error"]["code"], "invalid_transition");
    let (status, refused) = shop
        .post(
            &writer,
            &format!("/api/v1/tasks/{}/transitions", first.id),
            &json!({"status": "done"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        refused["error"]["message"],
        "a task cannot go from approved to done"
    );

    // Malformed payloads name the failing field.
    let malformed = [
        (
            json!({"type": "callback", "conversation_id": conversation_id,
                   "payload": {"phone": 600}}),
            "payload.phone",
        ),
        (
            json!({"type": "refund", "conversation_id": conversation_id, "order_id": "1043",
                   "payload": {"amount_cents": "ten"}}),
            "payload.amount_cents",
        ),
        (
            json!({"type": "refund", "conversation_id": conversation_id, "order_id": "1043",
                   "payload": {"amount_cents": 50_000}}),
            "payload.amount_cents",
        ),
        (
            json!({"type": "refund", "conversation_id": conversation_id, "payload": {"amount_cents": 5}}),
            "order_id",
        ),
        (json!({"conversation_id": conversation_id}), "type"),
        (
            json!({"type": "teleport", "conversation_id": conversation_id}),
            "type",
        ),
        (
            json!({"type": "callback", "conversation_id": conversation_id, "colour": "red",
                   "payload": {"phone": "+34 600 000 000"}}),
            "colour",
        ),
        (
            json!({"type": "address_change", "conversation_id": conversation_id,
                   "order_id": "1044", "payload": {"address": {"line1": "Carrer Major 1",
                   "city": "Girona", "postal_code": "17001"}}}),
            "payload.address.country",
        ),
    ];
    for (body, field) in malformed {
        let (status, refused) = shop.post(&writer, "/api/v1/tasks", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {refused}");
        assert_eq!(refused["error"]["code"], "invalid_request");
        assert_eq!(refused["error"]["field"], field, "{body} -> {refused}");
    }
    let response = shop
        .http
        .post(shop.app.http_url("/api/v1/tasks"))
        .bearer_auth(&writer)
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "malformed_json");
    // A policy refusal: cancelling an order that has shipped.
    let (status, refused) = shop
        .post(
            &writer,
            "/api/v1/tasks",
            &json!({"type": "cancellation", "conversation_id": conversation_id, "order_id": "1043"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "order_already_shipped");

    // Idempotency: the same key and body replays; the same key with another body is 422.
    let (status, headers, created) = shop
        .call(
            reqwest::Method::POST,
            &writer,
            "/api/v1/tasks",
            Some(&ok_body),
            Some("cb-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["idempotent-replayed"], "false");
    let reordered = json!({"payload": {"phone": "+34 600 000 000"},
                           "conversation_id": conversation_id, "type": "callback"});
    let (status, headers, replayed) = shop
        .call(
            reqwest::Method::POST,
            &writer,
            "/api/v1/tasks",
            Some(&reordered),
            Some("cb-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, created);
    let different = json!({"type": "callback", "conversation_id": conversation_id,
                           "payload": {"phone": "+34 699 999 999"}});
    let (status, _, refused) = shop
        .call(
            reqwest::Method::POST,
            &writer,
            "/api/v1/tasks",
            Some(&different),
            Some("cb-1"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");

    // Nothing but the one idempotent callback was written by all of the above.
    let tasks_after = shop.get(&reader, "/api/v1/tasks").await.1["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tasks_after, tasks_before + 1);
    let notices = shop.system_messages(&conversation_id).await;
    assert_eq!(notices.len(), notices_before + 1, "{notices:?}");
    assert!(notices.last().unwrap().contains("callback"));
    let (_, first_now) = shop
        .get(&reader, &format!("/api/v1/tasks/{}", first.id))
        .await;
    assert_eq!(first_now["version"], 2);
    assert_eq!(first_now["status"], "approved");
    assert_eq!(
        shop.settled_deliveries(&admin, &first.id).await.len(),
        settled
    );
}
both_backends!(
    workflow_refusals_have_no_side_effects,
    refusals_change_nothing
);
