//! What a Telegram customer does, in both modes: chats, groups, buttons, a refund; and what
//! goes wrong: bad webhook calls, Telegram's 429 and 403.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::assistant::{Assistant, AssistantError, Reply, Turn};
use switchboard::conversation::Status;
use switchboard_connector::{AuthorKind, Choice};

use super::peer::{BOT_ID, BOT_USERNAME, Fault, TelegramPeer, User, group_chat};
use super::{CHANNEL, Mode, SECRET, conversation_on, spawn, stays_quiet};
use crate::helpers::{Backend, eventually, options_with};
use crate::{both_backends, telegram_modes};

async fn private_chat(backend: Backend, mode: Mode) {
    let peer = TelegramPeer::start().await;
    let token = TelegramPeer::token();
    let app = spawn(backend, mode, &peer, &token, |_| {}, Default::default()).await;
    let ana = User::new("Ana", Some("es-ES"));
    let chat = ana.private_chat();

    // /start: greeted in the user's language by the bot's turn, not by the assistant.
    peer.user_writes(&token, &ana, &chat, "/start").await;
    let sent = peer.wait_for(&token, ana.id, 1, 30).await;
    assert!(
        sent[0].shown().starts_with("¡Hola, Ana!"),
        "{:?}",
        sent[0].text
    );

    // A question with markup characters: answered, escaped for HTML parse mode.
    peer.user_writes(&token, &ana, &chat, "¿Y mi pedido <b>1042</b> & lo demás?")
        .await;
    let sent = peer.wait_for(&token, ana.id, 2, 30).await;
    assert_eq!(
        sent[1].shown(),
        "echo: ¿Y mi pedido <b>1042</b> & lo demás?"
    );
    assert_eq!(
        sent[1].text,
        "echo: ¿Y mi pedido &lt;b&gt;1042&lt;/b&gt; &amp; lo demás?"
    );
    assert_eq!(sent[1].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(sent[1].reply_to, None, "no quoting in a private chat");

    // The Telegram user is the contact: verified id, name, language from `language_code`.
    let conversation_id = conversation_on(&app, ana.id).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.language.as_deref(), Some("es"));
    assert!(conversation.verified);
    let contact = app
        .store()
        .contact_by_identity(CHANNEL, &ana.id.to_string())
        .await
        .unwrap()
        .expect("a contact for the Telegram user");
    assert_eq!(contact, conversation.contact_id);
    let row = app.store().contact(&contact).await.unwrap().unwrap();
    assert_eq!(row.display_name.as_deref(), Some("Ana"));
    let identities = app.store().contact_identities(&contact).await.unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(
        identities[0].username, ana.username,
        "the @username on the identity"
    );

    // A photo with a caption: the caption answered, the largest size kept as a file reference.
    peer.user_sends(
        &token,
        json!({"from": ana.json(), "chat": chat, "caption": "así llegó la caja",
               "photo": [
                   {"file_id": "small-id", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 1200},
                   {"file_id": "large-id", "file_unique_id": "l", "width": 1280, "height": 960, "file_size": 98000}
               ]}),
    )
    .await;
    let sent = peer.wait_for(&token, ana.id, 3, 30).await;
    assert_eq!(sent[2].shown(), "echo: así llegó la caja");
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    let photo = messages
        .iter()
        .find(|message| message.text == "así llegó la caja")
        .expect("the photo's message");
    assert_eq!(photo.attachments.len(), 1);
    assert_eq!(photo.attachments[0].platform_file_id, "large-id");
    assert_eq!(photo.attachments[0].size_bytes, Some(98000));
    assert_eq!(photo.attachments[0].mime_type, "image/jpeg");
    // And a document.
    peer.user_sends(
        &token,
        json!({"from": ana.json(), "chat": chat, "caption": "la factura",
               "document": {"file_id": "doc-id", "file_unique_id": "d", "file_name": "factura.pdf",
                            "mime_type": "application/pdf", "file_size": 4321}}),
    )
    .await;
    peer.wait_for(&token, ana.id, 4, 30).await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    let document = messages.iter().find(|m| m.text == "la factura").unwrap();
    assert_eq!(document.attachments[0].name, "factura.pdf");
    assert_eq!(document.attachments[0].platform_file_id, "doc-id");

    // /human: handed to the queue, told so; the bot is silent afterwards.
    peer.user_writes(&token, &ana, &chat, "/human").await;
    let sent = peer.wait_for(&token, ana.id, 5, 30).await;
    assert_eq!(
        sent[4].shown(),
        "De acuerdo, te paso con una persona del equipo."
    );
    let store = app.store().clone();
    let id = conversation_id.clone();
    eventually(30, "the conversation handed to people", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.conversation(&id).await.unwrap().state.status == Status::Queued }
    })
    .await;
    peer.user_writes(&token, &ana, &chat, "¿hay alguien?").await;
    stays_quiet(&peer, &token, ana.id, 5).await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    assert_eq!(
        messages.last().unwrap().text,
        "¿hay alguien?",
        "stored for the agents"
    );
    // Every customer message stored once.
    let customer = messages
        .iter()
        .filter(|m| m.author == AuthorKind::Customer)
        .count();
    assert_eq!(customer, 6);
    // The greeting and the handoff notice are the bot's stored replies (agents see them, and
    // the outbox delivered them), not messages sent beside the store.
    let bot_said: Vec<&str> = messages
        .iter()
        .filter(|m| m.author == AuthorKind::Bot)
        .map(|m| m.text.as_str())
        .collect();
    assert!(
        bot_said.iter().any(|text| text.starts_with("¡Hola, Ana!")),
        "{bot_said:?}"
    );
    assert!(
        bot_said.contains(&"De acuerdo, te paso con una persona del equipo."),
        "{bot_said:?}"
    );
}
telegram_modes!(telegram_private_chat, private_chat);

