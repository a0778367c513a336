//! What a Discord customer does: DMs, a question in a support channel moved to a private
//! thread, buttons; and what goes wrong: a gateway disconnect with messages posted meanwhile,
//! Discord's 429, missing permissions, bad input on the gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::assistant::{Assistant, AssistantError, Reply, Turn};
use switchboard_connector::{AuthorKind, Choice, ConnectorError, Extensions, OutboundMessage};

use super::fake::{BOT_ID, FakeDiscord, Fault, is_id};
use super::{CHANNEL, content, conversation_on, spawn, stays_quiet};
use crate::both_backends;
use crate::helpers::{Backend, eventually, options_with};

/// The customer's messages stored in a conversation, in order.
async fn customer_texts(app: &crate::helpers::TestApp, conversation_id: &str) -> Vec<String> {
    app.store()
        .conversation_messages(conversation_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|message| message.author == AuthorKind::Customer)
        .map(|message| message.text)
        .collect()
}

async fn dm_conversation(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let app = spawn(backend, &fake, &[], |_| {}, Default::default()).await;
    let ana = fake.user("Ana");
    let dm = fake.dm_channel(&ana);

    fake.dm(&ana, "hello, where is my parcel? @everyone");
    let sent = fake.wait_for_bot(dm, 1, 30).await;
    assert_eq!(
        content(&sent[0]),
        "echo: hello, where is my parcel? @everyone"
    );
    assert!(
        sent[0]["nonce"]
            .as_str()
            .is_some_and(|nonce| !nonce.is_empty()),
        "sent with a nonce"
    );

    // The Discord user is the contact: verified id, global name shown.
    let conversation_id = conversation_on(&app, dm).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert!(conversation.verified);
    let contact = app
        .store()
        .contact_by_identity(CHANNEL, &ana.id.to_string())
        .await
        .unwrap()
        .expect("a contact for the Discord user");
    assert_eq!(contact, conversation.contact_id);
    let row = app.store().contact(&contact).await.unwrap().unwrap();
    assert_eq!(row.display_name.as_deref(), Some("Ana"));

    // A file: kept as a reference to Discord's copy, never its (signed, expiring) URL.
    fake.post_with_files(
        dm,
        &ana,
        "the box arrived like this",
        vec![json!({"id": "777", "filename": "box.jpg", "size": 98000,
                    "url": "https://cdn.discordapp.com/attachments/1/2/box.jpg?ex=1&hm=secret",
                    "proxy_url": "https://media.discordapp.net/x", "content_type": "image/jpeg",
                    "width": 10, "height": 10})],
    );
    fake.wait_for_bot(dm, 2, 30).await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    let photo = messages
        .iter()
        .find(|message| message.text == "the box arrived like this")
        .expect("the file's message");
    assert_eq!(photo.attachments.len(), 1);
    assert_eq!(photo.attachments[0].name, "box.jpg");
    assert_eq!(photo.attachments[0].mime_type, "image/jpeg");
    assert!(
        photo.attachments[0].platform_file_id.ends_with(":777"),
        "{:?}",
        photo.attachments[0]
    );
    assert!(
        !format!("{messages:?}").contains("secret"),
        "no signed URL stored"
    );

    // A reply longer than 2,000 characters: two messages, in order, nothing lost.
    let long = "parcel ".repeat(300);
    fake.dm(&ana, long.trim_end());
    let sent = fake.wait_for_bot(dm, 4, 30).await;
    for message in &sent {
        assert!(content(message).chars().count() <= 2000);
    }
    assert_eq!(
        format!("{} {}", content(&sent[2]), content(&sent[3])),
        format!("echo: {}", long.trim_end())
    );
    // The bot's own messages come back over the gateway and are not answered.
    stays_quiet(&fake, dm, 4).await;
    assert_eq!(
        customer_texts(&app, &conversation_id).await.len(),
        3,
        "every customer message stored once"
    );
}
both_backends!(discord_dm_conversation, dm_conversation);

