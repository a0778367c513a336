//! Web chat through the whole app: session resume with history, several tabs, typing.

use serde_json::{Value, json};
use switchboard_webchat::session::IdentityVerifier;
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::helpers::{Backend, Next, TestApp, Visitor};

async fn session_resumes_with_history(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut visitor = app.visitor().await;
    assert_eq!(visitor.welcome["resumed"], false);
    assert!(visitor.history().is_empty());
    let ack = visitor
        .send_and_ack("first", "do you ship to Girona?")
        .await;
    let reply = visitor.bot_reply().await;
    assert_eq!(reply["text"], "echo: do you ship to Girona?");
    let token = visitor.token.clone();
    drop(visitor);

    // A reload: the same visitor, the same conversation, its history.
    let mut resumed = Visitor::connect(&app.ws_url(), Some(&token)).await;
    assert_eq!(resumed.welcome["resumed"], true);
    let history = resumed.history();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["id"], ack["id"]);
    assert_eq!(history[0]["author"], "customer");
    assert_eq!(history[0]["client_id"], "first");
    assert_eq!(history[1]["id"], reply["id"]);
    assert_eq!(history[1]["author"], "bot");
    assert!(history[0]["seq"].as_i64() < history[1]["seq"].as_i64());
    let stored = app
        .store()
        .history("web", &resumed.visitor_id, 10)
        .await
        .unwrap();
    assert_eq!(
        resumed.welcome["conversation_id"],
        stored[0].conversation_id.as_str()
    );

    // A second tab sees what the first sends, and both get the reply.
    let mut second = Visitor::connect(&app.ws_url(), Some(&token)).await;
    resumed.send_and_ack("second", "and to Lleida?").await;
    let copy = second
        .expect("the other tab's message", |f| {
            f["type"] == "message" && f["author"] == "customer"
        })
        .await;
    assert_eq!(copy["text"], "and to Lleida?");
    assert_eq!(copy["client_id"], "second");
    assert_eq!(resumed.bot_reply().await["text"], "echo: and to Lleida?");
    assert_eq!(second.bot_reply().await["text"], "echo: and to Lleida?");

    // A tab that closes gets the closing handshake answered (RFC 6455: the close frame echoed).
    use futures::{SinkExt, StreamExt};
    second.socket.send(Message::Close(None)).await.unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match second.socket.next().await {
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the stream ended without a close frame".into()),
            }
        }
    })
    .await
    .expect("the server answers within 10 s");
    assert_eq!(answer, Ok(()));
}
both_backends!(session_resume_with_history, session_resumes_with_history);

/// Open a socket, send `hello` as its first frame, and read what the server answers until it
/// closes: the frames and the close code.
async fn refused_hello(url: &str, hello: Value) -> (Vec<Value>, Option<u16>) {
    use futures::{SinkExt, StreamExt};
    let mut socket =
        crate::helpers::open_socket(url, Some(&crate::helpers::same_origin(url))).await;
    socket.send(Message::text(hello.to_string())).await.unwrap();
    let mut frames = Vec::new();
    while let Some(Ok(frame)) = socket.next().await {
        match frame {
            Message::Text(text) => frames.push(serde_json::from_str::<Value>(&text).unwrap()),
            Message::Close(close) => return (frames, close.map(|close| u16::from(close.code))),
            _ => {}
        }
    }
    (frames, None)
}

