//! Customers: two contacts merged (their histories show together and the workflow's
//! ownership checks use both), a satisfaction rating with a comment after resolving, the
//! reports computed from the events, and the queue's live feed resuming after a disconnect.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::console::Role;
use switchboard::workflow::{Actor, NewTask, VerifiedContext};

use super::{Desk, agent_message, app, handed_off, person};
use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn refund(order: &str) -> NewTask {
    NewTask {
        kind: "refund".into(),
        contact_id: None,
        conversation_id: None,
        order_id: Some(order.into()),
        queue: None,
        payload: json!({"amount_cents": 1000, "reason": "broken"}),
    }
}

async fn merge(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.workflow.orders_seed =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/orders.json")
        },
        crate::helpers::options_with(
            Some(std::sync::Arc::new(crate::router::HandsOff)),
            Vec::new(),
        ),
    )
    .await;
    person(&app, "agent@shop.test", Role::Agent, &[], &["support"]).await;
    let agent = Desk::sign_in(&app, "agent@shop.test").await;
    // One visitor is ana@example.com's (an admin linked the email); another is not.
    let mut ana = app.visitor().await;
    ana.send_and_ack("a1", "hello from my laptop").await;
    ana.bot_reply().await;
    let admin = Actor::operator("test", Vec::new());
    let ana_contact = app
        .app
        .workflow
        .link_email(&admin, "web", &ana.visitor_id, "ana@example.com")
        .await
        .unwrap();
    let mut phone = app.visitor().await;
    phone.send_and_ack("p1", "hello from my phone").await;
    phone.bot_reply().await;
    let phone_conversation = app.conversation_of(&phone).await;
    let phone_contact = app
        .store()
        .conversation(&phone_conversation)
        .await
        .unwrap()
        .contact_id;
    let context = VerifiedContext {
        contact_id: phone_contact.clone(),
        conversation_id: phone_conversation.clone(),
        channel: "web".into(),
        verified: true,
    };
    let refused = app
        .app
        .workflow
        .open_task(context.clone(), refund("1042"), None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("1042"), "{refused}");

    // The agent finds both and merges Ana's laptop contact into the phone's.
    let (status, found) = agent.get("/console/api/contacts?q=ana@example").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["data"][0]["id"], ana_contact.as_str());
    let merged = agent
        .ok(
            &format!("/console/api/contacts/{phone_contact}/merge"),
            json!({"other_id": ana_contact}),
        )
        .await;
    assert_eq!(merged["emails"], json!(["ana@example.com"]), "{merged}");
    assert_eq!(
        merged["identities"].as_array().unwrap().len(),
        2,
        "{merged}"
    );
    assert_eq!(merged["conversations"].as_array().unwrap().len(), 2);
    assert_eq!(merged["unreachable"], json!([]), "{merged}");
    // A thread the platform said cannot be reached shows on the contact, with its reason.
    let phone_thread = app
        .store()
        .conversation(&phone_conversation)
        .await
        .unwrap()
        .thread;
    app.store()
        .mark_unreachable("web", &phone_thread, "blocked the bot")
        .await
        .unwrap();
    let (_, view) = agent
        .get(&format!("/console/api/contacts/{phone_contact}"))
        .await;
    assert_eq!(view["unreachable"][0]["channel"], "web", "{view}");
    assert_eq!(view["unreachable"][0]["thread"], phone_thread.as_str());
    assert_eq!(view["unreachable"][0]["reason"], "blocked the bot");
    // Merged away: not found any more, and not merged twice.
    let (_, found) = agent
        .get(&format!("/console/api/contacts?q={}", ana.visitor_id))
        .await;
    assert_eq!(found["data"][0]["id"], phone_contact.as_str(), "{found}");
    let (status, _) = agent
        .post(
            &format!("/console/api/contacts/{phone_contact}/merge"),
            json!({"other_id": ana_contact}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The histories show together, and the phone may now act on Ana's orders.
    let (_, visitor_view) = agent
        .get(&format!("/console/api/conversations/{phone_conversation}"))
        .await;
    let texts: Vec<&str> = visitor_view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"hello from my laptop") && texts.contains(&"hello from my phone"),
        "{texts:?}"
    );
    let task = app
        .app
        .workflow
        .open_task(context, refund("1042"), None)
        .await
        .unwrap()
        .task;
    assert_eq!(task.contact_id, phone_contact);
}
both_backends!(console_contact_merge, merge);