async fn group_chat_when_addressed(backend: Backend, mode: Mode) {
    let peer = TelegramPeer::start().await;
    let token = TelegramPeer::token();
    let app = spawn(backend, mode, &peer, &token, |_| {}, Default::default()).await;
    let ana = User::new("Ana", Some("en"));
    let group_id = -(i64::from(rand::random::<u32>() % 1_000_000) + 1000);
    let group = group_chat(group_id);
    peer.user_writes(&token, &ana, &group, "good morning everyone")
        .await;
    peer.user_writes(
        &token,
        &ana,
        &group,
        &format!("@{BOT_USERNAME} where is my parcel?"),
    )
    .await;
    let sent = peer.wait_for(&token, group_id, 1, 30).await;
    assert_eq!(
        sent[0].shown(),
        "echo: where is my parcel?",
        "the mention taken out"
    );
    assert!(
        sent[0].reply_to.is_some(),
        "in a group the answer quotes the question"
    );
    // A reply to the bot's message is addressed to it too.
    peer.user_sends(
        &token,
        json!({"from": ana.json(), "chat": group, "text": "and the invoice?",
               "reply_to_message": {"message_id": sent[0].message_id, "date": 1_700_000_000,
                   "chat": group, "text": sent[0].text,
                   "from": {"id": BOT_ID, "is_bot": true, "first_name": "Bot", "username": BOT_USERNAME}}}),
    )
    .await;
    let sent = peer.wait_for(&token, group_id, 2, 30).await;
    assert_eq!(sent[1].shown(), "echo: and the invoice?");
    peer.user_writes(&token, &ana, &group, "thanks all").await;
    stays_quiet(&peer, &token, group_id, 2).await;
    let history = app
        .store()
        .history(CHANNEL, &group_id.to_string(), 50)
        .await
        .unwrap();
    let customer: Vec<&str> = history
        .iter()
        .filter(|m| m.author == AuthorKind::Customer)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(
        customer,
        ["where is my parcel?", "and the invoice?"],
        "messages not addressed to the bot are not stored"
    );
}
telegram_modes!(telegram_group_chat, group_chat_when_addressed);

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

