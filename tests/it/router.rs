//! The router's promises: dedupe at the door, order per conversation, one owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard::app::{App, AppOptions};
use switchboard::assistant::{Assistant, AssistantError, Handoff, Reply, Turn};
use switchboard::conversation::{Owner, Status};
use switchboard::store::{IngestOptions, Store};
use switchboard_connector::{
    AuthorKind, CommandReply, EventKind, Extensions, InboundEvent, PlatformIdentity,
};

use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, TestDatabase, eventually, options_with, postgres_admin_url, settings,
};

/// How the router stores a customer's message: a message on a resolved conversation's thread
/// reopens it.
const REOPENING: IngestOptions = IngestOptions {
    reopen_resolved: true,
    record_only: false,
};

/// Web chat message number `index` from visitor-1, on their thread.
fn visitor_one_says(index: usize) -> InboundEvent {
    InboundEvent::text(
        "web",
        format!("m-{index}"),
        PlatformIdentity::new("visitor-1", false),
        "visitor-1",
        format!("message {index}"),
    )
}

async fn resent_message_is_stored_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut visitor = app.visitor().await;
    let first = visitor.send_and_ack("c-1", "where is my parcel?").await;
    assert_eq!(first["duplicate"], false);
    visitor.bot_reply().await;
    // The connection dropped before the ack arrived, say: the widget resends.
    let again = visitor.send_and_ack("c-1", "where is my parcel?").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        again["id"], first["id"],
        "the resend maps to the original message"
    );
    // Even from another tab of the same visitor after a reconnect.
    let mut tab = crate::helpers::Visitor::connect(&app.ws_url(), Some(&visitor.token)).await;
    let third = tab.send_and_ack("c-1", "where is my parcel?").await;
    assert_eq!(third["duplicate"], true);

    let history = app
        .store()
        .history("web", &visitor.visitor_id, 100)
        .await
        .unwrap();
    let customer: Vec<_> = history
        .iter()
        .filter(|m| m.author == AuthorKind::Customer)
        .collect();
    let bot: Vec<_> = history
        .iter()
        .filter(|m| m.author == AuthorKind::Bot)
        .collect();
    assert_eq!(customer.len(), 1, "stored once: {history:?}");
    assert_eq!(bot.len(), 1, "answered once: {history:?}");
    // The same client id from a different visitor is a different message.
    let mut other = app.visitor().await;
    let theirs = other.send_and_ack("c-1", "hello").await;
    assert_eq!(theirs["duplicate"], false);
}
both_backends!(dedupe_of_a_resent_message, resent_message_is_stored_once);

/// A platform id already stored for one thread, arriving on another (a forged or reused email
/// `Message-ID`), is told apart from a redelivery: the store says so, and nothing is written.
async fn reused_platform_id_is_told_apart(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let store = Store::connect(&database.url, 2).await.unwrap();
    let from = |thread: &str| {
        InboundEvent::text(
            "mail",
            "<first-1@customer.example>",
            PlatformIdentity::new(thread, false),
            thread,
            format!("written by {thread}"),
        )
    };
    let carla = store.ingest(&from("carla"), REOPENING).await.unwrap();
    assert!(!carla.duplicate && !carla.other_thread);
    let again = store.ingest(&from("carla"), REOPENING).await.unwrap();
    assert!(again.duplicate && !again.other_thread, "a redelivery");
    let mallory = store.ingest(&from("mallory"), REOPENING).await.unwrap();
    assert!(
        mallory.duplicate && mallory.other_thread,
        "another thread's id"
    );
    let history = store.history("mail", "carla", 10).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(
        store
            .history("mail", "mallory", 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}
both_backends!(
    a_reused_platform_id_is_told_apart,
    reused_platform_id_is_told_apart
);

/// Records, per conversation, the order in which turns ran and whether two ever overlapped.
#[derive(Default)]
struct Recorder {
    seen: Mutex<HashMap<String, Vec<String>>>,
    running: Mutex<HashMap<String, u32>>,
    overlaps: Mutex<u32>,
    most_at_once: Mutex<u32>,
    at_once: Mutex<u32>,
}

#[async_trait]
impl Assistant for Recorder {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        {
            let mut running = self.running.lock().unwrap();
            let count = running.entry(turn.conversation_id.clone()).or_default();
            *count += 1;
            if *count > 1 {
                *self.overlaps.lock().unwrap() += 1;
            }
            let mut at_once = self.at_once.lock().unwrap();
            *at_once += 1;
            let mut most = self.most_at_once.lock().unwrap();
            *most = (*most).max(*at_once);
        }
        // Uneven work: without per-conversation serialisation later turns would overtake.
        let n: u64 = turn.text.rsplit(' ').next().unwrap().parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(1 + (n * 7) % 11)).await;
        self.seen
            .lock()
            .unwrap()
            .entry(turn.conversation_id.clone())
            .or_default()
            .push(turn.text.clone());
        *self
            .running
            .lock()
            .unwrap()
            .get_mut(&turn.conversation_id)
            .unwrap() -= 1;
        *self.at_once.lock().unwrap() -= 1;
        Ok(Reply {
            messages: vec![format!("re: {}", turn.text)],
            ..Reply::default()
        })
    }
}

