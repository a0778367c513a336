//! The back-office workflow end to end: a web chat customer's refunds (auto-approved under the
//! limit, approved by a finance key over the API above it), told to the customer in the chat
//! exactly once, even after the conversation is resolved; signed webhooks checked by a receiver
//! that rejects a tampered one; refusals without side effects; idempotency, pagination,
//! filters, the inbound endpoint, the HTTP order source, the CLI and the OpenAPI document.
//!
//! `customer_asks_in_chat` goes the whole way from the customer's words: the builtin assistant
//! recognises the request, the router runs its action through the workflow as the conversation's
//! verified customer. The others open tasks through `WorkflowService::open_task` with the web
//! chat conversation's verified context, the same door, to test the workflow in detail.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard::app::AppOptions;
use switchboard::config::Settings;
use switchboard::store::Transfer;
use switchboard::workflow::settings::{CustomType, WebhookEndpoint};
use switchboard::workflow::{Actor, NewTask, Scope, TaskStatus, VerifiedContext, WorkflowError};
use switchboard_webchat::session::IdentityVerifier;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Visitor, eventually, options_with};

const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const INBOUND_SECRET: &str = "whsec_c3dpdGNoYm9hcmQtaW5ib3VuZC10ZXN0LWtleQ==";

// ---- a webhook receiver that checks signatures as the Standard Webhooks spec says -----------

#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<Received>>>,
    rejected: Arc<Mutex<usize>>,
}

impl Receiver {
    fn events(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|received| serde_json::from_str(&received.body).unwrap())
            .collect()
    }

    fn events_of(&self, task_id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["data"]["task_id"] == task_id)
            .collect()
    }
}

