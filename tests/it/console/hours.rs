//! Business hours and automatic assignment: out of hours the customer is told when people
//! are back and the conversation waits in the queue (or stays with the bot); online agents
//! get queued conversations by round robin.

use chrono::Datelike;
use reqwest::StatusCode;
use serde_json::json;
use switchboard::console::Role;
use switchboard::conversation::{Owner, Status};

use super::{Desk, app, person};
use crate::both_backends;
use crate::helpers::{Backend, TestApp, eventually};

/// Open only one minute on a day three days from today: closed now, and the next opening
/// is that day at 00:00 UTC.
fn closed_hours() -> (serde_json::Value, &'static str) {
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let names = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let index = (chrono::Utc::now().weekday().num_days_from_monday() as usize + 3) % 7;
    (
        json!({"timezone": "UTC", days[index]: "00:00-00:01"}),
        names[index],
    )
}

async fn ask_for_a_person(app: &TestApp) -> (crate::helpers::Visitor, String, String) {
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("h1", "let me talk to a human").await;
    let notice = visitor
        .expect("the out-of-hours notice", |frame| {
            frame["type"] == "message" && frame["author"] == "system"
        })
        .await;
    let id = app.conversation_of(&visitor).await;
    (visitor, id, notice["text"].as_str().unwrap().to_string())
}

async fn out_of_hours(backend: Backend) {
    let app = app(backend).await;
    person(&app, "admin@shop.test", Role::Admin, &[], &[]).await;
    let admin = Desk::sign_in(&app, "admin@shop.test").await;
    let (hours, day) = closed_hours();
    let (status, teams) = admin
        .call(
            reqwest::Method::PUT,
            "/console/api/admin/teams/support",
            Some(json!({"hours": hours, "out_of_hours": "queue"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{teams}");
    let (_visitor, id, notice) = ask_for_a_person(&app).await;
    assert!(
        notice.contains(&format!("We are back on {day} at 00:00 (UTC)")),
        "{notice}"
    );
    let conversation = app.store().conversation(&id).await.unwrap();
    assert_eq!(conversation.state.owner, Owner::Queue("support".into()));
    let (_, view) = admin.get(&format!("/console/api/conversations/{id}")).await;
    assert_eq!(view["handoff"]["out_of_hours"], true, "{view}");

    // Configured to return to the bot instead: the customer is told, the bot keeps it.
    admin
        .call(
            reqwest::Method::PUT,
            "/console/api/admin/teams/support",
            Some(json!({"out_of_hours": "bot"})),
        )
        .await;
    let (_visitor, id, notice) = ask_for_a_person(&app).await;
    assert!(notice.contains("Our team is away right now"), "{notice}");
    let conversation = app.store().conversation(&id).await.unwrap();
    assert_eq!(conversation.state.status, Status::Bot);

    // Bad hours are refused with the reason.
    let (status, body) = admin
        .call(
            reqwest::Method::PUT,
            "/console/api/admin/teams/support",
            Some(json!({"hours": {"timezone": "Mars/Olympus"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "hours", "{body}");
}
both_backends!(console_out_of_hours, out_of_hours);

async fn round_robin(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.console.assign_interval_ms = 100,
        crate::helpers::options_with(
            Some(std::sync::Arc::new(crate::router::HandsOff)),
            Vec::new(),
        ),
    )
    .await;
    person(&app, "admin@shop.test", Role::Admin, &[], &[]).await;
    person(&app, "ann@shop.test", Role::Agent, &[], &["support"]).await;
    person(&app, "ben@shop.test", Role::Agent, &[], &["support"]).await;
    person(&app, "cat@shop.test", Role::Agent, &[], &["support"]).await;
    let admin = Desk::sign_in(&app, "admin@shop.test").await;
    admin
        .call(
            reqwest::Method::PUT,
            "/console/api/admin/teams/support",
            Some(json!({"assignment": "round_robin"})),
        )
        .await;
    // Ann and Ben are online; Cat is not.
    let mut online = Vec::new();
    for email in ["ann@shop.test", "ben@shop.test"] {
        let desk = Desk::sign_in(&app, email).await;
        desk.ok(
            "/console/api/me/availability",
            json!({"availability": "online"}),
        )
        .await;
        online.push(desk.id());
    }
    let mut owners = Vec::new();
    for _ in 0..4 {
        let (_visitor, id) = super::handed_off_or_assigned(&app).await;
        eventually(10, "the conversation to be assigned", || async {
            app.store().conversation(&id).await.unwrap().state.status == Status::Agent
        })
        .await;
        owners.push(app.store().conversation(&id).await.unwrap().state.owner);
    }
    let given: Vec<String> = owners
        .iter()
        .map(|owner| match owner {
            Owner::Agent(id) => id.clone(),
            other => panic!("not assigned to an agent: {other}"),
        })
        .collect();
    for id in &given {
        assert!(online.contains(id), "assigned to someone offline");
    }
    assert_ne!(given[0], given[1], "round robin alternates: {given:?}");
    assert_eq!(given[0], given[2], "round robin alternates: {given:?}");
    assert_eq!(given[1], given[3], "round robin alternates: {given:?}");
}
both_backends!(console_round_robin, round_robin);
