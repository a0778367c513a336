//! The web chat under attack: floods across sockets and sessions, frames that are not
//! messages, foreign origins, identity tokens that expired or were copied elsewhere, bytes
//! that are not UTF-8. Each is refused or bounded with a code the client can act on, and an
//! honest visitor on another socket is answered meanwhile.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_webchat::session::IdentityVerifier;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::both_backends;
use crate::helpers::{
    Backend, Next, Socket, TestApp, Visitor, open_socket, read_frame, same_origin, set_webchat,
    socket_from,
};

async fn honest_visitor_is_answered(app: &TestApp) {
    let mut honest = app.visitor().await;
    honest.send_and_ack("h-1", "I am just asking").await;
    assert_eq!(honest.bot_reply().await["text"], "echo: I am just asking");
}

async fn say(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// Read frames until the socket closes or `idle` passes without one.
async fn drain(socket: &mut Socket, idle: Duration) -> (Vec<Value>, Option<Option<u16>>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(idle, read_frame(socket)).await {
            Ok(Next::Frame(frame)) => frames.push(frame),
            Ok(Next::Closed(code)) => return (frames, Some(code)),
            Err(_) => return (frames, None),
        }
    }
}

fn count(frames: &[Value], wanted: impl Fn(&Value) -> bool) -> usize {
    frames.iter().filter(|frame| wanted(frame)).count()
}

async fn visitor_limit_holds_across_sockets(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            set_webchat(settings, "rate_per_minute", 1);
            set_webchat(settings, "rate_burst", 10);
        },
        Default::default(),
    )
    .await;
    let first = app.visitor().await;
    let token = first.token.clone();
    // Ten sockets of one visitor, 20 messages each, as fast as they go.
    let mut tabs = vec![first];
    for _ in 0..9 {
        tabs.push(Visitor::connect(&app.ws_url(), Some(&token)).await);
    }
    for (t, tab) in tabs.iter_mut().enumerate() {
        for m in 0..20 {
            tab.send(&format!("t{t}-m{m}"), &format!("flood {t} {m}"))
                .await;
        }
    }
    honest_visitor_is_answered(&app).await;
    let mut acked = 0;
    let mut limited = 0;
    for tab in &mut tabs {
        let (frames, _) = drain(&mut tab.socket, Duration::from_millis(500)).await;
        acked += count(&frames, |f| f["type"] == "ack");
        limited += count(&frames, |f| {
            f["code"] == "rate_limited" && f["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0)
        });
    }
    assert_eq!(acked, 10, "the visitor's burst, across all its sockets");
    assert!(
        limited > 0,
        "the rest refused with rate_limited and a retry delay"
    );
    let stored = app
        .store()
        .history("web", &tabs[0].visitor_id, 500)
        .await
        .unwrap();
    let from_customer = stored
        .iter()
        .filter(|message| message.author == switchboard_connector::AuthorKind::Customer)
        .count();
    assert_eq!(from_customer, 10, "nothing over the limit was stored");
}
both_backends!(visitor_rate_limit, visitor_limit_holds_across_sockets);

async fn address_limits_hold_across_sessions(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            set_webchat(settings, "ip_sessions_per_minute", 1);
            set_webchat(settings, "ip_sessions_burst", 5);
            set_webchat(settings, "ip_rate_per_minute", 1);
            set_webchat(settings, "ip_rate_burst", 12);
        },
        Default::default(),
    )
    .await;
    let origin = same_origin(&app.ws_url());
    // Fresh guest sessions from one address: the burst is granted, then 4029 with a delay.
    let mut sessions = Vec::new();
    let mut refused = None;
    for _ in 0..50 {
        let mut socket = socket_from("127.0.0.5", &app, Some(&origin)).await;
        say(&mut socket, json!({"type": "hello", "token": null})).await;
        match read_frame(&mut socket).await {
            Next::Frame(frame) if frame["type"] == "welcome" => sessions.push(socket),
            Next::Frame(frame) => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                assert!(frame["retry_after_ms"].as_u64().unwrap() > 0);
                let (_, closed) = drain(&mut socket, Duration::from_secs(5)).await;
                refused = closed;
                break;
            }
            Next::Closed(code) => panic!("closed ({code:?}) without a reason"),
        }
    }
    assert_eq!(sessions.len(), 5, "the address's session burst");
    assert_eq!(refused, Some(Some(4029)));
    // Those sessions together may store only the address's message burst.
    for (s, socket) in sessions.iter_mut().enumerate() {
        for m in 0..20 {
            say(
                socket,
                json!({"type": "message", "client_id": format!("s{s}-{m}"), "text": "spam"}),
            )
            .await;
        }
    }
    honest_visitor_is_answered(&app).await;
    let mut acked = 0;
    for socket in &mut sessions {
        let (frames, _) = drain(socket, Duration::from_millis(500)).await;
        acked += count(&frames, |f| f["type"] == "ack");
    }
    assert_eq!(acked, 12, "the address's burst across its sessions");
    // The honest visitor comes from another address and opened a session meanwhile.
    let again = app.visitor().await;
    assert_eq!(again.welcome["resumed"], false);
}
both_backends!(address_rate_limits, address_limits_hold_across_sessions);

