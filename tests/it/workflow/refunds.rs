//! Refunds from the customer's words to the back office: asked for in chat through the builtin
//! assistant, auto-approved under the limit, approved by a finance key above it; each change
//! told to the customer exactly once and announced by signed webhooks.

use super::support::{Shop, bot_frame, refund, shop, shop_with, system_frame};
use crate::both_backends;
use crate::helpers::{Backend, Visitor, eventually, options_with};
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard::store::Transfer;
use switchboard::workflow::{Scope, TaskStatus};

async fn customer_asks_in_chat(backend: Backend) {
    let assistant = crate::assistant::shared_assistant().await;
    let shop = shop_with(
        backend,
        |settings| crate::helpers::set_webchat(settings, "identity_secret", "shop-secret"),
        options_with(Some(assistant), vec![]),
    )
    .await;
    // Signed in to the shop's site, which vouches for the customer's email to the widget.
    let hello =
        crate::helpers::signed_in_hello(&shop.app.ws_url(), b"shop-secret", "ana@example.com");
    let mut visitor = Visitor::hello(&shop.app.ws_url(), hello).await;
    visitor.send_and_ack("c-0", "hello").await;
    visitor.bot_reply().await;
    let conversation_id = shop.app.conversation_of(&visitor).await;
    let context = shop
        .app
        .app
        .workflow
        .context_for(&conversation_id)
        .await
        .unwrap();
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let tasks = |shop: &Shop| {
        let reader = reader.clone();
        let contact = context.contact_id.clone();
        let http = shop.http.clone();
        let url = shop
            .app
            .http_url(&format!("/api/v1/contacts/{contact}/tasks"));
        async move {
            let body: Value = http
                .get(url)
                .bearer_auth(reader)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["data"].as_array().unwrap().clone()
        }
    };

    // Where is my order? Looked up among the customer's own orders.
    visitor.send_and_ack("c-1", "where is my order 1044?").await;
    bot_frame(&mut visitor, "Order 1044 is paid and being prepared.").await;

    // A refund of a delivered order under the limit: collected over two turns, opened as the
    // verified customer for the order's total, approved by the policy, told in the chat.
    visitor
        .send_and_ack("c-2", "I want a refund for order 1042")
        .await;
    bot_frame(&mut visitor, "What is the reason?").await;
    visitor.send_and_ack("c-3", "the mugs arrived broken").await;
    let approved = system_frame(&mut visitor, "approved").await;
    assert_eq!(
        approved["text"],
        "Good news: your refund request (45.00 EUR) for order 1042 has been approved."
    );
    let opened = tasks(&shop).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["type"], "refund");
    assert_eq!(opened[0]["status"], "approved");
    assert_eq!(opened[0]["conversation_id"], conversation_id.as_str());
    assert_eq!(opened[0]["payload"]["amount_cents"], 4500);
    assert_eq!(opened[0]["payload"]["reason"], "the mugs arrived broken");
    // The conversation's event stream has the task and its notice, numbered with the rest.
    let events = shop
        .app
        .store()
        .conversation_events(&conversation_id)
        .await
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let task_event = events
        .iter()
        .find(|event| event.kind.as_str() == "task.changed")
        .expect("a task event");
    assert_eq!(task_event.data["task_id"], opened[0]["id"]);
    assert!(
        events
            .iter()
            .any(|event| event.kind.as_str() == "message.stored"
                && event.data["author"] == "system"
                && event.data["text"] == approved["text"])
    );

    // A larger refund waits for finance; the approval over the API reaches the chat.
    visitor
        .send_and_ack("c-4", "can I get a refund for order 1043?")
        .await;
    bot_frame(&mut visitor, "What is the reason?").await;
    visitor.send_and_ack("c-5", "the kettle leaks").await;
    system_frame(&mut visitor, "needs to review it").await;
    let waiting = tasks(&shop).await;
    let large = waiting
        .iter()
        .find(|task| task["order_id"] == "1043")
        .expect("the refund of 1043 is open");
    assert_eq!(large["status"], "awaiting_approval");
    let finance = shop
        .key(&[Scope::TasksRead, Scope::TasksApprove], &["finance"])
        .await;
    let (status, body) = shop
        .post(
            &finance,
            &format!("/api/v1/tasks/{}/approve", large["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    system_frame(
        &mut visitor,
        "(189.90 EUR) for order 1043 has been approved",
    )
    .await;

    // A cancellation after shipping is refused by the policy, not by the assistant.
    visitor.send_and_ack("c-6", "cancel order 1042").await;
    bot_frame(&mut visitor, "Order 1042 has already shipped").await;
    assert_eq!(tasks(&shop).await.len(), 2);

    // Another customer's order: refused in the customer's words before the reason is asked
    // for, and nothing is opened.
    visitor
        .send_and_ack("c-7", "quiero un reembolso del pedido 2001")
        .await;
    bot_frame(
        &mut visitor,
        "No encuentro el pedido 2001 entre tus pedidos",
    )
    .await;
    assert_eq!(tasks(&shop).await.len(), 2);
}
both_backends!(workflow_customer_asks_in_chat, customer_asks_in_chat);

async fn small_refund_is_approved_and_told(backend: Backend) {
    let shop = shop(backend, |_| {}).await;
    let (mut visitor, context) = shop.customer("ana@example.com").await;
    let conversation_id = context.conversation_id.clone();

    let created = shop
        .app
        .app
        .workflow
        .open_task(context, refund("1042", 2000), Some("chat-turn-1"))
        .await
        .unwrap();
    let task = created.task;
    assert_eq!(task.status, TaskStatus::Approved);
    assert_eq!(task.queue, "finance");
    assert_eq!(task.order_id.as_deref(), Some("1042"));
    assert_eq!(task.approver_role, None);
    assert_eq!(
        task.conversation_id.as_deref(),
        Some(conversation_id.as_str())
    );

    let frame = system_frame(&mut visitor, "approved").await;
    assert_eq!(
        frame["text"],
        "Good news: your refund request (20.00 EUR) for order 1042 has been approved."
    );

    // The audit trail: created by the customer, approved by the policy, with the reason.
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (status, events) = shop
        .get(&reader, &format!("/api/v1/tasks/{}/events", task.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = events["data"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "task.created");
    assert_eq!(events[0]["actor"], format!("customer:{}", task.contact_id));
    assert_eq!(events[0]["to_status"], "open");
    assert_eq!(events[0]["before"], Value::Null);
    assert_eq!(events[1]["actor"], "policy");
    assert_eq!(events[1]["from_status"], "open");
    assert_eq!(events[1]["to_status"], "approved");
    assert_eq!(events[1]["before"]["status"], "open");
    assert_eq!(events[1]["after"]["status"], "approved");
    assert!(
        events[1]["reason"]
            .as_str()
            .unwrap()
            .contains("within the automatic limit of 50.00 EUR")
    );

    // The back office saw both events, signed; the receiver rejects a tampered copy.
    let receiver = shop.receiver.clone();
    let task_id = task.id.clone();
    eventually(20, "both webhooks to arrive", || {
        let receiver = receiver.clone();
        let task_id = task_id.clone();
        async move { receiver.events_of(&task_id).len() == 2 }
    })
    .await;
    let hooks = shop.receiver.events_of(&task.id);
    assert_eq!(hooks[0]["type"], "task.created");
    assert_eq!(hooks[1]["type"], "task.status_changed");
    assert_eq!(hooks[1]["data"]["after"]["status"], "approved");
    assert_eq!(hooks[1]["data"]["id"], events[1]["id"]);
    let genuine = shop
        .receiver
        .accepted
        .lock()
        .unwrap()
        .iter()
        .find(|received| received.body.contains(&task.id))
        .cloned()
        .unwrap();
    assert_eq!(genuine.id, events[0]["id"].as_str().unwrap());
    let tampered = genuine.body.replace("\"open\"", "\"approved\"");
    assert_ne!(tampered, genuine.body);
    let response = shop
        .http
        .post(format!("{}/hooks", shop.receiver_url))
        .header("webhook-id", &genuine.id)
        .header("webhook-timestamp", &genuine.timestamp)
        .header("webhook-signature", &genuine.signature)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(*shop.receiver.rejected.lock().unwrap(), 1);

    // Deliveries: the notice and the good endpoint's webhooks sent once; the broken
    // endpoint's dead-lettered after max_attempts, and visible to an admin.
    let deliveries = shop.settled_deliveries(&reader, &task.id).await;
    let count = |kind: &str, target: &str, status: &str| {
        deliveries
            .iter()
            .filter(|d| {
                d["kind"] == kind
                    && d["status"] == status
                    && (target.is_empty() || d["target"] == target)
            })
            .count()
    };
    assert_eq!(count("message", "", "sent"), 1);
    assert_eq!(count("webhook", "backoffice", "sent"), 2);
    assert_eq!(count("webhook", "broken", "dead"), 2);
    let admin = shop.key(&[Scope::Admin], &[]).await;
    let (status, dead) = shop
        .get(&admin, "/api/v1/webhooks/deliveries?status=dead")
        .await;
    assert_eq!(status, StatusCode::OK);
    let dead = dead["data"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["attempts"], 3);
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("500 Internal Server Error")
    );
    let (status, _) = shop
        .post(
            &reader,
            "/api/v1/webhooks/deliveries?status=dead",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, forbidden) = shop.get(&reader, "/api/v1/webhooks/deliveries").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden["error"]["code"], "missing_scope");
    let retry = format!("/api/v1/webhooks/deliveries/{}/retry", dead[0]["id"]);
    let (status, _) = shop.post(&admin, &retry, &json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, sent) = shop
        .get(&admin, "/api/v1/webhooks/deliveries?status=sent")
        .await;
    let delivered = format!(
        "/api/v1/webhooks/deliveries/{}/retry",
        sent["data"][0]["id"]
    );
    let (status, refused) = shop.post(&admin, &delivered, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "not a dead letter: {refused}");
    let (status, missing) = shop
        .post(
            &admin,
            "/api/v1/webhooks/deliveries/987654321/retry",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_eq!(missing["error"]["code"], "delivery_not_found");
    let (status, refused) = shop
        .post(
            &reader,
            "/api/v1/webhooks/deliveries/not-a-number/retry",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the scope first: {refused}");

    // Exactly one notice in the conversation, and a replay of the chat turn changes nothing.
    let again = shop
        .app
        .app
        .workflow
        .open_task(
            shop.app
                .app
                .workflow
                .context_for(&conversation_id)
                .await
                .unwrap(),
            refund("1042", 2000),
            Some("chat-turn-1"),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.task.id, task.id);
    assert_eq!(shop.system_messages(&conversation_id).await.len(), 1);
}
both_backends!(
    workflow_small_refund_auto_approved,
    small_refund_is_approved_and_told
);

async fn large_refund_waits_for_finance(backend: Backend) {
    let shop = shop(backend, |_| {}).await;
    let (mut visitor, context) = shop.customer("ana@example.com").await;
    let conversation_id = context.conversation_id.clone();
    let task = shop
        .app
        .app
        .workflow
        .open_task(context, refund("1043", 15_000), None)
        .await
        .unwrap()
        .task;
    assert_eq!(task.status, TaskStatus::AwaitingApproval);
    assert_eq!(task.approver_role.as_deref(), Some("finance"));
    system_frame(&mut visitor, "needs to review it").await;

    // An approver without the finance role is refused, and nothing changes.
    let approver = shop.key(&[Scope::TasksApprove], &[]).await;
    let approve = format!("/api/v1/tasks/{}/approve", task.id);
    let (status, body) = shop.post(&approver, &approve, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "missing_role");
    // A writer cannot approve at all.
    let writer = shop
        .key(&[Scope::TasksWrite, Scope::TasksRead], &["finance"])
        .await;
    let (status, body) = shop.post(&writer, &approve, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "missing_scope");

    // The finance key approves over the API; the customer is told.
    let finance = shop
        .key(&[Scope::TasksApprove, Scope::TasksRead], &["finance"])
        .await;
    let (status, approved) = shop
        .post(
            &finance,
            &approve,
            &json!({"reason": "checked the photos", "expected_version": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["version"], 3);
    let frame = system_frame(&mut visitor, "has been approved").await;
    assert!(frame["text"].as_str().unwrap().contains("150.00 EUR"));

    // The back office works it; the customer hears about it even after the conversation is
    // resolved.
    let transitions = format!("/api/v1/tasks/{}/transitions", task.id);
    let (status, body) = shop
        .post(&writer, &transitions, &json!({"status": "in_progress"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    system_frame(&mut visitor, "is being processed").await;
    shop.app
        .app
        .router
        .transfer(
            &conversation_id,
            &Transfer {
                to: switchboard::conversation::Move::Resolve,
                change: "resolved".into(),
                actor: "test".into(),
                data: json!({}),
            },
            None,
        )
        .await
        .unwrap();
    let (status, body) = shop
        .post(
            &writer,
            &transitions,
            &json!({"status": "done", "customer_note": "The money is on its way."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let frame = system_frame(&mut visitor, "has been completed").await;
    assert!(
        frame["text"]
            .as_str()
            .unwrap()
            .ends_with("The money is on its way.")
    );

    // Each change told exactly once, delivered exactly once.
    let notices = shop.system_messages(&conversation_id).await;
    assert_eq!(notices.len(), 4, "{notices:?}");
    let deliveries = shop.settled_deliveries(&finance, &task.id).await;
    let messages: Vec<&Value> = deliveries
        .iter()
        .filter(|delivery| delivery["kind"] == "message")
        .collect();
    assert_eq!(messages.len(), 4);
    assert!(
        messages
            .iter()
            .all(|delivery| delivery["status"] == "sent" && delivery["attempts"] == 1)
    );

    // The audit trail names the finance key and keeps the internal reason.
    let (_, events) = shop
        .get(&finance, &format!("/api/v1/tasks/{}/events", task.id))
        .await;
    let events = events["data"].as_array().unwrap().clone();
    let statuses: Vec<&str> = events
        .iter()
        .map(|event| event["to_status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "open",
            "awaiting_approval",
            "approved",
            "in_progress",
            "done"
        ]
    );
    assert!(events[2]["actor"].as_str().unwrap().starts_with("api_key:"));
    assert_eq!(events[2]["reason"], "checked the photos");
}
both_backends!(
    workflow_large_refund_needs_finance,
    large_refund_waits_for_finance
);
