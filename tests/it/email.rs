//! The email channel against the real Postfix and Dovecot of tests/peers/mail (started by
//! scripts/test), with a customer's mail client speaking SMTP and IMAP. Each test has
//! mailboxes of its own.

use std::time::Duration;

use serde_json::json;
use switchboard::app::App;
use switchboard::config::Settings;
use switchboard::conversation::Move;
use switchboard::store::Transfer;
use switchboard_connector::{AuthorKind, EventKind};
use switchboard_email::testing::{MailUser, Received, channel_table, mailbox};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestDatabase, eventually};

const CHANNEL: &str = "support";

fn with_mailbox(support: &str) -> impl FnOnce(&mut Settings) + '_ {
    move |settings: &mut Settings| {
        settings.channel.0.push(channel_table(CHANNEL, support));
    }
}

/// The mails of the customer's inbox that answer in a thread.
fn replies(inbox: &[Received]) -> Vec<&Received> {
    inbox
        .iter()
        .filter(|mail| mail.subject.starts_with("Re: "))
        .collect()
}

async fn conversation_of(app: &TestApp, message_id: &str) -> String {
    let store = app.store().clone();
    let id = message_id.to_string();
    eventually(30, "the mail stored", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.find_message(CHANNEL, &id).await.unwrap().is_some() }
    })
    .await;
    app.store()
        .find_message(CHANNEL, message_id)
        .await
        .unwrap()
        .unwrap()
        .conversation_id
}

async fn answered_in_the_thread(backend: Backend) {
    let support = mailbox("support");
    let app = TestApp::spawn_with(backend, with_mailbox(&support), Default::default()).await;
    wait_until_reading(&app).await;
    let customer = MailUser::new("customer");
    let first_id = format!("first.{}", customer.address);
    customer
        .write(
            &support,
            "Where is my parcel?",
            &first_id,
            None,
            "It has not come yet.",
        )
        .await;
    let inbox = customer.wait_for(1, 30).await;
    let answer = &inbox[0];
    assert_eq!(answer.subject, "Re: Where is my parcel?");
    assert_eq!(answer.from, support);
    assert_eq!(answer.in_reply_to, std::slice::from_ref(&first_id));
    assert_eq!(answer.references, std::slice::from_ref(&first_id));
    assert_eq!(answer.text, "echo: It has not come yet.");
    assert!(
        answer
            .html
            .as_deref()
            .is_some_and(|html| html.contains("<p>echo: It has not come yet.</p>")),
        "an HTML part too: {:?}",
        answer.html
    );
    assert_eq!(answer.auto_submitted.as_deref(), Some("auto-replied"));
    assert!(answer.message_id.ends_with("@test.local"));

    // The customer answers our reply from a mail client: quoted history below the new words.
    let conversation_id = conversation_of(&app, &first_id).await;
    let second_id = format!("second.{}", customer.address);
    let quoted = format!(
        "Still nothing, it is order 1042.\r\n\r\nOn Tue, 3 Jun 2025 at 10:00, Shop support <{support}> wrote:\r\n> echo: It has not come yet.\r\n"
    );
    customer
        .write(
            &support,
            "Re: Where is my parcel?",
            &second_id,
            Some(&answer.message_id),
            &quoted,
        )
        .await;
    let inbox = customer.wait_for(2, 30).await;
    assert_eq!(replies(&inbox).len(), 2, "{inbox:?}");
    let second_answer = &inbox[1];
    assert_eq!(second_answer.text, "echo: Still nothing, it is order 1042.");
    assert_eq!(second_answer.in_reply_to, std::slice::from_ref(&second_id));
    assert_eq!(
        second_answer.references,
        [
            first_id.clone(),
            answer.message_id.clone(),
            second_id.clone()
        ],
        "References: the thread so far, oldest first"
    );
    assert_eq!(
        conversation_of(&app, &second_id).await,
        conversation_id,
        "the reply lands in the same conversation"
    );
    let messages = app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[2].text, "Still nothing, it is order 1042.");
    // The raw mail is kept and viewable: its first attachment reference.
    assert_eq!(messages[2].attachments[0].name, "message.eml");
    let instance = app.app.channels.get(CHANNEL).unwrap();
    let raw = instance
        .connector
        .fetch_attachment(&messages[2].attachments[0])
        .await
        .expect("the raw mail is fetched from the mailbox");
    assert_eq!(raw.mime_type, "message/rfc822");
    let raw = String::from_utf8_lossy(&raw.bytes);
    assert!(raw.contains("> echo: It has not come yet."), "{raw}");

    // A new subject from the same customer is a new conversation.
    let third_id = format!("third.{}", customer.address);
    customer
        .write(
            &support,
            "Invoice for order 1042",
            &third_id,
            None,
            "Can I have an invoice?",
        )
        .await;
    assert_ne!(conversation_of(&app, &third_id).await, conversation_id);
    customer.wait_for(3, 30).await;

    // Resolved, then the customer writes again in the thread: reopened, answered there.
    app.app
        .router
        .transfer(
            &conversation_id,
            &Transfer {
                to: Move::Resolve,
                change: "resolved".into(),
                actor: "agent:a1".into(),
                data: json!({}),
            },
            None,
        )
        .await
        .unwrap();
    let fourth_id = format!("fourth.{}", customer.address);
    customer
        .write(
            &support,
            "Re: Where is my parcel?",
            &fourth_id,
            Some(&second_answer.message_id),
            "It came broken.",
        )
        .await;
    assert_eq!(conversation_of(&app, &fourth_id).await, conversation_id);
    let inbox = customer.wait_for(4, 30).await;
    assert_eq!(inbox[3].text, "echo: It came broken.");
    assert_eq!(inbox[3].subject, "Re: Where is my parcel?");
}
both_backends!(email_answered_in_the_thread, answered_in_the_thread);