async fn turns_keep_order_per_conversation(backend: Backend) {
    let recorder = Arc::new(Recorder::default());
    let app = TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(recorder.clone()), Vec::new()),
    )
    .await;
    let visitors = 6;
    let messages = 15;
    let mut tasks = Vec::new();
    for v in 0..visitors {
        let url = app.ws_url();
        tasks.push(tokio::spawn(async move {
            let mut visitor = crate::helpers::Visitor::connect(&url, None).await;
            // Pipelined: all sent before any reply is awaited.
            for m in 0..messages {
                visitor
                    .send(&format!("m{m}"), &format!("visitor {v} message {m}"))
                    .await;
            }
            let mut replies = Vec::new();
            while replies.len() < messages {
                let reply = visitor.bot_reply().await;
                replies.push((
                    reply["seq"].as_i64().unwrap(),
                    reply["text"].as_str().unwrap().to_string(),
                ));
            }
            (v, replies)
        }));
    }
    for task in tasks {
        let (v, replies) = task.await.unwrap();
        let texts: Vec<String> = replies.iter().map(|(_, text)| text.clone()).collect();
        let expected: Vec<String> = (0..messages)
            .map(|m| format!("re: visitor {v} message {m}"))
            .collect();
        assert_eq!(texts, expected, "visitor {v} got replies in order");
        assert!(replies.windows(2).all(|w| w[0].0 < w[1].0), "seq increases");
    }
    let seen = recorder.seen.lock().unwrap();
    assert_eq!(seen.len(), visitors);
    for turns in seen.values() {
        let v = turns[0].split(' ').nth(1).unwrap().to_string();
        let expected: Vec<String> = (0..messages)
            .map(|m| format!("visitor {v} message {m}"))
            .collect();
        assert_eq!(turns, &expected, "turns ran in arrival order");
    }
    assert_eq!(
        *recorder.overlaps.lock().unwrap(),
        0,
        "no two turns of one conversation at once"
    );
    assert!(
        *recorder.most_at_once.lock().unwrap() > 1,
        "different conversations ran in parallel"
    );
}
both_backends!(
    ordering_under_concurrency,
    turns_keep_order_per_conversation
);

/// Hands off when asked for a person; otherwise answers.
pub struct HandsOff;

#[async_trait]
impl Assistant for HandsOff {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        if turn.text.contains("human") {
            return Ok(Reply {
                messages: vec!["Connecting you with a person.".into()],
                handoff: Some(Handoff {
                    reason: "customer_request".into(),
                    queue: None,
                    summary: serde_json::json!({"intent": "talk_to_human"}),
                }),
                ..Reply::default()
            });
        }
        Ok(Reply {
            messages: vec![format!("bot: {}", turn.text)],
            ..Reply::default()
        })
    }
}