async fn rating_and_reports(backend: Backend) {
    let app = app(backend).await;
    person(&app, "agent@shop.test", Role::Agent, &[], &["support"]).await;
    person(&app, "admin@shop.test", Role::Admin, &[], &[]).await;
    let agent = Desk::sign_in(&app, "agent@shop.test").await;
    let admin = Desk::sign_in(&app, "admin@shop.test").await;
    // A contained conversation, and one handed off, answered and resolved.
    let mut contained = app.visitor().await;
    contained.send_and_ack("x1", "hello").await;
    contained.bot_reply().await;
    let (mut visitor, id) = handed_off(&app).await;
    agent
        .ok(&format!("/console/api/conversations/{id}/claim"), json!({}))
        .await;
    agent
        .ok(
            &format!("/console/api/conversations/{id}/reply"),
            json!({"text": "Sorted, your parcel leaves today."}),
        )
        .await;
    agent_message(&mut visitor).await;
    agent
        .ok(
            &format!("/console/api/conversations/{id}/resolve"),
            json!({}),
        )
        .await;
    let question = visitor
        .expect("the rating question", |frame| {
            frame["type"] == "message" && frame["author"] == "system" && !frame["choices"].is_null()
        })
        .await;
    let choices: Vec<&str> = question["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(choices, ["csat-1", "csat-2", "csat-3", "csat-4", "csat-5"]);
    // The customer types 4 (as on a channel without buttons; pressing the button sends its
    // choice id, `rating_answer`'s unit test), then adds a comment; both stay in the resolved
    // conversation.
    let ack = visitor.send_and_ack("r1", "4").await;
    assert_eq!(ack["duplicate"], false);
    visitor
        .expect("thanks", |frame| {
            frame["type"] == "message"
                && frame["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Thank you!"))
        })
        .await;
    visitor.send_and_ack("r2", "quick and kind").await;
    visitor
        .expect("thanks for the comment", |frame| {
            frame["text"] == "Thank you for your comment."
        })
        .await;
    let conversation = app.store().conversation(&id).await.unwrap();
    assert_eq!(conversation.state.status.as_str(), "resolved");
    let rated: Vec<Value> = app
        .store()
        .conversation_events(&id)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.kind.as_str() == "conversation.rated")
        .map(|event| event.data.clone())
        .collect();
    assert_eq!(
        rated,
        [
            json!({"score": 4, "comment": null}),
            json!({"score": null, "comment": "quick and kind"})
        ]
    );

    // The report reads the same events.
    let (status, report) = admin.get("/api/v1/reports?bucket=hour").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let conversations = &report["conversations"];
    assert_eq!(conversations["total"], 2, "{report}");
    assert_eq!(conversations["contained"], 1);
    assert_eq!(conversations["containment"], 0.5);
    assert_eq!(
        conversations["handoff_reasons"],
        json!({"customer_request": 1})
    );
    assert_eq!(conversations["by_channel"], json!({"web": 2}));
    assert_eq!(conversations["first_response"]["count"], 1);
    assert!(
        conversations["first_response"]["median_ms"]
            .as_i64()
            .unwrap()
            >= 0
    );
    assert_eq!(conversations["resolution"]["count"], 1);
    assert_eq!(report["satisfaction"]["average"], 4.0);
    // No language model here: no usage to report.
    assert_eq!(report["llm_usage"]["requests"], 0, "{report}");
    assert_eq!(report["llm_usage"]["tokens_per_conversation"], Value::Null);
    assert_eq!(report["satisfaction"]["distribution"]["4"], 1);
    let series_total: u64 = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["conversations"].as_u64().unwrap())
        .sum();
    assert_eq!(series_total, 2);
    let (_, only_team) = admin.get("/api/v1/reports?team=support").await;
    assert_eq!(only_team["conversations"]["total"], 1, "{only_team}");
    let (status, bad) = admin.get("/api/v1/reports?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["field"], "from");
}
both_backends!(console_rating_and_reports, rating_and_reports);

/// Reads SSE events (`event`, `id`, `data`) from a response body.
async fn next_event<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    buffer: &mut String,
) -> (String, String, Value) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut kind, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    kind = rest.trim().into();
                }
                if let Some(rest) = line.strip_prefix("id:") {
                    id = rest.trim().into();
                }
                if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.trim());
                }
            }
            if kind.is_empty() {
                continue;
            }
            return (kind, id, serde_json::from_str(&data).unwrap_or(Value::Null));
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(chunk.as_ref()));
    }
}

async fn feed_resumes(backend: Backend) {
    let app = app(backend).await;
    person(&app, "agent@shop.test", Role::Agent, &[], &["support"]).await;
    let agent = Desk::sign_in(&app, "agent@shop.test").await;
    let (_, queue) = agent.get("/console/api/queue").await;
    let since = queue["now_ms"].as_i64().unwrap();
    let open = |since: Option<String>| {
        let mut request = agent
            .http
            .get(format!("{}/console/api/feed", agent.base))
            .header("cookie", &agent.cookie);
        if let Some(since) = since {
            request = request.header("last-event-id", since);
        }
        request.send()
    };
    let response = open(Some(since.to_string())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let (_visitor, id) = handed_off(&app).await;
    let last_id = loop {
        let (kind, event_id, data) = next_event(&mut stream, &mut buffer).await;
        let items = data.as_array().cloned().unwrap_or_default();
        let handoff = items
            .iter()
            .find(|item| item["conversation_id"] == id.as_str() && item["kind"] == "owner.changed");
        if kind == "items"
            && let Some(item) = handoff
        {
            assert_eq!(item["owner"], "queue:support");
            break event_id;
        }
    };
    drop(stream);
    // While disconnected, the conversation is claimed by someone else; resuming from the last
    // id sent brings its current row.
    person(&app, "other@shop.test", Role::Agent, &[], &["support"]).await;
    let other = Desk::sign_in(&app, "other@shop.test").await;
    other
        .ok(&format!("/console/api/conversations/{id}/claim"), json!({}))
        .await;
    let response = open(Some(last_id)).await.unwrap();
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    loop {
        let (kind, _, data) = next_event(&mut stream, &mut buffer).await;
        if kind == "row" && data["id"] == id.as_str() {
            assert_eq!(data["status"], "agent", "{data}");
            assert_eq!(data["owner"], format!("agent:{}", other.id()));
            break;
        }
    }
}
both_backends!(console_feed_resumes, feed_resumes);