async fn support_channel_mention_opens_a_private_thread(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let support = fake.text_channel();
    let elsewhere = fake.text_channel();
    let app = spawn(backend, &fake, &[support], |_| {}, Default::default()).await;
    let ana = fake.user("Ana");
    let bob = fake.user("Bob");

    // Chatter, and a mention in a channel that is not a support channel: not for the bot.
    fake.post(support, &ana, "good morning everyone", false);
    fake.post(elsewhere, &ana, "hi bot", true);
    // Ana asks: a private thread opens with Ana in it, and the answer goes there.
    fake.post(support, &ana, "where is my parcel 1042?", true);
    // Opened, then the customer added: two calls, so wait for both.
    eventually(30, "ana's private thread", || async {
        fake.threads()
            .first()
            .is_some_and(|thread| thread.2.len() == 2)
    })
    .await;
    let (parent, ana_thread, members) = fake.threads()[0].clone();
    assert_eq!(parent, support);
    assert_eq!(members, [ana.id, BOT_ID].into_iter().collect());
    let sent = fake.wait_for_bot(ana_thread, 1, 30).await;
    assert_eq!(content(&sent[0]), "echo: where is my parcel 1042?");
    // In her thread Ana needs no mention.
    fake.post(ana_thread, &ana, "and the invoice?", false);
    let sent = fake.wait_for_bot(ana_thread, 2, 30).await;
    assert_eq!(content(&sent[1]), "echo: and the invoice?");

    // Bob asks too: his own thread, without Ana.
    fake.post(support, &bob, "my order never came", true);
    // Opened, then the customer added: two calls, so wait for both.
    eventually(30, "bob's private thread", || async {
        fake.threads()
            .get(1)
            .is_some_and(|thread| thread.2.len() == 2)
    })
    .await;
    let (_, bob_thread, members) = fake.threads()[1].clone();
    assert_eq!(members, [bob.id, BOT_ID].into_iter().collect());
    let sent = fake.wait_for_bot(bob_thread, 1, 30).await;
    assert_eq!(content(&sent[0]), "echo: my order never came");

    // Ana asks again in the support channel: back to her thread, no new one.
    fake.post(support, &ana, "any news?", true);
    let sent = fake.wait_for_bot(ana_thread, 3, 30).await;
    assert_eq!(content(&sent[2]), "echo: any news?");
    stays_quiet(&fake, ana_thread, 3).await;
    assert_eq!(fake.threads().len(), 2);

    // Nobody sees another customer's conversation; the bot says nothing in public.
    assert!(fake.bot_messages(support).is_empty());
    assert!(fake.bot_messages(elsewhere).is_empty());
    let bob_sees: Vec<String> = fake
        .visible_to(&bob)
        .iter()
        .map(|message| content(message).to_string())
        .collect();
    for private in [
        "echo: where is my parcel 1042?",
        "and the invoice?",
        "echo: any news?",
    ] {
        assert!(
            !bob_sees.iter().any(|text| text == private),
            "bob sees {private:?}"
        );
    }
    let ana_sees: Vec<String> = fake
        .visible_to(&ana)
        .iter()
        .map(|message| content(message).to_string())
        .collect();
    assert!(
        !ana_sees
            .iter()
            .any(|text| text == "echo: my order never came")
    );

    // Each customer's conversation is on their thread, with only their messages.
    let ana_conversation = conversation_on(&app, ana_thread).await;
    assert_eq!(
        customer_texts(&app, &ana_conversation).await,
        ["where is my parcel 1042?", "and the invoice?", "any news?"]
    );
    let bob_conversation = conversation_on(&app, bob_thread).await;
    assert_eq!(
        customer_texts(&app, &bob_conversation).await,
        ["my order never came"]
    );
    assert!(
        app.store()
            .history(CHANNEL, &support.to_string(), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing is kept on the public channel"
    );
}
both_backends!(
    discord_support_thread,
    support_channel_mention_opens_a_private_thread
);

/// Offers two sizes as choices when asked about sizes; says what it heard otherwise.
struct Sizes;

#[async_trait::async_trait]
impl Assistant for Sizes {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        if turn.text.contains("size") {
            return Ok(Reply {
                messages: vec!["Which size?".into()],
                choices: vec![
                    Choice {
                        id: "size-s".into(),
                        label: "Small".into(),
                    },
                    Choice {
                        id: "size-l".into(),
                        label: "Large".into(),
                    },
                ],
                ..Reply::default()
            });
        }
        Ok(Reply {
            messages: vec![format!("you picked: {}", turn.text)],
            ..Reply::default()
        })
    }
}