/// An independent check of the signature (not Switchboard's code): HMAC-SHA256 with the
/// base64-decoded secret over "id.timestamp.body", base64, in a `v1,` entry.
fn signature_valid(secret: &str, id: &str, timestamp: &str, header: &str, body: &[u8]) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let Ok(sent_at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - sent_at).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header.split(' ').any(|candidate| candidate == expected)
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    if id.is_empty() || !signature_valid(HOOK_SECRET, &id, &timestamp, &signature, &body) {
        *receiver.rejected.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    receiver.accepted.lock().unwrap().push(Received {
        id,
        timestamp,
        signature,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    StatusCode::NO_CONTENT
}

/// Starts the receiver; returns its base URL. `/hooks` verifies, `/broken` always fails.
async fn start_receiver(receiver: Receiver) -> String {
    let app = axum::Router::new()
        .route("/hooks", post(hook))
        .route(
            "/broken",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

// ---- the app, keys, API calls --------------------------------------------------------------

fn demo_orders() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/orders.json")
}

struct Shop {
    app: TestApp,
    receiver: Receiver,
    receiver_url: String,
    http: reqwest::Client,
}

async fn shop(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Shop {
    shop_with(backend, configure, AppOptions::default()).await
}

async fn shop_with(
    backend: Backend,
    configure: impl FnOnce(&mut Settings),
    options: AppOptions,
) -> Shop {
    let receiver = Receiver::default();
    let receiver_url = start_receiver(receiver.clone()).await;
    let hooks = receiver_url.clone();
    let app = TestApp::spawn_with(
        backend,
        move |settings| {
            settings.workflow.orders_seed = demo_orders();
            settings.workflow.webhooks = vec![
                WebhookEndpoint {
                    name: "backoffice".into(),
                    url: format!("{hooks}/hooks"),
                    secret: HOOK_SECRET.into(),
                },
                WebhookEndpoint {
                    name: "broken".into(),
                    url: format!("{hooks}/broken"),
                    secret: HOOK_SECRET.into(),
                },
            ];
            settings.workflow.inbound.secret = INBOUND_SECRET.into();
            settings.outbox.max_attempts = 3;
            configure(settings);
        },
        options,
    )
    .await;
    Shop {
        app,
        receiver,
        receiver_url,
        http: reqwest::Client::new(),
    }
}

impl Shop {
    async fn key(&self, scopes: &[Scope], roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|role| role.to_string()).collect();
        let (_, key) = self
            .app
            .app
            .workflow
            .create_api_key(
                &Actor::operator("test", Vec::new()),
                "test key",
                scopes,
                &roles,
            )
            .await
            .unwrap();
        key
    }

    async fn call(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, self.app.http_url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("idempotency-key", idempotency_key);
        }
        let response = request.send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let headers = convert_headers(response.headers());
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }

    async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(reqwest::Method::GET, key, path, None, None).await;
        (status, body)
    }

    async fn post(&self, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(reqwest::Method::POST, key, path, Some(body), None)
            .await;
        (status, body)
    }

    /// A web chat visitor who has written once (so their contact and conversation exist),
    /// linked by an admin to the shop customer `email`.
    async fn customer(&self, email: &str) -> (Visitor, VerifiedContext) {
        let mut visitor = self.app.visitor().await;
        visitor.send_and_ack("hello-1", "hello").await;
        visitor.bot_reply().await;
        let history = self
            .app
            .store()
            .history("webchat", &visitor.visitor_id, 10)
            .await
            .unwrap();
        let conversation_id = history[0].conversation_id.clone();
        let admin = self.key(&[Scope::Admin], &[]).await;
        let (status, linked) = self
            .post(
                &admin,
                "/api/v1/contacts/links",
                &json!({"channel": "webchat", "platform_user_id": visitor.visitor_id,
                        "email": email.to_uppercase()}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{linked}");
        let context = self
            .app
            .app
            .workflow
            .context_for(&conversation_id)
            .await
            .unwrap();
        assert!(
            context.verified,
            "web chat sessions are signed, so verified"
        );
        assert_eq!(linked["contact_id"], context.contact_id.as_str());
        (visitor, context)
    }

    async fn system_messages(&self, conversation_id: &str) -> Vec<String> {
        self.app
            .store()
            .conversation_messages(conversation_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|message| message.author == switchboard_connector::AuthorKind::System)
            .map(|message| message.text)
            .collect()
    }

    /// Wait until every delivery of the task is settled (sent or dead); return them.
    async fn settled_deliveries(&self, key: &str, task_id: &str) -> Vec<Value> {
        let path = format!("/api/v1/tasks/{task_id}/deliveries");
        let mut last = Vec::new();
        for _ in 0..400 {
            let (status, body) = self.get(key, &path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            last = body["data"].as_array().unwrap().clone();
            if last.iter().all(|delivery| delivery["status"] != "pending") {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("deliveries of {task_id} never settled: {last:?}");
    }
}

fn convert_headers(headers: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut converted = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            converted.insert(name, value);
        }
    }
    converted
}

fn refund(order_id: &str, amount_cents: i64) -> NewTask {
    NewTask {
        kind: "refund".into(),
        contact_id: None,
        conversation_id: None,
        order_id: Some(order_id.into()),
        queue: None,
        payload: json!({"amount_cents": amount_cents, "reason": "arrived broken"}),
    }
}

async fn system_frame(visitor: &mut Visitor, containing: &str) -> Value {
    let wanted = containing.to_string();
    visitor
        .expect(containing, move |frame| {
            frame["type"] == "message"
                && frame["author"] == "system"
                && frame["text"].as_str().unwrap_or_default().contains(&wanted)
        })
        .await
}

// ---- the end-to-end stories ----------------------------------------------------------------

/// The bot's next message whose text contains `containing`.
async fn bot_frame(visitor: &mut Visitor, containing: &str) -> Value {
    let wanted = containing.to_string();
    visitor
        .expect(containing, move |frame| {
            frame["type"] == "message"
                && frame["author"] == "bot"
                && frame["text"].as_str().unwrap_or_default().contains(&wanted)
        })
        .await
}

async fn customer_asks_in_chat(backend: Backend) {
    let assistant = crate::assistant::shared_assistant().await;
    let shop = shop_with(
        backend,
        |settings| settings.webchat.identity_secret = "shop-secret".into(),
        options_with(Some(assistant), vec![]),
    )
    .await;
    // Signed in to the shop's site, which vouches for the customer's email to the widget.
    let identity_token = IdentityVerifier::new(b"shop-secret").issue_token(
        "ana@example.com",
        &crate::helpers::same_origin(&shop.app.ws_url()),
        chrono::Utc::now().timestamp() + 600,
    );
    let mut visitor = Visitor::hello(
        &shop.app.ws_url(),
        json!({"type": "hello", "token": null, "identity_token": identity_token}),
    )
    .await;
    visitor.send_and_ack("c-0", "hello").await;
    visitor.bot_reply().await;
    let history = shop
        .app
        .store()
        .history("webchat", &visitor.visitor_id, 10)
        .await
        .unwrap();
    let conversation_id = history[0].conversation_id.clone();
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

    // Another customer's order: refused in the customer's words, and nothing is opened.
    visitor
        .send_and_ack("c-7", "quiero un reembolso del pedido 2001")
        .await;
    bot_frame(&mut visitor, "motivo").await;
    visitor.send_and_ack("c-8", "no me gusta el color").await;
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
        .store()
        .transfer_conversation(
            &conversation_id,
            &Transfer {
                status: "resolved",
                owner: "bot".into(),
                event_kind: "conversation.resolved",
                actor: "test".into(),
                data: json!({}),
            },
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

fn sign_inbound(id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(INBOUND_SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

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

/// Set a conversation's language the way the router does after a turn.
async fn sqlx_language(shop: &Shop, conversation_id: &str, language: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::AnyConnection::connect(&shop.app.database.url)
        .await
        .unwrap();
    sqlx::query("UPDATE conversations SET language = $1 WHERE id = $2")
        .bind(language)
        .bind(conversation_id)
        .execute(&mut connection)
        .await
        .unwrap();
}

// ---- the HTTP order source -------------------------------------------------------------------

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

// ---- the command line --------------------------------------------------------------------------

async fn operators_use_the_cli(backend: Backend) {
    let shop = shop(backend, |_| {}).await;
    let (mut visitor, context) = shop.customer("ana@example.com").await;
    let task = shop
        .app
        .app
        .workflow
        .open_task(context, refund("1043", 9_000), None)
        .await
        .unwrap()
        .task;
    assert_eq!(task.status, TaskStatus::AwaitingApproval);
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg("/nonexistent/switchboard.toml")
            .args(args)
            .env("SWITCHBOARD__DATABASE__URL", &shop.app.database.url)
            .env("SWITCHBOARD__DATA_DIR", shop.app.database.dir.path())
            .env("SWITCHBOARD__LOG__LEVEL", "warn")
            .output()
            .expect("the switchboard binary runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, key, stderr) = cli(&["apikey", "create", "--name", "ops", "--scope", "tasks:read"]);
    assert!(ok, "{stderr}");
    let key = key.trim().to_string();
    assert!(key.starts_with("sbk_"));
    let (status, page) = shop.get(&key, "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::OK, "{page}");

    let (ok, listed, stderr) = cli(&["tasks", "list", "--status", "awaiting_approval"]);
    assert!(ok, "{stderr}");
    assert!(listed.contains(&task.id), "{listed}");
    let (ok, shown, stderr) = cli(&["tasks", "show", &task.id]);
    assert!(ok, "{stderr}");
    assert!(shown.contains("awaiting_approval by policy"), "{shown}");
    // Without the finance role the CLI is refused like anyone else.
    let (ok, _, stderr) = cli(&["tasks", "approve", &task.id, "--as", "maria"]);
    assert!(!ok);
    assert!(stderr.contains("finance role"), "{stderr}");
    let (ok, approved, stderr) = cli(&[
        "tasks", "approve", &task.id, "--as", "maria", "--role", "finance", "--reason", "ok",
    ]);
    assert!(ok, "{stderr}");
    assert!(approved.contains("approved"));
    // The running server's outbox worker delivers the notice the CLI queued.
    system_frame(&mut visitor, "has been approved").await;
    let (ok, _, stderr) = cli(&["tasks", "reject", &task.id, "--role", "finance"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot go from approved to rejected"),
        "{stderr}"
    );
    let (_, events) = shop
        .get(&key, &format!("/api/v1/tasks/{}/events", task.id))
        .await;
    assert_eq!(events["data"][2]["actor"], "operator:maria");

    // Keys are listed without their secrets and can be revoked.
    let (ok, spare, stderr) = cli(&["apikey", "create", "--name", "spare", "--scope", "admin"]);
    assert!(ok, "{stderr}");
    let spare = spare.trim().to_string();
    let spare_id = stderr
        .split_whitespace()
        .skip_while(|word| *word != "key")
        .nth(1)
        .expect("the new key's id")
        .to_string();
    let (ok, listed, stderr) = cli(&["apikey", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains(&spare_id) && listed.contains("spare"),
        "{listed}"
    );
    assert!(!listed.contains("sbk_"), "{listed}");
    let (ok, _, stderr) = cli(&["apikey", "revoke", &spare_id]);
    assert!(ok, "{stderr}");
    let (status, body) = shop.get(&spare, "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (ok, listed, _) = cli(&["apikey", "list"]);
    assert!(ok && listed.contains("revoked"), "{listed}");
    let (ok, _, stderr) = cli(&["apikey", "revoke", &spare_id]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    // Revoked on this server: refused at once, though the key was just used.
    let (_, listed, _) = cli(&["apikey", "list"]);
    let ops_id = listed
        .lines()
        .find(|line| line.contains(" ops "))
        .and_then(|line| line.split_whitespace().next())
        .expect("the ops key is listed")
        .to_string();
    shop.app
        .app
        .workflow
        .revoke_api_key(&Actor::operator("test", Vec::new()), &ops_id)
        .await
        .unwrap();
    let (status, _) = shop.get(&key, "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
both_backends!(workflow_operator_cli, operators_use_the_cli);

// ---- the OpenAPI document ----------------------------------------------------------------------

/// Every documented operation exists and answers with a documented status, whose body
/// validates against the documented schema; every route the API serves is documented.
async fn openapi_matches_the_api(backend: Backend) {
    let shop = shop(backend, |settings| settings.workflow.webhooks.clear()).await;
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
        ("get", "/api/v1/contacts/{id}/orders"),
        ("get", "/api/v1/contacts/{id}/tasks"),
        ("get", "/api/v1/orders/{id}"),
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