async fn wait_until_reading(app: &TestApp) {
    let store = app.store().clone();
    eventually(30, "the mailbox's first connection", || {
        let store = store.clone();
        async move { store.cursor(CHANNEL, "imap:INBOX").await.unwrap().is_some() }
    })
    .await;
}

async fn auto_reply_is_not_answered(backend: Backend) {
    let support = mailbox("support");
    let app = TestApp::spawn_with(backend, with_mailbox(&support), Default::default()).await;
    wait_until_reading(&app).await;
    let customer = MailUser::new("customer");
    let first_id = format!("first.{}", customer.address);
    customer
        .write(
            &support,
            "Opening hours",
            &first_id,
            None,
            "When are you open?",
        )
        .await;
    let answer = customer.wait_for(1, 30).await.remove(0);
    let conversation_id = conversation_of(&app, &first_id).await;
    // The customer's out-of-office answers our answer (RFC 3834 headers).
    let auto_id = format!("auto.{}", customer.address);
    customer
        .write_with(
            &support,
            "Automatic reply: Re: Opening hours",
            &auto_id,
            Some(&answer.message_id),
            "Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n",
            "I am out of the office until Monday.",
        )
        .await;
    assert_eq!(
        conversation_of(&app, &auto_id).await,
        conversation_id,
        "recorded in the conversation it answers"
    );
    // Then a real question, which is answered: the auto-reply was not.
    let next_id = format!("next.{}", customer.address);
    customer
        .write(
            &support,
            "Re: Opening hours",
            &next_id,
            Some(&answer.message_id),
            "And on Sundays?",
        )
        .await;
    let inbox = customer.wait_for(2, 30).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inbox_after = customer.inbox().await;
    let texts: Vec<&str> = inbox_after.iter().map(|mail| mail.text.as_str()).collect();
    assert_eq!(
        texts,
        ["echo: When are you open?", "echo: And on Sundays?"],
        "{inbox:?}"
    );
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
            AuthorKind::Customer,
            AuthorKind::Bot
        ]
    );
}
both_backends!(email_auto_reply_not_answered, auto_reply_is_not_answered);