async fn button_press_picks_a_choice(backend: Backend, mode: Mode) {
    let peer = TelegramPeer::start().await;
    let token = TelegramPeer::token();
    let app = spawn(
        backend,
        mode,
        &peer,
        &token,
        |_| {},
        options_with(Some(Arc::new(Sizes)), vec![]),
    )
    .await;
    let ana = User::new("Ana", Some("en"));
    peer.user_writes(&token, &ana, &ana.private_chat(), "which size fits me?")
        .await;
    let sent = peer.wait_for(&token, ana.id, 1, 30).await;
    assert_eq!(sent[0].shown(), "Which size?");
    assert_eq!(
        sent[0].buttons,
        [
            ("Small".to_string(), "size-s".to_string()),
            ("Large".to_string(), "size-l".to_string())
        ],
        "the choices as an inline keyboard"
    );
    peer.press(&token, &ana, &sent[0], "size-l").await;
    let sent = peer.wait_for(&token, ana.id, 2, 30).await;
    assert_eq!(
        sent[1].shown(),
        "you picked: Large",
        "the label of the button pressed"
    );
    let answered = peer.callback_answers();
    assert_eq!(answered, 1, "the callback query is answered");
    let conversation_id = conversation_on(&app, ana.id).await;
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert_eq!(messages[2].text, "Large");
}
telegram_modes!(telegram_button_press, button_press_picks_a_choice);

async fn refund_on_telegram(backend: Backend, mode: Mode) {
    let peer = TelegramPeer::start().await;
    let token = TelegramPeer::token();
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
        mode,
        &peer,
        &token,
        |settings| settings.workflow.orders_seed = seed.clone(),
        options_with(Some(assistant), vec![]),
    )
    .await;
    let ana = User::new("Ana", Some("en"));
    let chat = ana.private_chat();
    peer.user_writes(&token, &ana, &chat, "/start").await;
    peer.wait_for(&token, ana.id, 1, 30).await;
    // The shop's back office vouches that this Telegram user is ana@example.com (as its
    // `POST /api/v1/contacts/{id}/emails` would).
    conversation_on(&app, ana.id).await;
    app.store()
        .link_identity_email(CHANNEL, &ana.id.to_string(), "ana@example.com", "test:shop")
        .await
        .unwrap();
    peer.user_writes(&token, &ana, &chat, "I want a refund for order 5001")
        .await;
    let sent = peer.wait_for(&token, ana.id, 2, 30).await;
    assert_eq!(sent[1].shown(), "What is the reason?");
    peer.user_writes(&token, &ana, &chat, "the mugs arrived broken")
        .await;
    let sent = peer.wait_for(&token, ana.id, 3, 30).await;
    let approved: Vec<_> = sent
        .iter()
        .filter(|message| message.shown().contains("approved"))
        .collect();
    assert_eq!(approved.len(), 1, "{sent:#?}");
    assert_eq!(
        approved[0].shown(),
        "Good news: your refund request (45.00 EUR) for order 5001 has been approved."
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let approvals = peer
        .bot_messages(&token, ana.id)
        .iter()
        .filter(|message| message.shown().contains("approved"))
        .count();
    assert_eq!(approvals, 1, "told once");
}
telegram_modes!(telegram_refund_told_on_telegram, refund_on_telegram);