async fn handoff_makes_the_bot_silent(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(Arc::new(HandsOff)), Vec::new()),
    )
    .await;
    let mut visitor = app.visitor().await;
    let ack = visitor.send_and_ack("a", "hello").await;
    visitor.bot_reply().await;
    visitor.send_and_ack("b", "let me talk to a human").await;
    let reply = visitor.bot_reply().await;
    assert_eq!(reply["text"], "Connecting you with a person.");
    let conversation_id = app.conversation_of(&visitor).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.state.status, Status::Queued);
    assert_eq!(conversation.state.owner, Owner::Queue("support".into()));
    let events = app
        .store()
        .conversation_events(&conversation_id)
        .await
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let dense: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, dense, "event numbers are dense");
    // Deliveries are recorded as they happen, between the others.
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| e.kind != EventKind::MessageDelivered)
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "conversation.opened",
            "message.stored",
            "message.stored",
            "message.stored",
            "message.stored",
            "owner.changed"
        ]
    );
    assert_eq!(events[3].data["text"], "let me talk to a human");
    assert_eq!(events[3].data["author"], "customer");
    assert_eq!(events[4].data["author"], "bot");
    let handoff = &events[5];
    assert_eq!(handoff.data["change"], "handoff");
    assert_eq!(handoff.data["reason"], "customer_request");
    assert_eq!(handoff.data["from"], "bot");
    assert_eq!(handoff.data["to"], "queue:support");
    assert_eq!(handoff.data["summary"]["intent"], "talk_to_human");

    // The queue owns it now: the customer's next message is stored and handled, not answered.
    visitor.send_and_ack("c", "are you there?").await;
    let store = app.store().clone();
    let id = conversation_id.clone();
    eventually(10, "the message to be handled", || {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .unhandled_inbound()
                .await
                .unwrap()
                .iter()
                .all(|m| m.conversation_id != id)
        }
    })
    .await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    assert_eq!(messages.last().unwrap().text, "are you there?");
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.author == AuthorKind::Bot)
            .count(),
        2
    );
    let _ = ack;
}
both_backends!(handoff_to_the_queue, handoff_makes_the_bot_silent);

struct Failing;

#[async_trait]
impl Assistant for Failing {
    async fn respond(&self, _turn: &Turn) -> Result<Reply, AssistantError> {
        Err(AssistantError::Failed("model unavailable".into()))
    }
}

async fn assistant_failure_hands_over(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(Arc::new(Failing)), Vec::new()),
    )
    .await;
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("x", "hi").await;
    let reply = visitor.bot_reply().await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("A person will take over")
    );
    let conversation_id = app.conversation_of(&visitor).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.state.status.as_str(), "queued");
}
both_backends!(assistant_error_goes_to_people, assistant_failure_hands_over);

/// Lets the test take the conversation over while a turn is running.
struct Hesitant {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl Assistant for Hesitant {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        if turn.text == "hold on" {
            self.started.notify_one();
            self.release.notified().await;
        }
        Ok(Reply {
            messages: vec![format!("bot: {}", turn.text)],
            ..Reply::default()
        })
    }
}

/// Agent ana takes a conversation over.
fn takeover_by_ana() -> switchboard::store::Transfer {
    switchboard::store::Transfer {
        to: switchboard::conversation::Move::To(Owner::Agent("ana".into())),
        change: "takeover".into(),
        actor: "agent:ana".into(),
        data: serde_json::json!({}),
    }
}

async fn takeover_mid_turn_silences_the_bot(backend: Backend) {
    let hesitant = Arc::new(Hesitant {
        started: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let app = TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(hesitant.clone()), Vec::new()),
    )
    .await;
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("1", "hello").await;
    assert_eq!(visitor.bot_reply().await["text"], "bot: hello");
    visitor.send_and_ack("2", "hold on").await;
    hesitant.started.notified().await;
    // An agent takes the conversation while the bot is still thinking.
    let conversation_id = app.conversation_of(&visitor).await;
    app.app
        .router
        .transfer(&conversation_id, &takeover_by_ana(), None)
        .await
        .unwrap();
    hesitant.release.notify_one();
    let store = app.store().clone();
    eventually(10, "the message to be handled", || {
        let store = store.clone();
        async move { store.unhandled_inbound().await.unwrap().is_empty() }
    })
    .await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["hello", "bot: hello", "hold on"],
        "the bot did not answer after the takeover"
    );
    let events = app
        .store()
        .conversation_events(&conversation_id)
        .await
        .unwrap();
    let last = events
        .iter()
        .rev()
        .find(|e| e.kind != EventKind::MessageDelivered)
        .unwrap();
    assert_eq!(last.kind, EventKind::OwnerChanged);
    assert_eq!(last.data["change"], "takeover");
    assert_eq!(last.data["from"], "bot");
    assert_eq!(last.data["to"], "agent:ana");
    assert_eq!(last.data["status"], "agent");
}
both_backends!(takeover_during_a_turn, takeover_mid_turn_silences_the_bot);

