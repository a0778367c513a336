//! SIGKILL in the middle of a burst: no acknowledged message is lost, no reply is sent twice.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::store::Store;
use switchboard_connector::AuthorKind;

use crate::both_backends;
use crate::helpers::{Backend, Next, TestDatabase, Visitor, eventually, free_port, wait_ready};

/// The shipped config with the web chat limits opened up for a burst (channel tables are set
/// in the file; the environment overrides sections).
fn write_config(database: &TestDatabase) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchboard.toml"
    ))
    .expect("shipped config");
    let mut text = shipped.clone();
    for (from, to) in [
        ("rate_per_minute = 120", "rate_per_minute = 600000"),
        ("rate_burst = 20", "rate_burst = 100000"),
        // Every burst socket comes from 127.0.0.1 and sends as fast as it can: the per-address
        // and per-socket limits have tests of their own (tests/it/abuse.rs).
        ("ip_rate_per_minute = 600", "ip_rate_per_minute = 6000000"),
        ("ip_rate_burst = 100", "ip_rate_burst = 1000000"),
        (
            "ip_sessions_per_minute = 30",
            "ip_sessions_per_minute = 600000",
        ),
        ("ip_sessions_burst = 20", "ip_sessions_burst = 100000"),
        (
            "frame_rate_per_minute = 600",
            "frame_rate_per_minute = 6000000",
        ),
        ("frame_rate_burst = 120", "frame_rate_burst = 1000000"),
        ("history_limit = 100", "history_limit = 5000"),
    ] {
        assert!(text.contains(from), "the shipped config sets {from}");
        text = text.replacen(from, to, 1);
    }
    let path = database.dir.path().join("switchboard.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_server(database: &TestDatabase, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .arg("--config")
        .arg(write_config(database))
        .env("SWITCHBOARD__DATA_DIR", database.dir.path())
        .env("SWITCHBOARD__DATABASE__URL", &database.url)
        .env("SWITCHBOARD__HTTP__PORT", port.to_string())
        .env("SWITCHBOARD__ASSISTANT__KIND", "echo")
        // Rows reserved by the killed process become claimable soon (PostgreSQL keeps them).
        .env("SWITCHBOARD__OUTBOX__LEASE_SECS", "1")
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchboard")
}