async fn webhook_bad_input(backend: Backend) {
    let peer = TelegramPeer::start().await;
    let token = TelegramPeer::token();
    let app = spawn(
        backend,
        Mode::Webhook,
        &peer,
        &token,
        |_| {},
        Default::default(),
    )
    .await;
    let url = app.http_url(&format!("/channels/telegram/{CHANNEL}"));
    let client = reqwest::Client::new();
    let ana = User::new("Ana", Some("en"));
    let update = |id: i64, text: &str| {
        json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
               "from": ana.json(), "chat": ana.private_chat(), "text": text}})
    };
    let post = |body: String, secret: Option<&str>| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        request.send()
    };
    let status = |response: reqwest::Response| response.status().as_u16();
    // No secret, a wrong one: refused, nothing stored.
    assert_eq!(
        status(
            post(update(900_001, "no secret").to_string(), None)
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        status(
            post(update(900_002, "wrong").to_string(), Some("nope"))
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        status(
            post(update(900_003, "almost").to_string(), Some(&SECRET[1..]))
                .await
                .unwrap()
        ),
        401
    );
    // Malformed bodies: 400.
    assert_eq!(
        status(post("{not json".into(), Some(SECRET)).await.unwrap()),
        400
    );
    assert_eq!(
        status(
            post(
                json!({"message": {"text": "no update id"}}).to_string(),
                Some(SECRET)
            )
            .await
            .unwrap()
        ),
        400
    );
    // Kinds we do not handle, an edited message: acknowledged (200), skipped.
    let unknown = json!({"update_id": 900_004, "brand_new_kind": {"x": 1}});
    assert_eq!(
        status(post(unknown.to_string(), Some(SECRET)).await.unwrap()),
        200
    );
    let poll = json!({"update_id": 900_005, "poll_answer": {"poll_id": "p", "option_ids": [0],
        "user": ana.json()}});
    assert_eq!(
        status(post(poll.to_string(), Some(SECRET)).await.unwrap()),
        200
    );
    let edited = json!({"update_id": 900_006, "edited_message": {"message_id": 1, "date": 1_700_000_000,
        "edit_date": 1_700_000_100, "from": ana.json(), "chat": ana.private_chat(), "text": "edited"}});
    assert_eq!(
        status(post(edited.to_string(), Some(SECRET)).await.unwrap()),
        200
    );
    // An oversized caption: cut to Telegram's 1,024 characters, stored and answered.
    let caption = "x".repeat(3000);
    let oversized = json!({"update_id": 900_007, "message": {"message_id": 7, "date": 1_700_000_000,
        "from": ana.json(), "chat": ana.private_chat(), "caption": caption,
        "document": {"file_id": "f", "file_unique_id": "u", "file_size": 10}}});
    assert_eq!(
        status(post(oversized.to_string(), Some(SECRET)).await.unwrap()),
        200
    );
    let sent = peer.wait_for(&token, ana.id, 1, 30).await;
    assert_eq!(sent[0].shown(), format!("echo: {}", "x".repeat(1024)));
    // A good update, and the same update again (Telegram redelivering): stored and answered once.
    let good = update(900_008, "still there?").to_string();
    assert_eq!(status(post(good.clone(), Some(SECRET)).await.unwrap()), 200);
    assert_eq!(status(post(good, Some(SECRET)).await.unwrap()), 200);
    // And the emulator's own path still works after all of that.
    peer.user_writes(&token, &ana, &ana.private_chat(), "and now?")
        .await;
    let sent = peer.wait_for(&token, ana.id, 3, 30).await;
    assert_eq!(sent[1].shown(), "echo: still there?");
    assert_eq!(sent[2].shown(), "echo: and now?");
    stays_quiet(&peer, &token, ana.id, 3).await;
    let conversation_id = conversation_on(&app, ana.id).await;
    let texts: Vec<String> = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.author == AuthorKind::Customer)
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        ["x".repeat(1024), "still there?".into(), "and now?".into()]
    );
    assert_eq!(peer.refused_deliveries(), 0);
}
both_backends!(telegram_webhook_bad_input, webhook_bad_input);