async fn restart_handles_exactly_what_arrived(backend: Backend) {
    let support = mailbox("support");
    let database = TestDatabase::new(backend).await;
    let mut settings = crate::helpers::settings(&database);
    with_mailbox(&support)(&mut settings);
    let customer = MailUser::new("customer");
    // Mail already there when the mailbox is first connected is not answered.
    customer
        .write(
            &support,
            "Old mail",
            &format!("old.{}", customer.address),
            None,
            "From before.",
        )
        .await;
    let support_box = MailUser {
        address: support.clone(),
    };
    assert_eq!(support_box.wait_for(1, 30).await.len(), 1);
    let app = App::start(settings.clone(), Default::default())
        .await
        .unwrap();
    let store = app.store.clone();
    eventually(30, "the first connection", || {
        let store = store.clone();
        async move { store.cursor(CHANNEL, "imap:INBOX").await.unwrap().is_some() }
    })
    .await;
    let first_id = format!("first.{}", customer.address);
    customer
        .write(&support, "Before the stop", &first_id, None, "one")
        .await;
    customer.wait_for(1, 30).await;
    app.shutdown().await;

    // Three mails arrive while the connector is stopped.
    for n in 1..=3 {
        customer
            .write(
                &support,
                &format!("While stopped {n}"),
                &format!("stopped-{n}.{}", customer.address),
                None,
                &format!("message {n}"),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let app = App::start(settings, Default::default()).await.unwrap();
    let inbox = customer.wait_for(4, 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let inbox_after = customer.inbox().await;
    assert_eq!(inbox_after.len(), inbox.len(), "nothing more arrives");
    let mut texts: Vec<String> = inbox_after.iter().map(|mail| mail.text.clone()).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "echo: message 1",
            "echo: message 2",
            "echo: message 3",
            "echo: one"
        ],
        "exactly the three new mails answered once each, the old one never"
    );
    assert!(
        app.store
            .find_message(CHANNEL, &format!("old.{}", customer.address))
            .await
            .unwrap()
            .is_none(),
        "existing mail is not even imported by default"
    );
    app.shutdown().await;
}
both_backends!(
    email_restart_catches_up,
    restart_handles_exactly_what_arrived
);

async fn bad_input_is_contained(backend: Backend) {
    let support = mailbox("support");
    let app = TestApp::spawn_with(backend, with_mailbox(&support), Default::default()).await;
    wait_until_reading(&app).await;
    let customer = MailUser::new("customer");
    let base = |id: &str, extra: &str| {
        format!(
            "From: {from}\r\nTo: {support}\r\nSubject: Bad input {id}\r\n{extra}",
            from = customer.address
        )
    };
    // Malformed MIME: a multipart whose boundary never comes.
    let malformed = base(
        "1",
        "Message-ID: <bad-1@test.local>\r\nContent-Type: multipart/mixed; boundary=\"nope\"\r\n\r\nno parts here\r\n",
    );
    customer.send_raw(&support, malformed.as_bytes()).await;
    // An odd charset.
    let mut odd = base("2", "Message-ID: <bad-2@test.local>\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").into_bytes();
    odd.extend_from_slice(&[0xf0, 0xd2, 0xc9, 0xd7, 0xc5, 0xd4, b'\r', b'\n']);
    customer.send_raw(&support, &odd).await;
    // No Message-ID.
    let anonymous = base("3", "\r\nno id at all\r\n");
    customer.send_raw(&support, anonymous.as_bytes()).await;
    // A 25 MB attachment.
    let chunk = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n";
    let big = format!(
        "{}Message-ID: <bad-4@test.local>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee the video\r\n--b\r\nContent-Type: video/mp4\r\nContent-Disposition: attachment; filename=\"big.mp4\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
        base("4", ""),
        chunk.repeat(25 * 1024 * 1024 / 48)
    );
    customer.send_raw(&support, big.as_bytes()).await;
    // From ourselves.
    let ours = format!(
        "From: {support}\r\nTo: {support}\r\nSubject: Loop\r\nMessage-ID: <bad-5@test.local>\r\n\r\nours\r\n"
    );
    customer.send_raw(&support, ours.as_bytes()).await;
    // And a good mail after all of them still gets through.
    customer
        .write(
            &support,
            "After the bad ones",
            "good@test.local",
            None,
            "still there?",
        )
        .await;
    customer.wait_for(5, 90).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inbox = customer.inbox().await;
    let mut subjects: Vec<&str> = inbox.iter().map(|mail| mail.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Re: After the bad ones",
            "Re: Bad input 1",
            "Re: Bad input 2",
            "Re: Bad input 3",
            "Re: Bad input 4",
        ],
        "each bad mail stored and answered once, ours skipped"
    );
    let odd = app
        .store()
        .find_message(CHANNEL, "bad-2@test.local")
        .await
        .unwrap()
        .unwrap();
    let odd = app
        .store()
        .conversation_messages(&odd.conversation_id)
        .await
        .unwrap();
    assert_eq!(odd[0].text, "Привет", "koi8-r decoded");
    let big = app
        .store()
        .find_message(CHANNEL, "bad-4@test.local")
        .await
        .unwrap()
        .unwrap();
    let big = app
        .store()
        .conversation_messages(&big.conversation_id)
        .await
        .unwrap();
    assert_eq!(big[0].text, "see the video");
    assert_eq!(big[0].attachments[1].name, "big.mp4");
    assert!(big[0].attachments[1].size_bytes.unwrap() > 25_000_000);
    assert!(
        app.store()
            .find_message(CHANNEL, "bad-5@test.local")
            .await
            .unwrap()
            .is_none()
    );
    let events = app
        .store()
        .conversation_events(&odd[0].conversation_id)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|event| event.kind == EventKind::MessageStored)
    );
}
both_backends!(email_bad_input_contained, bad_input_is_contained);

