//! SIGKILL in the middle of a Telegram burst, in both modes: after a restart on the same
//! database every update is stored exactly once and answered by exactly one reply, and nothing
//! the customers wrote (before, during or after the kill) is lost.
//!
//! Polling: updates read but not yet covered by the durable offset are read again after the
//! restart and dropped as duplicates by their `update_id`. Webhook: Telegram (here the peer's
//! proxy, as Telegram does) redelivers what the dead process never acknowledged.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::store::Store;
use switchboard_connector::AuthorKind;

use super::peer::{TelegramPeer, User};
use super::{CHANNEL, Mode, SECRET, wait_connected};
use crate::helpers::{Backend, TestDatabase, eventually, free_port, wait_ready};
use crate::telegram_modes;

/// Most replies a kill may leave sent but unrecorded (then sent again): those in flight, at
/// most the instance's outbound concurrency. Telegram's `sendMessage` has no idempotency key.
const IN_FLIGHT: usize = 16;

fn write_config(
    database: &TestDatabase,
    peer: &TelegramPeer,
    mode: Mode,
    port: u16,
) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchboard.toml"
    ))
    .expect("shipped config");
    let mut table = format!(
        "\n[[channel]]\nkind = \"telegram\"\nname = \"{CHANNEL}\"\ntoken = \"${{SB_TEST_TELEGRAM_TOKEN}}\"\n\
         api_url = \"{}\"\npoll_timeout_secs = 2\npoll_idle_ms = 50\n\
         # The per-chat pace is not what this test is about.\nchat_per_second = 100.0\nchat_burst = 100\n",
        peer.api_url
    );
    if mode == Mode::Webhook {
        table.push_str(&format!(
            "mode = \"webhook\"\nwebhook_url = \"http://127.0.0.1:{port}/channels/telegram/{CHANNEL}\"\n\
             secret_token = \"{SECRET}\"\n"
        ));
    }
    let path = database.dir.path().join("switchboard.toml");
    std::fs::write(&path, format!("{shipped}\n{table}")).expect("write config");
    path
}

fn start_server(
    database: &TestDatabase,
    config: &std::path::Path,
    token: &str,
    port: u16,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("SWITCHBOARD__DATA_DIR", database.dir.path())
        .env("SWITCHBOARD__DATABASE__URL", &database.url)
        .env("SWITCHBOARD__HTTP__PORT", port.to_string())
        .env("SWITCHBOARD__ASSISTANT__KIND", "echo")
        .env("SWITCHBOARD__OUTBOX__LEASE_SECS", "1")
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        .env("SB_TEST_TELEGRAM_TOKEN", token)
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchboard")
}

async fn killed_mid_burst(backend: Backend, mode: Mode) {
    let peer = Arc::new(TelegramPeer::start().await);
    let token = TelegramPeer::token();
    let database = TestDatabase::new(backend).await;
    let port = free_port();
    let config = write_config(&database, &peer, mode, port);
    let mut server = start_server(&database, &config, &token, port);
    wait_ready(port, 60).await;
    wait_connected(&peer, &token, mode).await;

    let users: Vec<User> = (0..4)
        .map(|n| User::new(&format!("Customer{n}"), Some("en")))
        .collect();
    let per_user = 15;
    let writer = {
        let peer = peer.clone();
        let token = token.clone();
        let users = users.clone();
        tokio::spawn(async move {
            for m in 0..per_user {
                for (n, user) in users.iter().enumerate() {
                    let text = format!("burst {n}/{m}");
                    peer.user_writes(&token, user, &user.private_chat(), &text)
                        .await;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
        })
    };
    // Kill once some replies went out, with more of the burst still coming.
    let peer_ref: &TelegramPeer = &peer;
    let users_ref: &[User] = &users;
    let token_ref: &str = &token;
    let total_sent = move |peer: &TelegramPeer| -> usize {
        users_ref
            .iter()
            .map(|user| peer.bot_messages(token_ref, user.id).len())
            .sum()
    };
    eventually(60, "the first replies", || async move {
        total_sent(peer_ref) >= 8
    })
    .await;
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    let at_kill = total_sent(peer_ref);
    writer.await.unwrap();
    let written = per_user * users.len();
    assert!(
        at_kill < written,
        "killed mid-burst ({at_kill} of {written} answered)"
    );

    let mut restarted = start_server(&database, &config, &token, port);
    wait_ready(port, 60).await;
    // The burst's messages that have no answer on Telegram yet.
    let unanswered = move || -> Vec<String> {
        let mut missing = Vec::new();
        for (n, user) in users_ref.iter().enumerate() {
            let shown: Vec<String> = peer_ref
                .bot_messages(token_ref, user.id)
                .iter()
                .map(|m| m.shown())
                .collect();
            for m in 0..per_user {
                let text = format!("burst {n}/{m}");
                if !shown
                    .iter()
                    .any(|answer| answer == &format!("echo: {text}"))
                {
                    missing.push(text);
                }
            }
        }
        missing
    };
    // Generous: the replies pace at one per second per chat, and CI runs tests side by side.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !unanswered().is_empty() {
        if Instant::now() > deadline {
            let missing = unanswered();
            let store = Store::connect(&database.url, 2).await.unwrap();
            let mut stored = Vec::new();
            for (n, user) in users.iter().enumerate() {
                let history = store
                    .history(CHANNEL, &user.id.to_string(), 5000)
                    .await
                    .unwrap();
                for message in history {
                    if missing
                        .iter()
                        .any(|text| message.text.ends_with(text.as_str()))
                    {
                        stored.push(format!("user {n}: {:?} {}", message.author, message.text));
                    }
                }
            }
            panic!(
                "{} messages unanswered 180 s after the restart: {missing:?}; \
                 in the store for them: {stored:?}",
                missing.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let store = Store::connect(&database.url, 2).await.unwrap();
    let mut resent = 0;
    for (n, user) in users.iter().enumerate() {
        let history = store
            .history(CHANNEL, &user.id.to_string(), 5000)
            .await
            .unwrap();
        let customer: Vec<&str> = history
            .iter()
            .filter(|m| m.author == AuthorKind::Customer)
            .map(|m| m.text.as_str())
            .collect();
        let expected: Vec<String> = (0..per_user).map(|m| format!("burst {n}/{m}")).collect();
        assert_eq!(customer, expected, "every update stored once, in order");
        let replies: Vec<_> = history
            .iter()
            .filter(|m| m.author == AuthorKind::Bot)
            .collect();
        assert_eq!(replies.len(), per_user, "one reply per message");
        for reply in &replies {
            let rows = store.outbox_state(&reply.id).await.unwrap();
            assert_eq!(rows.len(), 1, "one outbox row for reply {}", reply.id);
            assert_eq!(rows[0].0, "sent", "reply {} delivered", reply.id);
        }
        // On the wire: each answered at least once; a second copy only for a send that was
        // in flight at the kill.
        let mut wire: HashMap<String, usize> = HashMap::new();
        for message in peer.bot_messages(&token, user.id) {
            *wire.entry(message.shown()).or_default() += 1;
        }
        for text in &expected {
            let copies = wire
                .get(&format!("echo: {text}"))
                .copied()
                .unwrap_or_default();
            assert!((1..=2).contains(&copies), "{text} answered {copies} times");
            resent += copies - 1;
        }
    }
    println!(
        "killed after {at_kill} replies; {resent} replies in flight at the kill were sent again"
    );
    assert!(resent <= IN_FLIGHT, "{resent} replies sent twice");
    store.close().await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}
telegram_modes!(telegram_killed_mid_burst, killed_mid_burst);