/// A turn committed on a version the conversation has left (an agent took it meanwhile)
/// writes nothing at all, alone or among other turns: no reply, no outbox row, no event, and
/// the inbound message stays for its new owner.
async fn stale_turn_writes_nothing(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let store = Store::connect(&database.url, 2).await.unwrap();
    let options = REOPENING;
    let mut stale = Vec::new();
    for visitor in 0..4 {
        let event = InboundEvent::text(
            "web",
            format!("m-{visitor}"),
            PlatformIdentity::new(format!("visitor-{visitor}"), false),
            format!("visitor-{visitor}"),
            "hello",
        );
        let stored = store.ingest(&event, options).await.unwrap();
        let before = store.conversation(&stored.conversation_id).await.unwrap();
        stale.push((before, stored.message_id));
    }
    // An agent takes the first conversation: its version moves on.
    let (taken, _) = &stale[0];
    store
        .transfer_conversation(&taken.id, &takeover_by_ana(), None)
        .await
        .unwrap();
    let events_before = store.conversation_events(&taken.id).await.unwrap().len();
    // The four turns commit together (on SQLite, in one group).
    let turns = stale.iter().map(|(conversation, inbound)| {
        let store = store.clone();
        async move {
            let turn = switchboard::store::TurnCommit {
                conversation_id: conversation.id.clone(),
                inbound_message_id: inbound.clone(),
                inbound_platform_id: None,
                replies: vec![switchboard::store::NewReply::bot("bot: hello")],
                assistant_state: Some(serde_json::json!({"turns": 1})),
                language: None,
                transfer: None,
            };
            store
                .commit_turn(conversation, &turn, "test", Duration::from_secs(30))
                .await
        }
    });
    let results = futures::future::join_all(turns).await;
    assert!(
        matches!(&results[0], Err(switchboard::store::StoreError::OwnerChanged(id)) if *id == taken.id),
        "{:?}",
        results[0].as_ref().err()
    );
    for result in &results[1..] {
        let committed = result.as_ref().expect("the other turns commit");
        assert_eq!(committed.outbox.len(), 1);
    }
    let texts: Vec<String> = store
        .conversation_messages(&taken.id)
        .await
        .unwrap()
        .into_iter()
        .map(|message| message.text)
        .collect();
    assert_eq!(texts, ["hello"], "no reply was written");
    assert_eq!(
        store.conversation_events(&taken.id).await.unwrap().len(),
        events_before,
        "no event was written"
    );
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        3,
        "only the other turns' replies wait to go out"
    );
    let unhandled: Vec<String> = store
        .unhandled_inbound()
        .await
        .unwrap()
        .into_iter()
        .map(|pending| pending.conversation_id)
        .collect();
    assert_eq!(
        unhandled,
        std::slice::from_ref(&taken.id),
        "the message waits for the agent"
    );
    let after = store.conversation(&taken.id).await.unwrap();
    assert_eq!(after.state.owner, Owner::Agent("ana".into()));
    store.close().await;
}
both_backends!(a_stale_turn_writes_nothing, stale_turn_writes_nothing);

