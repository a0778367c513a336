//! A real browser: headless Chromium drives the demo page's widget (tests/browser/webchat.mjs).

use std::process::{Command, Stdio};

use crate::helpers::{Backend, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_chats_in_a_real_browser() {
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(browser_dir)
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run scripts/test (or `npm ci` in tests/browser)"
    );
    let database = TestDatabase::new(Backend::Sqlite).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .arg("--config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/switchboard.toml"
        ))
        .env("SWITCHBOARD__DATA_DIR", database.dir.path())
        .env("SWITCHBOARD__HTTP__PORT", port.to_string())
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchboard");
    let client = reqwest::Client::new();
    crate::helpers::eventually(60, "the server to be ready", || {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    let output = tokio::process::Command::new("node")
        .arg(format!("{browser_dir}/webchat.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .await
        .expect("node runs");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );

    // The conversation went to the queue with a summary of what was known.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}",
        database.dir.path().join("switchboard.db").display()
    );
    let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
    let (status, owner): (String, String) =
        sqlx::query_as("SELECT status, owner FROM conversations ORDER BY updated_at DESC LIMIT 1")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), owner.as_str()),
        ("queued", "queue:support")
    );
    let (data,): (String,) = sqlx::query_as(
        "SELECT data FROM conversation_events WHERE kind = 'owner.changed' \
             AND data LIKE '%\"change\":\"handoff\"%'",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["reason"], "customer_request", "{data}");
    assert_eq!(
        data["summary"]["last_message"], "let me talk to a human",
        "{data}"
    );
    assert_eq!(
        data["summary"]["last_passages"][0]["source"]
            .as_str()
            .map(|s| s.contains("enviaments")),
        Some(true),
        "{data}"
    );
}