async fn killed_mid_burst_loses_nothing(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let port = free_port();
    let mut server = start_server(&database, port);
    wait_ready(port, 60).await;
    let url = format!("ws://127.0.0.1:{port}/channels/webchat/web/ws");

    // client id -> text, for every acknowledged message, per visitor token.
    let acked: Arc<Mutex<HashMap<String, HashMap<String, String>>>> = Arc::default();
    let mut tokens = Vec::new();
    let mut tasks = Vec::new();
    for v in 0..8 {
        let visitor = Visitor::connect(&url, None).await;
        tokens.push((visitor.token.clone(), visitor.visitor_id.clone()));
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut visitor = visitor;
            let mut sent: HashMap<String, String> = HashMap::new();
            for m in 0..400 {
                let client_id = format!("v{v}-m{m}");
                let text = format!("burst {v}/{m}");
                // Keep a window of unacknowledged messages in flight.
                sent.insert(client_id.clone(), text.clone());
                use futures::SinkExt;
                let frame =
                    serde_json::json!({"type": "message", "client_id": client_id, "text": text});
                if visitor
                    .socket
                    .send(tokio_tungstenite::tungstenite::Message::text(
                        frame.to_string(),
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
                if m % 4 == 3 {
                    // Drain what came back so far.
                    loop {
                        let next =
                            tokio::time::timeout(Duration::from_millis(2), visitor.next()).await;
                        match next {
                            Ok(Next::Frame(frame)) if frame["type"] == "ack" => {
                                let id = frame["client_id"].as_str().unwrap().to_string();
                                let text = sent[&id].clone();
                                acked
                                    .lock()
                                    .unwrap()
                                    .entry(visitor.token.clone())
                                    .or_default()
                                    .insert(id, text);
                            }
                            Ok(Next::Frame(_)) => {}
                            Ok(Next::Closed(_)) => return,
                            Err(_) => break,
                        }
                    }
                }
            }
            loop {
                match visitor.next().await {
                    Next::Frame(frame) if frame["type"] == "ack" => {
                        let id = frame["client_id"].as_str().unwrap().to_string();
                        let text = sent[&id].clone();
                        acked
                            .lock()
                            .unwrap()
                            .entry(visitor.token.clone())
                            .or_default()
                            .insert(id, text);
                    }
                    Next::Frame(_) => {}
                    Next::Closed(_) => return,
                }
            }
        }));
    }
    // Kill the server once a good part of the burst is acknowledged, while more is in flight.
    let counter = acked.clone();
    eventually(60, "some acknowledged messages", || {
        let counter = counter.clone();
        async move {
            counter
                .lock()
                .unwrap()
                .values()
                .map(|m| m.len())
                .sum::<usize>()
                >= 300
        }
    })
    .await;
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(|m| m.len()).sum();
    assert!(total >= 300);

    // What the kill interrupted (printed: how much recovery this run exercised).
    let store = Store::connect(&database.url, 2).await.unwrap();
    println!(
        "killed with {total} messages acknowledged, {} stored but unanswered, {} replies undelivered",
        store.unhandled_inbound().await.unwrap().len(),
        store.outbox_depth().await.unwrap()
    );
    store.close().await;

    // Restart on the same database: everything acknowledged gets exactly one reply.
    let mut restarted = start_server(&database, port);
    wait_ready(port, 60).await;
    let store = Store::connect(&database.url, 2).await.unwrap();
    let verify = async {
        eventually(
            60,
            "every stored message to be answered and delivered",
            || {
                let store = store.clone();
                async move {
                    store.unhandled_inbound().await.unwrap().is_empty()
                        && store.outbox_depth().await.unwrap() == 0
                }
            },
        )
        .await;
        for (token, visitor_id) in &tokens {
            let history = store.history("web", visitor_id, 5000).await.unwrap();
            let customer: Vec<_> = history
                .iter()
                .filter(|m| m.author == AuthorKind::Customer)
                .collect();
            let replies: Vec<_> = history
                .iter()
                .filter(|m| m.author == AuthorKind::Bot)
                .collect();
            let stored_ids: HashSet<String> = customer
                .iter()
                .map(|m| {
                    m.platform_message_id
                        .clone()
                        .unwrap()
                        .split_once(':')
                        .unwrap()
                        .1
                        .to_string()
                })
                .collect();
            for (client_id, text) in acked.get(token).cloned().unwrap_or_default() {
                assert!(
                    stored_ids.contains(&client_id),
                    "acknowledged {client_id} was lost"
                );
                let answers = replies
                    .iter()
                    .filter(|r| r.text == format!("echo: {text}"))
                    .count();
                assert_eq!(answers, 1, "{client_id} answered exactly once");
            }
            assert_eq!(customer.len(), stored_ids.len(), "no message stored twice");
            assert_eq!(
                replies.len(),
                customer.len(),
                "every stored message answered once"
            );
            // And each reply left exactly once, by the outbox's own rows: one row per reply,
            // sent (a resend after the kill would be a second attempt on the same row, and a
            // doubled reply a second row).
            for reply in &replies {
                let rows = store.outbox_state(&reply.id).await.unwrap();
                assert_eq!(rows.len(), 1, "one outbox row for reply {}", reply.id);
                assert_eq!(rows[0].0, "sent", "reply {} delivered", reply.id);
            }
            // A resumed tab sees the same, in order.
            let tab = Visitor::connect(&url, Some(token)).await;
            let seqs: Vec<i64> = tab
                .history()
                .iter()
                .map(|m| m["seq"].as_i64().unwrap())
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(seqs.len(), history.len());
        }
    };
    verify.await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}
both_backends!(sigkill_during_a_burst, killed_mid_burst_loses_nothing);