/// Writers of one conversation at the same moment (customer messages arriving, agents' notes)
/// all write, and its events stay numbered densely, each number once. PostgreSQL is the case
/// that matters: it runs each script on its own snapshot, from several connections at once, so
/// writers race for numbers and the losers write again (`Store::retried_writes`). Sixty-four
/// writers on eight connections: with ten retries and no pause between them, about one run in
/// seven lost a write to retries running out.
async fn concurrent_writers_number_events_densely(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let store = Store::connect(&database.url, 8).await.unwrap();
    let options = REOPENING;
    let opened = store.ingest(&visitor_one_says(0), options).await.unwrap();
    let conversation = store.conversation(&opened.conversation_id).await.unwrap();
    let writers = (1..=64).map(|index| {
        let (store, conversation) = (store.clone(), conversation.clone());
        async move {
            if index % 2 == 0 {
                return store
                    .ingest(&visitor_one_says(index), options)
                    .await
                    .map(|_| ());
            }
            let note = switchboard::store::NewEvent {
                kind: EventKind::NoteAdded,
                actor: "agent:ana".into(),
                data: serde_json::json!({"text": format!("note {index}")}),
                message_id: None,
            };
            store.add_event(&conversation, &note).await.map(|_| ())
        }
    });
    for result in futures::future::join_all(writers).await {
        result.expect("every writer writes");
    }
    let numbers: Vec<i64> = store
        .conversation_events(&conversation.id)
        .await
        .unwrap()
        .iter()
        .map(|event| event.seq)
        .collect();
    // Opened, the first message, then 32 messages and 32 notes.
    assert_eq!(numbers, (1..=66).collect::<Vec<i64>>(), "dense, each once");
    store.close().await;
}
both_backends!(
    concurrent_writers_number_events_densely,
    concurrent_writers_number_events_densely
);

/// A PostgreSQL connection the server closed while it sat idle in the store's pool (a restart of
/// the server, a proxy's idle timeout) is found dead on its next acquire and replaced, so the
/// next write goes through. The store pings only connections idle for a second or more: a
/// ping before every statement would be a round trip as costly as the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_idle_is_replaced() {
    use sqlx::Connection;
    let database = TestDatabase::new(Backend::Postgres).await;
    let store = Store::connect(&database.url, 2).await.unwrap();
    let options = REOPENING;
    let opened = store.ingest(&visitor_one_says(1), options).await.unwrap();
    // Idle time counts from the end of sqlx's ping on release, in a task of its own: a second
    // and a half of margin for a busy machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let name = database.url.rsplit('/').next().unwrap();
    let name = name.split('?').next().unwrap();
    let mut admin = sqlx::AnyConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    let ended = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND backend_type = 'client backend'",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the pool's connections were open");
    let second = store
        .ingest(&visitor_one_says(2), options)
        .await
        .expect("the write goes through on a fresh connection");
    assert_eq!(second.conversation_id, opened.conversation_id);
    assert_eq!(second.seq, 2);
    // Reads go through the other pool, whose connections were closed too.
    let conversation = store
        .conversation(&opened.conversation_id)
        .await
        .expect("the read goes through on a fresh connection");
    assert_eq!(conversation.id, opened.conversation_id);
    store.close().await;
}

/// A channel's command (Telegram's `/human`) that was stored but had not had its turn when the
/// process died is still that command after the restart: the bot says the command's reply and
/// hands over; the assistant (here the echo) never reads it as text.
async fn command_replayed_after_restart(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let store = Store::connect(&database.url, 2).await.unwrap();
    let mut event = InboundEvent::text(
        "web",
        "command-1",
        PlatformIdentity::new("visitor-1", false),
        "visitor-1",
        "/human",
    );
    event.extensions = Extensions::default().with(&CommandReply {
        reply: "A person will answer you here.".into(),
        handoff: Some("customer asked for a person (/human)".into()),
    });
    let options = REOPENING;
    let stored = store.ingest(&event, options).await.unwrap();
    store.close().await;

    let app = App::start(settings(&database), AppOptions::default())
        .await
        .expect("app starts");
    let app = TestApp { app, database };
    let conversation_id = stored.conversation_id;
    eventually(10, "the replayed command's turn", || async {
        app.store()
            .conversation_messages(&conversation_id)
            .await
            .unwrap()
            .len()
            >= 2
    })
    .await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    let said: Vec<(AuthorKind, &str)> = messages
        .iter()
        .map(|message| (message.author, message.text.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            (AuthorKind::Customer, "/human"),
            (AuthorKind::Bot, "A person will answer you here."),
        ]
    );
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.state.status, Status::Queued);
    // The handoff package says what the customer wrote, for the agent who takes it.
    let handoff = crate::helpers::handoff_event(app.store(), &conversation_id).await;
    assert_eq!(
        handoff.data["summary"]["last_message"], "/human",
        "{:?}",
        handoff.data
    );
    assert_eq!(
        handoff.data["summary"]["requested"],
        "customer asked for a person (/human)"
    );
}
both_backends!(
    a_command_pending_at_a_crash_is_still_a_command,
    command_replayed_after_restart
);