async fn button_press_picks_a_choice(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let support = fake.text_channel();
    let app = spawn(
        backend,
        &fake,
        &[support],
        |_| {},
        options_with(Some(Arc::new(Sizes)), vec![]),
    )
    .await;
    let ana = fake.user("Ana");
    let dm = fake.dm_channel(&ana);
    fake.dm(&ana, "which size fits me?");
    let sent = fake.wait_for_bot(dm, 1, 30).await;
    assert_eq!(content(&sent[0]), "Which size?");
    let buttons: Vec<(String, String)> = sent[0]["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|button| {
            (
                button["label"].as_str().unwrap().to_string(),
                button["custom_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        buttons,
        [
            ("Small".to_string(), "size-s".to_string()),
            ("Large".to_string(), "size-l".to_string())
        ]
    );
    let pressed = fake.press(&ana, &sent[0], "size-l");
    let sent = fake.wait_for_bot(dm, 2, 30).await;
    assert_eq!(content(&sent[1]), "you picked: Large");
    let acks = fake.acks();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].0, pressed);
    assert_eq!(acks[0].1, json!({"type": 6}), "a deferred update");
    let conversation_id = conversation_on(&app, dm).await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert_eq!(messages[2].text, "Large");

    // The same in a private thread (a guild interaction, with a member instead of a user).
    fake.post(support, &ana, "what size for the hoodie?", true);
    eventually(30, "the private thread", || async {
        fake.threads().len() == 1
    })
    .await;
    let thread = fake.threads()[0].1;
    let sent = fake.wait_for_bot(thread, 1, 30).await;
    fake.press(&ana, &sent[0], "size-s");
    let sent = fake.wait_for_bot(thread, 2, 30).await;
    assert_eq!(content(&sent[1]), "you picked: Small");
    assert_eq!(fake.acks().len(), 2);
    stays_quiet(&fake, thread, 2).await;
}
both_backends!(discord_button_press, button_press_picks_a_choice);

async fn disconnect_then_catch_up_from_history(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let support = fake.text_channel();
    let app = spawn(backend, &fake, &[support], |_| {}, Default::default()).await;
    let ana = fake.user("Ana");
    let bob = fake.user("Bob");
    let carol = fake.user("Carol");
    let dm = fake.dm_channel(&ana);
    fake.dm(&ana, "one");
    fake.wait_for_bot(dm, 1, 30).await;
    fake.post(support, &bob, "hello", true);
    eventually(30, "bob's thread", || async { fake.threads().len() == 1 }).await;
    let bob_thread = fake.threads()[0].1;
    fake.wait_for_bot(bob_thread, 1, 30).await;

    // The connection goes quiet (events lost, as on a zombied connection); customers keep
    // writing; then Discord asks for a reconnect and the session resumes. Nothing is
    // replayed: history brings the messages back.
    let resumes = fake.resumes();
    fake.go_deaf();
    fake.dm(&ana, "two");
    fake.dm(&ana, "three");
    fake.post(bob_thread, &bob, "four", false);
    fake.post(support, &carol, "five", true);
    fake.post(support, &carol, "just chatting", false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.bot_messages(dm).len(),
        1,
        "nothing answered while deaf"
    );
    fake.ask_reconnect();
    eventually(60, "the session resumed", || async {
        fake.resumes() > resumes && fake.connected()
    })
    .await;
    let sent = fake.wait_for_bot(dm, 3, 30).await;
    assert_eq!(content(&sent[1]), "echo: two");
    assert_eq!(content(&sent[2]), "echo: three");
    let sent = fake.wait_for_bot(bob_thread, 2, 30).await;
    assert_eq!(content(&sent[1]), "echo: four");
    eventually(30, "carol's thread", || async { fake.threads().len() == 2 }).await;
    let carol_thread = fake.threads()[1].1;
    let sent = fake.wait_for_bot(carol_thread, 1, 30).await;
    assert_eq!(content(&sent[0]), "echo: five");

    // The gateway drops and stays down while customers write; the session is lost too
    // (invalid session, then a new one: READY).
    let identifies = fake.identifies();
    fake.forget_sessions();
    fake.disconnect_and_hold();
    eventually(10, "the bot disconnected", || async { !fake.connected() }).await;
    fake.dm(&ana, "six");
    fake.post(carol_thread, &carol, "seven", false);
    fake.release();
    eventually(60, "a new session", || async {
        fake.identifies() > identifies && fake.connected()
    })
    .await;
    let sent = fake.wait_for_bot(dm, 4, 30).await;
    assert_eq!(content(&sent[3]), "echo: six");
    let sent = fake.wait_for_bot(carol_thread, 2, 30).await;
    assert_eq!(content(&sent[1]), "echo: seven");

    // And live messages still flow, each answered once.
    fake.dm(&ana, "eight");
    fake.wait_for_bot(dm, 5, 30).await;
    stays_quiet(&fake, dm, 5).await;
    stays_quiet(&fake, bob_thread, 2).await;
    stays_quiet(&fake, carol_thread, 2).await;
    assert!(fake.bot_messages(support).is_empty());
    let ana_conversation = conversation_on(&app, dm).await;
    assert_eq!(
        customer_texts(&app, &ana_conversation).await,
        ["one", "two", "three", "six", "eight"]
    );
    // The cursor of Ana's DM channel is at her last message.
    let cursor = app
        .store()
        .cursor(CHANNEL, &format!("last:{dm}"))
        .await
        .unwrap()
        .expect("a cursor per channel");
    let last_customer_message = fake
        .visible_to(&ana)
        .iter()
        .filter(|message| is_id(&message["author"]["id"], ana.id))
        .filter_map(|message| message["id"].as_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(cursor.value.parse::<u64>().unwrap() >= last_customer_message);
}
both_backends!(
    discord_reconnect_catch_up,
    disconnect_then_catch_up_from_history
);

async fn rate_limit_honoured(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let _app = spawn(backend, &fake, &[], |_| {}, Default::default()).await;
    let ana = fake.user("Ana");
    let dm = fake.dm_channel(&ana);

    // 429: the reply waits the retry_after Discord named, then goes out once.
    fake.fail_next_send(Fault {
        channel: dm,
        status: 429,
        code: 0,
        message: "You are being rate limited.".into(),
        retry_after: Some(2.0),
        times: 1,
    });
    let asked = Instant::now();
    fake.dm(&ana, "one");
    let sent = fake.wait_for_bot(dm, 1, 30).await;
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "retry_after honoured: {:?}",
        asked.elapsed()
    );
    assert_eq!(content(&sent[0]), "echo: one");
    assert_eq!(fake.send_attempts(dm), 2);
    stays_quiet(&fake, dm, 1).await;
}
both_backends!(discord_rate_limit, rate_limit_honoured);

