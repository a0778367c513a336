//! A real browser: headless Chromium drives the demo page's widget (tests/browser/webchat.mjs).

use std::process::{Command, Stdio};

use crate::helpers::{Backend, TestDatabase};

/// The server process, killed when the test ends, even by a failed assertion.
struct Server(std::process::Child);

impl Server {
    /// A server that exited answers nothing: whatever said it was ready on `port` was another
    /// process that took the port first (it was free when the test chose it).
    fn still_running(&mut self, port: u16) {
        if let Some(status) = self.0.try_wait().expect("server status") {
            panic!(
                "the server exited ({status}) although port {port} answered: taken by another process?"
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
        // Demo mode, as scripts/demo runs it: the demo page is signed in as the demo customer.
        .env("SWITCHBOARD__DEMO", "true")
        .stdout(Stdio::null())
        .spawn()
        .map(Server)
        .expect("start switchboard");
    crate::helpers::wait_ready(port, 240).await;
    server.still_running(port);
    let output = tokio::process::Command::new("node")
        .arg(format!("{browser_dir}/webchat.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .await
        .expect("node runs");
    drop(server);
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

/// Run `switchboard` with the demo config on the database in `dir` (a command line, or the
/// server).
fn switchboard(dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("--config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/switchboard.toml"
        ))
        .env("SWITCHBOARD__DATA_DIR", dir)
        .env("SWITCHBOARD__HTTP__PORT", port.to_string())
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        // The demo page signs its visitor in as the demo customer (whose refund finance approves).
        .env("SWITCHBOARD__DEMO", "true");
    command
}

/// The agent console in headless Chromium (tests/browser/console.mjs): a handoff claimed,
/// answered live and handed back; a takeover; a refund approved by finance in the tasks view;
/// access control; out-of-hours notice; reports with charts. Screenshots of the key screens
/// are saved under the test's target temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
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
    let password = "demo-console-password";
    for (email, role, roles, teams) in [
        ("agent@demo.test", "agent", "", "support"),
        ("finance@demo.test", "backoffice", "finance", ""),
        ("admin@demo.test", "admin", "", ""),
    ] {
        let status = switchboard(database.dir.path(), port)
            .args([
                "user",
                "create",
                "--email",
                email,
                "--name",
                email.split('@').next().unwrap(),
            ])
            .args(["--role", role, "--roles", roles, "--teams", teams])
            .args(["--password-env", "CONSOLE_PASSWORD"])
            .env("CONSOLE_PASSWORD", password)
            .status()
            .expect("switchboard user create runs");
        assert!(status.success(), "user create {email}");
    }
    let mut server = switchboard(database.dir.path(), port)
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .map(Server)
        .expect("start switchboard");
    crate::helpers::wait_ready(port, 240).await;
    server.still_running(port);
    let screenshots = concat!(env!("CARGO_TARGET_TMPDIR"), "/console-screenshots");
    let output = tokio::process::Command::new("node")
        .arg(format!("{browser_dir}/console.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .env("CONSOLE_PASSWORD", password)
        .env("SCREENSHOT_DIR", screenshots)
        .output()
        .await
        .expect("node runs");
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\nscreenshots in {screenshots}");
    assert!(
        output.status.success(),
        "console browser test failed:\n{stdout}\n{stderr}"
    );
}

/// LLM mode in headless Chromium (tests/browser/llm.mjs): the served binary in LLM mode against
/// a model server that streams its answer slowly; the widget shows it as it is written, then
/// the stored reply replaces the draft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_answer_streams_into_the_widget() {
    use crate::llm::fake::{Answer, FakeLlm};
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let mut answer = Answer::streamed_text(&[
        "You have 30 days ",
        "from delivery ",
        "to send ",
        "an item back [1].",
    ]);
    if let Answer::Stream { gap, .. } = &mut answer {
        *gap = std::time::Duration::from_millis(300);
    }
    let fake = FakeLlm::start(vec![answer]).await;
    let database = TestDatabase::new(Backend::Sqlite).await;
    let port = crate::helpers::free_port();
    let mut server = switchboard(database.dir.path(), port)
        .arg("serve")
        .env("SWITCHBOARD__ASSISTANT__KIND", "llm")
        .env("SWITCHBOARD__LLM__BASE_URL", fake.base_url())
        .env("SWITCHBOARD__LLM__MODEL", "fake-model")
        .env(
            "SWITCHBOARD__LLM__PROMPTS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
        )
        .stdout(Stdio::null())
        .spawn()
        .map(Server)
        .expect("start switchboard");
    crate::helpers::wait_ready(port, 240).await;
    server.still_running(port);
    let output = tokio::process::Command::new("node")
        .arg(format!("{browser_dir}/llm.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("how long do I have to return something?")
        .arg("You have 30 days from delivery to send an item back [1].")
        .output()
        .await
        .expect("node runs");
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "LLM browser test failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(fake.received().len(), 1, "one model request, streamed");
    assert_eq!(fake.received()[0].body["stream"], true);
}
