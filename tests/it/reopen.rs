//! A resolved conversation and the customer's next message on its thread: reopened to the bot
//! (the default), or a new conversation when `[router] reopen_resolved = false`. A machine's
//! message (an auto-reply) is recorded in the resolved conversation and reopens nothing.

use serde_json::json;
use switchboard::conversation::{Move, Owner, Status};
use switchboard::store::Transfer;
use switchboard_connector::{
    AuthorKind, EventKind, Extensions, InboundEvent, PlatformIdentity, RecordOnly,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Visitor, eventually};

async fn resolve(app: &TestApp, conversation_id: &str) {
    app.app
        .router
        .transfer(
            conversation_id,
            &Transfer {
                to: Move::Resolve,
                change: "resolved".into(),
                actor: "agent:a1".into(),
                data: json!({}),
            },
            None,
        )
        .await
        .expect("an open conversation can be resolved");
}

async fn first_turn(app: &TestApp) -> (Visitor, String) {
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("c-1", "where is my parcel?").await;
    visitor.bot_reply().await;
    let conversation_id = app.conversation_of(&visitor).await;
    (visitor, conversation_id)
}

async fn customer_reopens_a_resolved_conversation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut visitor, conversation_id) = first_turn(&app).await;
    resolve(&app, &conversation_id).await;
    let resolved = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(resolved.state.status, Status::Resolved);

    visitor.send_and_ack("c-2", "it still has not come").await;
    let reply = visitor.bot_reply().await;
    assert_eq!(
        app.conversation_of(&visitor).await,
        conversation_id,
        "the message joins the resolved conversation"
    );
    assert_eq!(reply["text"], "echo: it still has not come");

    let reopened = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(reopened.state.status, Status::Bot);
    assert_eq!(reopened.state.owner, Owner::Bot);
    assert_eq!(
        reopened.state.version,
        resolved.state.version + 1,
        "a reopen is a move: the version goes up by one"
    );

    let events = app
        .store()
        .conversation_events(&conversation_id)
        .await
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let changes: Vec<&serde_json::Value> = events
        .iter()
        .filter(|event| event.kind == EventKind::OwnerChanged)
        .map(|event| &event.data)
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1]["change"], "reopened");
    assert_eq!(changes[1]["from"], "bot");
    assert_eq!(changes[1]["to"], "bot");
    assert_eq!(changes[1]["status"], "bot");
    // The reopen comes before the message that caused it.
    let reopen_at = events
        .iter()
        .position(|event| event.data["change"] == "reopened")
        .unwrap();
    assert_eq!(events[reopen_at + 1].kind, EventKind::MessageStored);
    assert_eq!(events[reopen_at + 1].data["text"], "it still has not come");

    // The transcript is one conversation, answered twice.
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    let authors: Vec<AuthorKind> = messages.iter().map(|message| message.author).collect();
    assert_eq!(
        authors,
        [
            AuthorKind::Customer,
            AuthorKind::Bot,
            AuthorKind::Customer,
            AuthorKind::Bot
        ]
    );
}
both_backends!(
    reopen_resolved_conversation,
    customer_reopens_a_resolved_conversation
);

async fn reopen_off_opens_a_new_conversation(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.router.reopen_resolved = false,
        Default::default(),
    )
    .await;
    let (mut visitor, conversation_id) = first_turn(&app).await;
    resolve(&app, &conversation_id).await;
    visitor.send_and_ack("c-2", "one more thing").await;
    visitor.bot_reply().await;
    let second = &app.conversation_of(&visitor).await;
    assert_ne!(second, &conversation_id, "a new conversation");
    let old = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(old.state.status, Status::Resolved, "history stays resolved");
    let new = app.store().conversation(second).await.unwrap();
    assert_eq!(new.state.status, Status::Bot);
}
both_backends!(reopen_resolved_off, reopen_off_opens_a_new_conversation);

async fn automated_message_reopens_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (visitor, conversation_id) = first_turn(&app).await;
    resolve(&app, &conversation_id).await;
    let before = app.store().conversation(&conversation_id).await.unwrap();
    let mut event = InboundEvent::text(
        "web",
        "auto-1",
        PlatformIdentity::new(visitor.visitor_id.clone(), false),
        visitor.visitor_id.clone(),
        "I am out of the office until Monday.",
    );
    event.extensions = Extensions::default().with(&RecordOnly {
        reason: "auto-submitted: auto-replied".into(),
    });
    let receipt = app.app.router.ingest(event.clone()).await.unwrap();
    assert_eq!(
        receipt.conversation_id, conversation_id,
        "recorded in the thread's conversation"
    );
    let after = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(after.state, before.state, "still resolved, same version");
    // Stored as handled: never answered, and not replayed by a restart.
    assert!(
        app.store().unhandled_inbound().await.unwrap().is_empty(),
        "nothing owed a turn"
    );
    // A redelivery is still a duplicate.
    assert!(app.app.router.ingest(event).await.unwrap().duplicate);
    // Give a wrongly queued turn time to answer, then check that nobody did.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[2].text, "I am out of the office until Monday.");

    // On an open conversation the bot stays silent too.
    let (_other, open_id) = first_turn(&app).await;
    let open = app.store().conversation(&open_id).await.unwrap();
    let mut bounce = InboundEvent::text(
        "web",
        "bounce-1",
        PlatformIdentity::new("mailer-daemon", false),
        open.thread.clone(),
        "Delivery failed",
    );
    bounce.extensions = Extensions::default().with(&RecordOnly {
        reason: "delivery status notification".into(),
    });
    app.app.router.ingest(bounce).await.unwrap();
    let store = app.store().clone();
    eventually(5, "the bounce stored", || {
        let store = store.clone();
        let open_id = open_id.clone();
        async move { store.conversation_messages(&open_id).await.unwrap().len() == 3 }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.store()
            .conversation_messages(&open_id)
            .await
            .unwrap()
            .len(),
        3,
        "no answer to the bounce"
    );
}
both_backends!(
    automated_messages_are_recorded_only,
    automated_message_reopens_nothing
);