async fn refusals_reported_not_retried(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let app = spawn(backend, &fake, &[], |_| {}, Default::default()).await;

    // 403 with 50013 (missing permissions): failed for good, not retried.
    let bob = fake.user("Bob");
    let bob_dm = fake.dm_channel(&bob);
    fake.fail_next_send(Fault {
        channel: bob_dm,
        status: 403,
        code: 50013,
        message: "Missing Permissions".into(),
        retry_after: None,
        times: 100,
    });
    fake.dm(&bob, "hi");
    let conversation_id = conversation_on(&app, bob_dm).await;
    let store = app.store().clone();
    let id = conversation_id.clone();
    eventually(30, "the reply marked dead", || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let Some(reply) = store
                .conversation_messages(&id)
                .await
                .unwrap()
                .into_iter()
                .find(|m| m.author == AuthorKind::Bot)
            else {
                return false;
            };
            let rows = store.outbox_state(&reply.id).await.unwrap();
            rows.first().is_some_and(|row| row.0 == "dead")
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.send_attempts(bob_dm), 1, "a 50013 is not retried");
    // A task notice to a channel the bot may not post in fails at once as permanent; so does
    // one to a channel that does not exist (10003).
    let instance = app.app.channels.get(CHANNEL).unwrap();
    let mut notice = OutboundMessage {
        id: "notice-1".into(),
        conversation_id: conversation_id.clone(),
        channel: CHANNEL.into(),
        thread: bob_dm.to_string(),
        seq: 9,
        author: AuthorKind::System,
        text: "Your refund was approved.".into(),
        attachments: Vec::new(),
        choices: Vec::new(),
        in_reply_to: None,
        references: Vec::new(),
        extensions: Extensions::default(),
        created_at_ms: 0,
    };
    let error = instance.connector.send(&notice).await.unwrap_err();
    assert!(matches!(error, ConnectorError::Permanent(_)), "{error}");
    assert!(error.to_string().contains("lacks a permission"), "{error}");
    notice.thread = "42".into();
    let error = instance.connector.send(&notice).await.unwrap_err();
    assert!(matches!(error, ConnectorError::Permanent(_)), "{error}");
    assert!(error.to_string().contains("does not exist"), "{error}");
}
both_backends!(discord_refusals, refusals_reported_not_retried);