async fn protocol_errors_are_answered_and_contained(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut bystander = app.visitor().await;
    let mut visitor = app.visitor().await;

    visitor.send_raw(Message::text("{not json")).await;
    let error = visitor.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "bad_frame");
    visitor
        .send_raw(Message::text(
            json!({"type": "message", "client_id": "bad id!", "text": "x"}).to_string(),
        ))
        .await;
    let error = visitor.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "bad_frame");
    visitor.send_and_ack("ok-1", "still here").await;

    let long = "x".repeat(4001);
    visitor.send("long", &long).await;
    let error = visitor.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "text_too_long");
    assert_eq!(error["client_id"], "long");

    // An oversized frame closes only that socket.
    visitor.send("huge", &"y".repeat(40_000)).await;
    assert_eq!(visitor.closed().await, Some(1009));
    bystander.send_and_ack("b-1", "unaffected").await;
    assert_eq!(bystander.bot_reply().await["text"], "echo: unaffected");

    // A forged token is refused with 4001.
    let forged = bystander
        .token
        .replace(&bystander.visitor_id, "someone-else");
    let url = app.ws_url();
    let (frames, close) = refused_hello(&url, json!({"type": "hello", "token": forged})).await;
    assert_eq!(close, Some(4001));
    let codes: Vec<Value> = frames.iter().map(|frame| frame["code"].clone()).collect();
    assert_eq!(codes, [json!("invalid_token")]);

    // A hello with a field of the wrong type, or one it does not know, is refused naming it.
    for (hello, named) in [
        (
            json!({"type": "hello", "token": 42}),
            "invalid type: integer",
        ),
        (
            json!({"type": "hello", "token": null, "extra": 1}),
            "unknown field `extra`",
        ),
    ] {
        let (errors, code) = refused_hello(&url, hello.clone()).await;
        assert_eq!(code, Some(4002), "{hello}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["code"], "bad_frame", "{hello}");
        let message = errors[0]["message"].as_str().unwrap();
        assert!(message.contains(named), "{hello}: {message}");
    }

    // Nothing acknowledged was lost: the acked message is stored and answered.
    let history = app
        .store()
        .history("web", &visitor.visitor_id, 10)
        .await
        .unwrap();
    assert_eq!(history.iter().filter(|m| m.text == "still here").count(), 1);
}
both_backends!(
    bad_input_is_contained,
    protocol_errors_are_answered_and_contained
);

async fn flooding_client_is_cut_off(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            crate::helpers::set_webchat(settings, "rate_burst", 5);
            crate::helpers::set_webchat(settings, "rate_per_minute", 60);
        },
        Default::default(),
    )
    .await;
    let mut bystander = app.visitor().await;
    let mut flooder = app.visitor().await;
    for n in 0..200 {
        flooder.send(&format!("f{n}"), "spam").await;
    }
    let mut acked = 0;
    let mut limited = 0;
    let code = loop {
        match flooder.next().await {
            Next::Frame(frame) if frame["type"] == "ack" => acked += 1,
            Next::Frame(frame) if frame["code"] == "rate_limited" => limited += 1,
            Next::Frame(_) => {}
            Next::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(1008), "persistent flooding closes the socket");
    assert_eq!(acked, 5, "the burst was accepted");
    assert!(limited >= 10, "the rest was refused ({limited})");
    let history = app
        .store()
        .history("web", &flooder.visitor_id, 500)
        .await
        .unwrap();
    let stored = history.iter().filter(|m| m.text == "spam").count();
    assert_eq!(stored, acked, "refused messages were not stored");
    bystander.send_and_ack("calm", "hello").await;
    assert_eq!(bystander.bot_reply().await["text"], "echo: hello");
}
both_backends!(flood_from_one_client, flooding_client_is_cut_off);

/// Thinks long enough for the typing indicator to show.
struct Thoughtful;

#[async_trait::async_trait]
impl switchboard::assistant::Assistant for Thoughtful {
    async fn respond(
        &self,
        turn: &switchboard::assistant::Turn,
    ) -> Result<switchboard::assistant::Reply, switchboard::assistant::AssistantError> {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        Ok(switchboard::assistant::Reply {
            messages: vec![format!("after some thought: {}", turn.text)],
            ..Default::default()
        })
    }
}

