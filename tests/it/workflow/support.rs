//! What the workflow tests share: a webhook receiver that checks signatures as the Standard
//! Webhooks spec says, a demo shop (the app with its endpoints, keys and API calls), and a
//! customer signed in to the web chat.

use crate::helpers::{Backend, TestApp, Visitor};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use switchboard::app::AppOptions;
use switchboard::config::Settings;
use switchboard::workflow::settings::WebhookEndpoint;
use switchboard::workflow::{Actor, NewTask, Scope, VerifiedContext};

pub const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const INBOUND_SECRET: &str = "whsec_c3dpdGNoYm9hcmQtaW5ib3VuZC10ZXN0LWtleQ==";

// ---- a webhook receiver that checks signatures as the Standard Webhooks spec says -----------

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub accepted: Arc<Mutex<Vec<Received>>>,
    pub rejected: Arc<Mutex<usize>>,
}

impl Receiver {
    pub fn events(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|received| serde_json::from_str(&received.body).unwrap())
            .collect()
    }

    pub fn events_of(&self, task_id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["data"]["task_id"] == task_id)
            .collect()
    }
}

/// An independent check of the signature (not Switchboard's code): HMAC-SHA256 with the
/// base64-decoded secret over "id.timestamp.body", base64, in a `v1,` entry.
pub fn signature_valid(secret: &str, id: &str, timestamp: &str, header: &str, body: &[u8]) -> bool {
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

pub async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
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
pub async fn start_receiver(receiver: Receiver) -> String {
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

pub fn demo_orders() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/orders.json")
}

pub struct Shop {
    pub app: TestApp,
    pub receiver: Receiver,
    pub receiver_url: String,
    pub http: reqwest::Client,
}

pub async fn shop(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Shop {
    shop_with(backend, configure, AppOptions::default()).await
}

pub async fn shop_with(
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
    pub async fn key(&self, scopes: &[Scope], roles: &[&str]) -> String {
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

    pub async fn call(
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

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(reqwest::Method::GET, key, path, None, None).await;
        (status, body)
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(reqwest::Method::POST, key, path, Some(body), None)
            .await;
        (status, body)
    }

    /// A web chat visitor who has written once (so their contact and conversation exist),
    /// linked by an admin to the shop customer `email`.
    pub async fn customer(&self, email: &str) -> (Visitor, VerifiedContext) {
        let mut visitor = self.app.visitor().await;
        visitor.send_and_ack("hello-1", "hello").await;
        visitor.bot_reply().await;
        let conversation_id = self.app.conversation_of(&visitor).await;
        let admin = self.key(&[Scope::Admin], &[]).await;
        let (status, linked) = self
            .post(
                &admin,
                "/api/v1/contacts/links",
                &json!({"channel": "web", "platform_user_id": visitor.visitor_id,
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

    pub async fn system_messages(&self, conversation_id: &str) -> Vec<String> {
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
    pub async fn settled_deliveries(&self, key: &str, task_id: &str) -> Vec<Value> {
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

pub fn convert_headers(headers: &reqwest::header::HeaderMap) -> HeaderMap {
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

pub fn refund(order_id: &str, amount_cents: i64) -> NewTask {
    NewTask {
        kind: "refund".into(),
        contact_id: None,
        conversation_id: None,
        order_id: Some(order_id.into()),
        queue: None,
        payload: json!({"amount_cents": amount_cents, "reason": "arrived broken"}),
    }
}

pub async fn system_frame(visitor: &mut Visitor, containing: &str) -> Value {
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
pub async fn bot_frame(visitor: &mut Visitor, containing: &str) -> Value {
    let wanted = containing.to_string();
    visitor
        .expect(containing, move |frame| {
            frame["type"] == "message"
                && frame["author"] == "bot"
                && frame["text"].as_str().unwrap_or_default().contains(&wanted)
        })
        .await
}

pub fn sign_inbound(id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(INBOUND_SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Set a conversation's language the way the router does after a turn.
pub async fn sqlx_language(shop: &Shop, conversation_id: &str, language: &str) {
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
