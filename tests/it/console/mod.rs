//! The agent console over HTTP, on both backends: accounts and access control, ownership
//! moves (claim, take over, assign, hand back, resolve) with the bot silent while people own
//! a conversation, replies reaching the customer live, notes, labels, the queue's live feed,
//! business hours, automatic assignment, contact merges that the workflow honours,
//! satisfaction ratings and reports.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::console::Role;
use switchboard::console::accounts::NewUser;
use switchboard::conversation::{Owner, Status};

mod access;
mod customers;
mod hours;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Visitor, eventually, options_with};

pub const PASSWORD: &str = "correct-horse-battery";

/// A person signed in to the console: their session cookie and CSRF token.
pub struct Desk {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
    pub user: Value,
}

impl Desk {
    pub async fn sign_in(app: &TestApp, email: &str) -> Desk {
        Desk::try_sign_in(app, email, PASSWORD)
            .await
            .unwrap_or_else(|(status, body)| panic!("sign-in of {email}: {status} {body}"))
    }

    pub async fn try_sign_in(
        app: &TestApp,
        email: &str,
        password: &str,
    ) -> Result<Desk, (StatusCode, Value)> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = http
            .post(app.http_url("/console/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let cookie = response
            .headers()
            .get("set-cookie")
            .map(|value| value.to_str().unwrap().to_string());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK {
            return Err((status, body));
        }
        let cookie = cookie.expect("a session cookie");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        Ok(Desk {
            http,
            base: app.http_url(""),
            cookie: cookie.split(';').next().unwrap().to_string(),
            csrf: body["csrf_token"].as_str().unwrap().to_string(),
            user: body["user"].clone(),
        })
    }

    pub fn id(&self) -> String {
        self.user["id"].as_str().unwrap().to_string()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// POST that must succeed.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {answer}");
        answer
    }
}

pub async fn person(app: &TestApp, email: &str, role: Role, roles: &[&str], teams: &[&str]) {
    app.app
        .console
        .create_user(NewUser {
            email: email.into(),
            name: email.split('@').next().unwrap().into(),
            password: PASSWORD.into(),
            role,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            teams: teams.iter().map(|t| t.to_string()).collect(),
        })
        .await
        .unwrap();
}

/// A customer who asked for a person: their conversation waits in the support queue.
pub async fn handed_off(app: &TestApp) -> (Visitor, String) {
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("c1", "hello").await;
    visitor.bot_reply().await;
    visitor.send_and_ack("c2", "let me talk to a human").await;
    visitor.bot_reply().await;
    let id = app.conversation_of(&visitor).await;
    eventually(10, "the handoff", || async {
        app.store().conversation(&id).await.unwrap().state.status == Status::Queued
    })
    .await;
    (visitor, id)
}

/// A customer who asked for a person; their conversation may be assigned at once.
pub async fn handed_off_or_assigned(app: &TestApp) -> (Visitor, String) {
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("c1", "let me talk to a human").await;
    visitor.bot_reply().await;
    let id = app.conversation_of(&visitor).await;
    eventually(10, "the handoff", || async {
        app.store().conversation(&id).await.unwrap().state.status != Status::Bot
    })
    .await;
    (visitor, id)
}

pub async fn agent_message(visitor: &mut Visitor) -> Value {
    visitor
        .expect("an agent's message", |frame| {
            frame["type"] == "message" && frame["author"] == "agent"
        })
        .await
}

/// No bot message arrives for a while.
pub async fn bot_stays_silent(visitor: &mut Visitor) {
    let silent = tokio::time::timeout(Duration::from_millis(800), visitor.bot_reply()).await;
    assert!(
        silent.is_err(),
        "the bot answered a conversation it does not own: {:?}",
        silent.ok()
    );
}

pub async fn app(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(Arc::new(crate::router::HandsOff)), Vec::new()),
    )
    .await
}