async fn refund_by_mail(backend: Backend) {
    let support = mailbox("support");
    let customer = MailUser::new("customer");
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = seed_dir.path().join("orders.json");
    std::fs::write(
        &seed,
        json!({"orders": [{
            "id": "5001", "customer_email": customer.address, "status": "delivered",
            "total_cents": 4500, "currency": "EUR", "placed_days_ago": 8, "delivered_days_ago": 3,
            "items": [{"sku": "MUG-01", "name": "Ceramic mug", "quantity": 3, "unit_price_cents": 1500}]
        }]})
        .to_string(),
    )
    .unwrap();
    let assistant = crate::assistant::shared_assistant().await;
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            with_mailbox(&support)(settings);
            settings.workflow.orders_seed = seed.clone();
        },
        crate::helpers::options_with(Some(assistant), vec![]),
    )
    .await;
    wait_until_reading(&app).await;
    let first_id = format!("refund.{}", customer.address);
    customer
        .write(
            &support,
            "Refund",
            &first_id,
            None,
            "I want a refund for order 5001",
        )
        .await;
    let question = customer.wait_for(1, 30).await.remove(0);
    assert_eq!(question.text, "What is the reason?");
    let reason_id = format!("reason.{}", customer.address);
    customer
        .write(
            &support,
            "Re: Refund",
            &reason_id,
            Some(&question.message_id),
            &format!(
                "the mugs arrived broken\r\n\r\nOn Tue, 3 Jun 2025, Shop support <{support}> wrote:\r\n> What is the reason?\r\n"
            ),
        )
        .await;
    let inbox = customer.wait_for(2, 30).await;
    let approved = inbox
        .iter()
        .find(|mail| mail.text.contains("approved"))
        .unwrap_or_else(|| panic!("an approval mail: {inbox:?}"));
    assert_eq!(
        approved.text,
        "Good news: your refund request (45.00 EUR) for order 5001 has been approved."
    );
    assert_eq!(approved.subject, "Re: Refund");
    assert_eq!(
        approved.in_reply_to,
        std::slice::from_ref(&reason_id),
        "told in the thread, answering the customer's latest mail"
    );
    assert_eq!(approved.auto_submitted.as_deref(), Some("auto-generated"));
    let conversation_id = conversation_of(&app, &reason_id).await;
    assert_eq!(conversation_of(&app, &first_id).await, conversation_id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let approvals = customer
        .inbox()
        .await
        .into_iter()
        .filter(|mail| mail.text.contains("approved"))
        .count();
    assert_eq!(approvals, 1, "told once");
}
both_backends!(email_refund_told_by_mail, refund_by_mail);