async fn telegram_errors_outbound(backend: Backend) {
    let peer = TelegramPeer::start().await;
    let token = TelegramPeer::token();
    let app = spawn(
        backend,
        Mode::Polling,
        &peer,
        &token,
        |_| {},
        Default::default(),
    )
    .await;

    // 429: the reply waits the retry_after Telegram named, then goes out once.
    let ana = User::new("Ana", Some("en"));
    peer.fail_next_send(Fault {
        chat_id: ana.id,
        error_code: 429,
        description: "Too Many Requests: retry after 2".into(),
        retry_after: Some(2),
    });
    let asked = Instant::now();
    peer.user_writes(&token, &ana, &ana.private_chat(), "one")
        .await;
    let sent = peer.wait_for(&token, ana.id, 1, 30).await;
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "retry_after honoured: {:?}",
        asked.elapsed()
    );
    assert_eq!(sent[0].shown(), "echo: one");
    assert_eq!(peer.send_attempts(ana.id), 2);

    // A reply longer than 4,096 characters: two messages, in order.
    // 4,094 characters (Telegram's own limit is 4,096): the echo is longer than one message.
    let long = "parcel ".repeat(585);
    peer.user_writes(&token, &ana, &ana.private_chat(), long.trim_end())
        .await;
    let sent = peer.wait_for(&token, ana.id, 3, 30).await;
    assert!(sent[1].shown().chars().count() <= 4096);
    assert_eq!(
        format!("{} {}", sent[1].shown(), sent[2].shown()),
        format!("echo: {}", long.trim_end())
    );

    // 403: the user blocked the bot. Not retried, the chat marked unreachable.
    let bob = User::new("Bob", Some("en"));
    peer.fail_next_send(Fault {
        chat_id: bob.id,
        error_code: 403,
        description: "Forbidden: bot was blocked by the user".into(),
        retry_after: None,
    });
    peer.user_writes(&token, &bob, &bob.private_chat(), "hi")
        .await;
    let store = app.store().clone();
    let chat = bob.id.to_string();
    eventually(30, "the unreachable mark", || {
        let (store, chat) = (store.clone(), chat.clone());
        async move { store.unreachable(CHANNEL, &chat).await.unwrap().is_some() }
    })
    .await;
    let mark = store.unreachable(CHANNEL, &chat).await.unwrap().unwrap();
    assert!(mark.reason.contains("blocked by the user"), "{mark:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(peer.send_attempts(bob.id), 1, "a 403 is not retried");
    let conversation_id = conversation_on(&app, bob.id).await;
    let reply = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.author == AuthorKind::Bot)
        .unwrap();
    let rows = app.store().outbox_state(&reply.id).await.unwrap();
    assert_eq!(rows[0].0, "dead", "{rows:?}");
    // Agents see it on the contact.
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    let marked = app
        .store()
        .contact_unreachable(&conversation.contact_id)
        .await
        .unwrap();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(
        (marked[0].channel.as_str(), marked[0].thread.as_str()),
        (CHANNEL, chat.as_str())
    );
    // Another message to the blocked chat (a task notice, say) is given up at once, without a
    // call: Telegram would take it now (the fault was for one send).
    let notice = app
        .app
        .router
        .notify(
            &conversation_id,
            "Your refund was approved.".into(),
            Vec::new(),
        )
        .await
        .unwrap();
    let notice_id = notice.data["message_id"].as_str().unwrap().to_string();
    eventually(30, "the notice given up", || {
        let (store, notice_id) = (store.clone(), notice_id.clone());
        async move {
            store
                .outbox_state(&notice_id)
                .await
                .unwrap()
                .first()
                .is_some_and(|row| row.0 == "dead")
        }
    })
    .await;
    assert_eq!(peer.send_attempts(bob.id), 1);
    // Bob unblocks the bot and writes: reachable again, answered, the mark gone.
    peer.user_writes(&token, &bob, &bob.private_chat(), "back again")
        .await;
    let sent = peer.wait_for(&token, bob.id, 1, 30).await;
    assert_eq!(sent[0].shown(), "echo: back again");
    assert!(store.unreachable(CHANNEL, &chat).await.unwrap().is_none());
}
both_backends!(telegram_outbound_errors, telegram_errors_outbound);
