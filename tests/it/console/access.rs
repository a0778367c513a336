//! Who may do what: anonymous requests get nothing, agents no admin pages and no other team's
//! restricted queue, back-office staff only their task queues, requests without the CSRF token
//! or from another origin are refused, sign-in is rate limited, and signing out everywhere
//! ends every session.

use reqwest::StatusCode;
use serde_json::json;
use switchboard::console::Role;
use switchboard::workflow::{NewTask, Scope};

use super::{Desk, PASSWORD, app, handed_off, person};
use crate::both_backends;
use crate::helpers::{Backend, TestApp};

async fn anonymous_get_nothing(app: &TestApp) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/console/api/queue",
        "/console/api/me",
        "/console/api/admin/users",
        "/console/api/contacts?q=a",
        "/api/v1/tasks",
        "/api/v1/reports",
    ] {
        let response = http.get(app.http_url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
    for page in [
        "/console/queue",
        "/console/admin",
        "/console/tasks",
        "/console",
    ] {
        let response = http.get(app.http_url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(response.headers()["location"], "/console/login", "{page}");
    }
    // A made-up session is no session.
    let response = http
        .get(app.http_url("/console/api/queue"))
        .header("cookie", "sb_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn access_control(backend: Backend) {
    let app = app(backend).await;
    anonymous_get_nothing(&app).await;
    person(&app, "agent@shop.test", Role::Agent, &[], &["support"]).await;
    person(&app, "vip-agent@shop.test", Role::Agent, &[], &["vip"]).await;
    person(
        &app,
        "finance@shop.test",
        Role::Backoffice,
        &["finance"],
        &[],
    )
    .await;
    person(&app, "admin@shop.test", Role::Admin, &[], &[]).await;
    let agent = Desk::sign_in(&app, "agent@shop.test").await;
    let vip = Desk::sign_in(&app, "vip-agent@shop.test").await;
    let finance = Desk::sign_in(&app, "finance@shop.test").await;
    let admin = Desk::sign_in(&app, "admin@shop.test").await;

    // Agents: no admin pages, no admin API.
    let (status, page) = agent.get("/console/admin").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.as_str().unwrap().contains("Not for your role"));
    let (status, body) = agent.get("/console/api/admin/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "admin_only");
    let (status, _) = agent.get("/api/v1/reports").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = agent.get("/console/queue").await;
    assert_eq!(status, StatusCode::OK);

    // A restricted team's queue is invisible to other teams' agents.
    let (status, _) = admin
        .call(
            reqwest::Method::PUT,
            "/console/api/admin/teams/vip",
            Some(json!({"restricted": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_visitor, id) = handed_off(&app).await;
    admin
        .ok(
            &format!("/console/api/conversations/{id}/assign"),
            json!({"team": "vip"}),
        )
        .await;
    let (_, queue) = agent.get("/console/api/queue?view=all").await;
    assert_eq!(queue["counts"]["all"], 0, "{queue}");
    let (status, _) = agent.get(&format!("/console/api/conversations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = agent
        .post(&format!("/console/api/conversations/{id}/claim"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, queue) = vip.get("/console/api/queue?view=unassigned").await;
    assert_eq!(queue["counts"]["unassigned"], 1, "{queue}");
    let (status, _) = agent
        .get(&format!("/console/api/conversations/{id}/stream"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Back-office staff: no conversations, only their task queues.
    let (status, _) = finance.get("/console/api/queue").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = finance.get("/console/queue").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = finance.get("/console/tasks").await;
    assert_eq!(status, StatusCode::OK);
    let conversation = app.store().conversation(&id).await.unwrap();
    let operator = switchboard::workflow::Actor::operator("test", Vec::new());
    let callback = app
        .app
        .workflow
        .create_task(
            &operator,
            NewTask {
                kind: "callback".into(),
                contact_id: Some(conversation.contact_id.clone()),
                conversation_id: None,
                order_id: None,
                queue: None,
                payload: json!({"phone": "+34 600 000 000"}),
            },
            None,
        )
        .await
        .unwrap()
        .task;
    let finance_task = app
        .app
        .workflow
        .create_task(
            &operator,
            NewTask {
                kind: "callback".into(),
                contact_id: Some(conversation.contact_id.clone()),
                conversation_id: None,
                order_id: None,
                queue: Some("finance".into()),
                payload: json!({"phone": "+34 600 000 001"}),
            },
            None,
        )
        .await
        .unwrap()
        .task;
    let (status, page) = finance.get("/api/v1/tasks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [finance_task.id.as_str()], "only the finance queue");
    let (status, _) = finance.get(&format!("/api/v1/tasks/{}", callback.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = finance
        .post(
            &format!("/api/v1/tasks/{}/transitions", callback.id),
            json!({"status": "in_progress"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, all) = admin.get("/api/v1/tasks").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);

    // Without the CSRF token, or from another origin, a state change is refused.
    let response = agent
        .http
        .post(format!("{}/console/api/me/availability", agent.base))
        .header("cookie", &agent.cookie)
        .json(&json!({"availability": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_token_invalid");
    let response = agent
        .http
        .post(format!("{}/console/api/me/availability", agent.base))
        .header("cookie", &agent.cookie)
        .header("x-csrf-token", &agent.csrf)
        .header("origin", "https://evil.example")
        .json(&json!({"availability": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cross_origin", "{body}");
    let response = agent
        .http
        .post(format!(
            "{}/api/v1/tasks/{}/approve",
            agent.base, finance_task.id
        ))
        .header("cookie", &agent.cookie)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the REST API asks sessions for the token too"
    );
    agent
        .ok(
            "/console/api/me/availability",
            json!({"availability": "online"}),
        )
        .await;

    // Admins manage API keys over the console's REST path; an admin API key works there too.
    let (status, created) = admin
        .post(
            "/console/api/admin/api-keys",
            json!({"name": "crm", "scopes": ["admin"], "roles": []}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap();
    let response = reqwest::Client::new()
        .get(app.http_url("/console/api/admin/users"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reader = app
        .app
        .workflow
        .create_api_key(
            &switchboard::workflow::Actor::operator("test", Vec::new()),
            "reader",
            &[Scope::TasksRead],
            &[],
        )
        .await
        .unwrap()
        .1;
    let response = reqwest::Client::new()
        .get(app.http_url("/console/api/admin/users"))
        .bearer_auth(reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
both_backends!(console_access_control, access_control);

async fn sessions(backend: Backend) {
    let app = app(backend).await;
    person(&app, "dave@shop.test", Role::Agent, &[], &["support"]).await;
    // Wrong passwords and unknown accounts read the same.
    let (status, body) = Desk::try_sign_in(&app, "dave@shop.test", "wrong password!")
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_credentials"))
    );
    let (status, _) = Desk::try_sign_in(&app, "nobody@shop.test", PASSWORD)
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Two sessions; signing out everywhere ends both.
    let first = Desk::sign_in(&app, "dave@shop.test").await;
    let second = Desk::sign_in(&app, "dave@shop.test").await;
    let (status, _) = second.get("/console/api/me").await;
    assert_eq!(status, StatusCode::OK);
    first
        .ok("/console/api/me/sign-out-everywhere", json!({}))
        .await;
    for desk in [&first, &second] {
        let (status, _) = desk.get("/console/api/me").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Sign-in attempts per account are limited (5 a minute by default), even with the
    // right password after the limit.
    let mut limited = false;
    for _ in 0..6 {
        if let Err((status, _)) = Desk::try_sign_in(&app, "dave@shop.test", "still wrong!!").await
            && status == StatusCode::TOO_MANY_REQUESTS
        {
            limited = true;
        }
    }
    assert!(limited, "sign-in attempts were not limited");
    let refused = reqwest::Client::new()
        .post(app.http_url("/console/login"))
        .json(&json!({"email": "dave@shop.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = refused.headers().get("retry-after").cloned();
    assert_eq!(
        retry_after.as_ref().map(|value| value.to_str().unwrap()),
        Some("60"),
        "when to try again"
    );
    // A disabled account cannot sign in.
    person(&app, "erin@shop.test", Role::Admin, &[], &[]).await;
    person(&app, "frank@shop.test", Role::Agent, &[], &[]).await;
    let erin = Desk::sign_in(&app, "erin@shop.test").await;
    let frank = Desk::sign_in(&app, "frank@shop.test").await;
    let frank_id = frank.id();
    let (status, _) = erin
        .call(
            reqwest::Method::PATCH,
            &format!("/console/api/admin/users/{frank_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = frank.get("/console/api/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = Desk::try_sign_in(&app, "frank@shop.test", PASSWORD)
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
both_backends!(console_sessions, sessions);