async fn frame_floods_are_cut_off(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            set_webchat(settings, "frame_rate_per_minute", 1);
            set_webchat(settings, "frame_rate_burst", 30);
        },
        Default::default(),
    )
    .await;
    for flood in [
        Message::text("{not json"),
        Message::text(json!({"type": "typing", "active": true}).to_string()),
    ] {
        let mut attacker = app.visitor().await;
        let mut sent = 0;
        // Up to 20,000 frames; the server closes the socket long before.
        for _ in 0..20_000 {
            if attacker.socket.send(flood.clone()).await.is_err() {
                break;
            }
            sent += 1;
            if sent % 500 == 0 {
                tokio::task::yield_now().await;
            }
        }
        honest_visitor_is_answered(&app).await;
        let (frames, closed) = drain(&mut attacker.socket, Duration::from_secs(5)).await;
        let answered = count(&frames, |f| f["type"] == "error");
        assert!(
            answered <= 30,
            "at most the frame burst is answered, got {answered}"
        );
        assert_eq!(closed, Some(Some(1008)), "the flooding socket is closed");
    }
}
both_backends!(frame_floods, frame_floods_are_cut_off);

async fn refused(socket: &mut Socket) -> (String, Option<u16>) {
    let code = match read_frame(socket).await {
        Next::Frame(frame) => frame["code"].as_str().unwrap_or_default().to_string(),
        Next::Closed(code) => return (String::new(), code),
    };
    let (_, closed) = drain(socket, Duration::from_secs(5)).await;
    (code, closed.flatten())
}

async fn foreign_origins_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| set_webchat(settings, "identity_secret", "shop-secret"),
        Default::default(),
    )
    .await;
    let url = app.ws_url();
    let origin = same_origin(&url);
    let identity_token = IdentityVerifier::new(b"shop-secret").issue_token(
        "ana@example.com",
        "https://evil.example.net",
        chrono::Utc::now().timestamp() + 600,
    );
    for foreign in [Some("https://evil.example.net"), None] {
        let mut socket = open_socket(&url, foreign).await;
        // Even a signed-in hello gets nowhere.
        let hello = json!({"type": "hello", "token": null, "identity_token": identity_token});
        let _ = socket.send(Message::text(hello.to_string())).await;
        assert_eq!(
            refused(&mut socket).await,
            ("origin_not_allowed".to_string(), Some(4003)),
            "origin {foreign:?}"
        );
    }
    // The server's own pages are fine.
    let own = open_socket(&url, Some(&origin)).await;
    Visitor::greet(own, json!({"type": "hello", "token": null})).await;
    honest_visitor_is_answered(&app).await;

    // With a list, its origins and only them.
    let listed = TestApp::spawn_with(
        backend,
        |settings| {
            set_webchat(
                settings,
                "allowed_origins",
                json!(["https://Shop.example.com/"]),
            )
        },
        Default::default(),
    )
    .await;
    let url = listed.ws_url();
    let shop = open_socket(&url, Some("https://shop.example.com")).await;
    Visitor::greet(shop, json!({"type": "hello", "token": null})).await;
    let mut own = open_socket(&url, Some(&same_origin(&url))).await;
    say(&mut own, json!({"type": "hello", "token": null})).await;
    assert_eq!(refused(&mut own).await.1, Some(4003));
}
both_backends!(origins, foreign_origins_are_refused);