async fn claim_reply_hand_back(backend: Backend) {
    let app = app(backend).await;
    person(&app, "alice@shop.test", Role::Agent, &[], &["support"]).await;
    let (mut visitor, id) = handed_off(&app).await;
    let alice = Desk::sign_in(&app, "alice@shop.test").await;

    // The queue shows it, unassigned, with the handoff package.
    let (status, queue) = alice.get("/console/api/queue?view=unassigned").await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    assert_eq!(queue["counts"]["unassigned"], 1, "{queue}");
    assert_eq!(queue["items"][0]["id"], id.as_str());
    assert_eq!(queue["items"][0]["channel_kind"], "webchat");
    assert!(
        queue["items"][0]["first_response_due_ms"].is_i64(),
        "{queue}"
    );
    let (_, view) = alice.get(&format!("/console/api/conversations/{id}")).await;
    assert_eq!(view["handoff"]["reason"], "customer_request", "{view}");
    assert_eq!(view["handoff"]["summary"]["intent"], "talk_to_human");
    assert_eq!(view["history"].as_array().unwrap().len(), 4, "{view}");

    // Replying before claiming is refused; claiming makes it hers.
    let (status, refused) = alice
        .post(
            &format!("/console/api/conversations/{id}/reply"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "not_your_conversation");
    let claimed = alice
        .ok(
            &format!("/console/api/conversations/{id}/claim"),
            json!({"expected_version": view["version"]}),
        )
        .await;
    assert_eq!(claimed["owner"], format!("agent:{}", alice.id()));

    // Her reply reaches the customer live; the customer's next message gets no bot answer.
    alice
        .ok(
            &format!("/console/api/conversations/{id}/reply"),
            json!({"text": "Hello, I am Alice. How can I help?"}),
        )
        .await;
    let reply = agent_message(&mut visitor).await;
    assert_eq!(reply["text"], "Hello, I am Alice. How can I help?");
    visitor.send_and_ack("c3", "my parcel is late").await;
    bot_stays_silent(&mut visitor).await;

    // A private note and labels are events, never sent to the customer.
    alice
        .ok(
            &format!("/console/api/conversations/{id}/notes"),
            json!({"text": "VIP customer"}),
        )
        .await;
    let (status, labels) = alice
        .call(
            reqwest::Method::PUT,
            &format!("/console/api/conversations/{id}/labels"),
            Some(json!({"labels": ["Shipping", "late", "shipping"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{labels}");
    assert_eq!(labels["labels"], json!(["shipping", "late"]));
    let (_, view) = alice.get(&format!("/console/api/conversations/{id}")).await;
    assert_eq!(view["notes"][0]["text"], "VIP customer");
    assert_eq!(view["conversation"]["labels"], json!(["shipping", "late"]));

    // Hand back: the bot answers the next message, with what it knew.
    alice
        .ok(
            &format!("/console/api/conversations/{id}/hand-back"),
            json!({}),
        )
        .await;
    let state = app.store().conversation(&id).await.unwrap().state;
    assert_eq!((state.status, state.owner), (Status::Bot, Owner::Bot));
    visitor.send_and_ack("c4", "thanks").await;
    let bot = visitor.bot_reply().await;
    assert_eq!(bot["text"], "bot: thanks");
    let frames: Vec<&Value> = visitor.backlog.iter().collect();
    assert!(
        frames.iter().all(|frame| frame["text"] != "VIP customer"),
        "a private note reached the customer: {frames:?}"
    );
    let kinds: Vec<String> = app
        .store()
        .conversation_events(&id)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.kind.as_str() == "owner.changed")
        .map(|event| event.data["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["handoff", "claim", "hand_back"]);
}
both_backends!(console_claim_reply_hand_back, claim_reply_hand_back);

async fn take_over_before_handoff(backend: Backend) {
    let app = app(backend).await;
    person(&app, "bob@shop.test", Role::Agent, &[], &["support"]).await;
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("t1", "hello").await;
    visitor.bot_reply().await;
    let id = app.conversation_of(&visitor).await;
    let bob = Desk::sign_in(&app, "bob@shop.test").await;
    let (_, all) = bob.get("/console/api/queue?view=all").await;
    assert_eq!(all["items"][0]["status"], "bot", "{all}");
    let taken = bob
        .ok(&format!("/console/api/conversations/{id}/claim"), json!({}))
        .await;
    assert_eq!(taken["status"], "agent");
    visitor.send_and_ack("t2", "are you a person?").await;
    bot_stays_silent(&mut visitor).await;
    bob.ok(
        &format!("/console/api/conversations/{id}/reply"),
        json!({"text": "Yes, Bob here."}),
    )
    .await;
    assert_eq!(agent_message(&mut visitor).await["text"], "Yes, Bob here.");
    // A second claim by someone else is refused.
    person(&app, "carol@shop.test", Role::Agent, &[], &["support"]).await;
    let carol = Desk::sign_in(&app, "carol@shop.test").await;
    let (status, refused) = carol
        .post(&format!("/console/api/conversations/{id}/claim"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "owned_by_another_agent");
    let change = app
        .store()
        .conversation_events(&id)
        .await
        .unwrap()
        .into_iter()
        .find(|event| event.kind.as_str() == "owner.changed")
        .unwrap();
    assert_eq!(change.data["change"], "takeover");
}
both_backends!(console_take_over_before_handoff, take_over_before_handoff);