async fn slow_answers_show_typing(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.router.typing_after_ms = 100,
        crate::helpers::options_with(Some(std::sync::Arc::new(Thoughtful)), Vec::new()),
    )
    .await;
    let mut visitor = app.visitor().await;
    // The customer's typing is accepted (and not stored).
    visitor
        .send_raw(Message::text(
            json!({"type": "typing", "active": true}).to_string(),
        ))
        .await;
    visitor.send_and_ack("q", "is it in stock?").await;
    let mut frames = Vec::new();
    loop {
        let Next::Frame(frame) = visitor.next().await else {
            panic!("closed")
        };
        let done = frame["type"] == "message";
        frames.push(frame);
        if done {
            break;
        }
    }
    let kinds: Vec<String> = frames
        .iter()
        .map(|f| format!("{}:{}", f["type"].as_str().unwrap(), f["active"]))
        .collect();
    assert_eq!(
        kinds,
        ["typing:true", "typing:false", "message:null"],
        "{frames:?}"
    );
    assert_eq!(frames[0]["author"], "bot");
    let history = app
        .store()
        .history("web", &visitor.visitor_id, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "typing is not stored");
}
both_backends!(typing_indicators, slow_answers_show_typing);

async fn signed_in_customers_are_vouched_for(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| crate::helpers::set_webchat(settings, "identity_secret", "shop-secret"),
        Default::default(),
    )
    .await;
    let shop = IdentityVerifier::new(b"shop-secret");
    // The shop's pages are the server's own origin here; tokens last ten minutes.
    let origin = crate::helpers::same_origin(&app.ws_url());
    let expires = chrono::Utc::now().timestamp() + 600;
    let signed_in = |_email: &str, identity_token: &str, token: Option<&str>| json!({"type": "hello", "token": token, "identity_token": identity_token});
    let signature = shop.issue_token("Ana@Example.com", &origin, expires);

    // Signed in: a visitor of their own, the email linked to their contact on their first
    // message.
    let mut phone = Visitor::hello(
        &app.ws_url(),
        signed_in("ana@example.com", &signature, None),
    )
    .await;
    assert!(phone.visitor_id.starts_with("id-"), "{}", phone.welcome);
    phone.send_and_ack("p-1", "hello from my phone").await;
    phone.bot_reply().await;
    let linked = || async {
        use sqlx::Connection;
        let mut connection = sqlx::AnyConnection::connect(&app.database.url)
            .await
            .unwrap();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT e.email, e.source FROM contact_emails e \
             JOIN contact_identities i ON i.contact_id = e.contact_id \
             WHERE i.channel = 'web' AND i.platform_user_id = $1",
        )
        .bind(phone.visitor_id.clone())
        .fetch_all(&mut connection)
        .await
        .unwrap();
        rows
    };
    assert_eq!(
        linked().await,
        [("ana@example.com".to_string(), "channel:web".to_string())]
    );

    // Another device, same customer: the same conversation and its history.
    let laptop = Visitor::hello(
        &app.ws_url(),
        signed_in("ana@example.com", &signature, None),
    )
    .await;
    assert_eq!(laptop.visitor_id, phone.visitor_id);
    assert_eq!(laptop.history().len(), 2);

    // A forged signature: told, and chatting as a guest.
    let mut forged = Visitor::hello(
        &app.ws_url(),
        signed_in(
            "ana@example.com",
            &IdentityVerifier::new(b"not-the-shop").issue_token(
                "ana@example.com",
                &origin,
                expires,
            ),
            None,
        ),
    )
    .await;
    let error = forged
        .expect("identity error", |frame| frame["type"] == "error")
        .await;
    assert_eq!(error["code"], "invalid_identity");
    assert!(!forged.visitor_id.starts_with("id-"));
    assert!(forged.history().is_empty());

    // The signed-in customer's token without the identity (they signed out, someone else uses
    // the browser): a new guest, not their conversation.
    let after = Visitor::connect(&app.ws_url(), Some(&phone.token)).await;
    assert_ne!(after.visitor_id, phone.visitor_id);
    assert_eq!(after.welcome["resumed"], false);
    assert!(after.history().is_empty());
    assert_eq!(linked().await.len(), 1);
}
both_backends!(signed_in_customers, signed_in_customers_are_vouched_for);