async fn identity_tokens_expire_and_stay_home(backend: Backend) {
    let shop_a = "https://a.shop.example";
    let shop_b = "https://b.shop.example";
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            set_webchat(settings, "identity_secret", "shop-secret");
            set_webchat(settings, "allowed_origins", json!([shop_a, shop_b]));
        },
        Default::default(),
    )
    .await;
    let url = app.ws_url();
    let shop = IdentityVerifier::new(b"shop-secret");
    let now = chrono::Utc::now().timestamp();
    let hello_from = |origin: &'static str, hello: Value| {
        let url = url.clone();
        async move { Visitor::greet(open_socket(&url, Some(origin)).await, hello).await }
    };

    let valid = shop.issue_token("ana@example.com", shop_a, now + 600);
    let signed_in = hello_from(shop_a, json!({"type": "hello", "identity_token": valid})).await;
    assert!(signed_in.visitor_id.starts_with("id-"));

    // The same token replayed from a page of another origin: a guest.
    let mut replayed = hello_from(shop_b, json!({"type": "hello", "identity_token": valid})).await;
    let error = replayed.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "identity_wrong_origin");
    assert!(!replayed.visitor_id.starts_with("id-"));

    // Expired: a guest.
    let expired = shop.issue_token("ana@example.com", shop_a, now - 300);
    let mut late = hello_from(shop_a, json!({"type": "hello", "identity_token": expired})).await;
    let error = late.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "identity_expired");
    assert!(!late.visitor_id.starts_with("id-"));

    // A token that would last for years is no better.
    let forever = shop.issue_token("ana@example.com", shop_a, now + 10 * 365 * 86_400);
    let mut greedy = hello_from(shop_a, json!({"type": "hello", "identity_token": forever})).await;
    let error = greedy.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "invalid_identity");

    // The old email signature never expires: refused unless enabled.
    let legacy = json!({"type": "hello", "identity": {
        "email": "ana@example.com", "signature": shop.sign("ana@example.com")}});
    let mut old = hello_from(shop_a, legacy.clone()).await;
    let error = old.expect("an error", |f| f["type"] == "error").await;
    assert_eq!(error["code"], "invalid_identity");
    assert!(!old.visitor_id.starts_with("id-"));
    let migrating = TestApp::spawn_with(
        backend,
        |settings| {
            set_webchat(settings, "identity_secret", "shop-secret");
            set_webchat(settings, "legacy_identity_signatures", true);
        },
        Default::default(),
    )
    .await;
    let accepted = Visitor::hello(&migrating.ws_url(), legacy).await;
    assert!(accepted.visitor_id.starts_with("id-"));

    // Session tokens rotate on resume: each welcome carries a fresh one for the same visitor.
    let guest = app_visitor(&url, shop_a).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resumed = Visitor::greet(
        open_socket(&url, Some(shop_a)).await,
        json!({"type": "hello", "token": guest.token}),
    )
    .await;
    assert_eq!(resumed.visitor_id, guest.visitor_id);
    assert_eq!(resumed.welcome["resumed"], true);
    assert_ne!(resumed.token, guest.token, "a new token on resume");
}
both_backends!(identity_tokens, identity_tokens_expire_and_stay_home);

async fn app_visitor(url: &str, origin: &str) -> Visitor {
    Visitor::greet(
        open_socket(url, Some(origin)).await,
        json!({"type": "hello", "token": null}),
    )
    .await
}

async fn invalid_utf8_closes_with_1007(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut visitor = app.visitor().await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    visitor.socket.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(visitor.closed().await, Some(1007));
    honest_visitor_is_answered(&app).await;
}
both_backends!(invalid_utf8, invalid_utf8_closes_with_1007);

async fn hello_timeout_closes_idle_sockets(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| set_webchat(settings, "hello_timeout_secs", 1),
        Default::default(),
    )
    .await;
    let url = app.ws_url();
    let mut silent = open_socket(&url, Some(&same_origin(&url))).await;
    honest_visitor_is_answered(&app).await;
    let (frames, closed) = drain(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(
        frames.first().map(|f| f["code"].clone()),
        Some(json!("hello_required"))
    );
    assert_eq!(closed, Some(Some(4002)));
    let _ = silent.next().await;
}
both_backends!(hello_timeout, hello_timeout_closes_idle_sockets);

async fn default_config_signs_nobody_in(backend: Backend) {
    // The shipped file, as deployed: not in demo mode, so its demo_email signs nobody in.
    let mut shipped = switchboard::config::Settings::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchboard.toml"
    )))
    .unwrap();
    assert!(!shipped.demo, "the shipped config is not in demo mode");
    let demo_email = shipped
        .channel
        .table_mut("web")
        .and_then(|web| web.get("demo_email").cloned())
        .unwrap_or_default();
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.demo = shipped.demo;
            set_webchat(settings, "demo_email", demo_email.clone());
        },
        Default::default(),
    )
    .await;
    let page = reqwest::get(app.http_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("data-user-token"), "no identity on the page");
    assert!(!page.contains("data-user-signature"));
    assert!(!page.contains("Signed in"));

    // Demo mode (scripts/demo): a token for the page's own origin that expires within the hour.
    let demo = TestApp::spawn_with(
        backend,
        |settings| {
            settings.demo = true;
            set_webchat(settings, "demo_email", demo_email.clone());
        },
        Default::default(),
    )
    .await;
    let page = reqwest::get(demo.http_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("data-user-token=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the demo page carries a token")
        .to_string();
    let url = demo.ws_url();
    let at_home = Visitor::greet(
        open_socket(&url, Some(&same_origin(&url))).await,
        json!({"type": "hello", "identity_token": token}),
    )
    .await;
    assert!(at_home.visitor_id.starts_with("id-"), "{}", at_home.welcome);
    let claims: Value = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let lifetime = claims["exp"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((0..=3600).contains(&lifetime), "{claims}");
    assert_eq!(claims["aud"], same_origin(&url));
}
both_backends!(demo_identity, default_config_signs_nobody_in);