async fn bad_gateway_input_is_skipped(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let app = spawn(backend, &fake, &[], |_| {}, Default::default()).await;
    let ana = fake.user("Ana");
    let dm = fake.dm_channel(&ana);
    // An event kind nobody knows, a MESSAGE_CREATE missing its fields, a frame that is not
    // JSON, a message from another bot: logged and skipped.
    fake.dispatch_raw("BRAND_NEW_EVENT", json!({"x": 1}));
    fake.dispatch_raw(
        "MESSAGE_CREATE",
        json!({"id": "12", "channel_id": dm.to_string(), "content": "no author"}),
    );
    fake.send_raw_frame("{not json");
    fake.send_raw_frame(r#"{"op": 0, "t": "MESSAGE_CREATE", "s": 999, "d": 5}"#);
    let other_bot = json!({"id": "55", "username": "otherbot", "bot": true, "discriminator": "0",
        "global_name": null, "avatar": null});
    fake.dispatch_raw(
        "MESSAGE_CREATE",
        json!({"id": "13", "channel_id": dm.to_string(), "author": other_bot, "content": "spam",
               "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": null, "tts": false,
               "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
               "embeds": [], "pinned": false, "type": 0}),
    );
    // The connector is still there and answers.
    fake.dm(&ana, "still there?");
    let sent = fake.wait_for_bot(dm, 1, 30).await;
    assert_eq!(content(&sent[0]), "echo: still there?");
    stays_quiet(&fake, dm, 1).await;
    let conversation_id = conversation_on(&app, dm).await;
    assert_eq!(
        customer_texts(&app, &conversation_id).await,
        ["still there?"]
    );
}
both_backends!(discord_bad_gateway_input, bad_gateway_input_is_skipped);

async fn refund_on_discord(backend: Backend) {
    let fake = FakeDiscord::start().await;
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = seed_dir.path().join("orders.json");
    std::fs::write(
        &seed,
        json!({"orders": [{
            "id": "5001", "customer_email": "ana@example.com", "status": "delivered",
            "total_cents": 4500, "currency": "EUR", "placed_days_ago": 8, "delivered_days_ago": 3,
            "items": [{"sku": "MUG-01", "name": "Ceramic mug", "quantity": 3, "unit_price_cents": 1500}]
        }]})
        .to_string(),
    )
    .unwrap();
    let assistant = crate::assistant::shared_assistant().await;
    let app = spawn(
        backend,
        &fake,
        &[],
        |settings| settings.workflow.orders_seed = seed.clone(),
        options_with(Some(assistant), vec![]),
    )
    .await;
    let ana = fake.user("Ana");
    let dm = fake.dm_channel(&ana);
    fake.dm(&ana, "hello");
    fake.wait_for_bot(dm, 1, 60).await;
    // The shop's back office vouches that this Discord user is ana@example.com.
    conversation_on(&app, dm).await;
    app.store()
        .link_identity_email(CHANNEL, &ana.id.to_string(), "ana@example.com", "test:shop")
        .await
        .unwrap();
    let before = fake.bot_messages(dm).len();
    fake.dm(&ana, "I want a refund for order 5001");
    let sent = fake.wait_for_bot(dm, before + 1, 60).await;
    assert_eq!(content(&sent[before]), "What is the reason?");
    fake.dm(&ana, "the mugs arrived broken");
    eventually(60, "the approval told on Discord", || async {
        fake.bot_messages(dm)
            .iter()
            .any(|message| content(message).contains("approved"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let approvals: Vec<String> = fake
        .bot_messages(dm)
        .iter()
        .map(|message| content(message).to_string())
        .filter(|text| text.contains("approved"))
        .collect();
    assert_eq!(
        approvals,
        ["Good news: your refund request (45.00 EUR) for order 5001 has been approved."],
        "told once"
    );
}
both_backends!(discord_refund_told_on_discord, refund_on_discord);

/// A bot whose Message Content intent is off in the developer portal: the gateway closes
/// with 4014, and the instance is marked failed with the fix in its error, instead of
/// reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discord_missing_intent_fails_the_instance() {
    let fake = FakeDiscord::start().await;
    fake.refuse_intents();
    let table = super::table(&fake, &[]);
    let app = crate::helpers::TestApp::spawn_with(
        Backend::Sqlite,
        |settings| settings.channel.0.push(table),
        Default::default(),
    )
    .await;
    let status = app.app.channels.get(CHANNEL).unwrap().status.clone();
    eventually(60, "the instance marked failed", || async {
        status.state() == switchboard::channels::InstanceState::Failed
    })
    .await;
    let error = status.view().last_error.unwrap_or_default();
    assert!(error.contains("Message Content"), "{error}");
    assert!(!fake.connected());
}
