//! The command line: operators list, show and move tasks and manage API keys.

use super::support::{refund, shop, system_frame};
use crate::both_backends;
use crate::helpers::Backend;
use axum::http::StatusCode;
use switchboard::workflow::{Actor, TaskStatus};

async fn operators_use_the_cli(backend: Backend) {
    let shop = shop(backend, |_| {}).await;
    let (mut visitor, context) = shop.customer("ana@example.com").await;
    let task = shop
        .app
        .app
        .workflow
        .open_task(context, refund("1043", 9_000), None)
        .await
        .unwrap()
        .task;
    assert_eq!(task.status, TaskStatus::AwaitingApproval);
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg("/nonexistent/switchboard.toml")
            .args(args)
            .env("SWITCHBOARD__DATABASE__URL", &shop.app.database.url)
            .env("SWITCHBOARD__DATA_DIR", shop.app.database.dir.path())
            .env("SWITCHBOARD__LOG__LEVEL", "warn")
            .output()
            .expect("the switchboard binary runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, key, stderr) = cli(&["apikey", "create", "--name", "ops", "--scope", "tasks:read"]);
    assert!(ok, "{stderr}");
    let key = key.trim().to_string();
    assert!(key.starts_with("sbk_"));
    let (ok, _, stderr) = cli(&["apikey", "create", "--name", "typo", "--scope", "task:read"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown scope \"task:read\" (tasks:read, tasks:write, tasks:approve, conversations:read, admin)"),
        "every scope there is: {stderr}"
    );
    let (status, page) = shop.get(&key, "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::OK, "{page}");

    let (ok, listed, stderr) = cli(&["tasks", "list", "--status", "awaiting_approval"]);
    assert!(ok, "{stderr}");
    assert!(listed.contains(&task.id), "{listed}");
    let (ok, shown, stderr) = cli(&["tasks", "show", &task.id]);
    assert!(ok, "{stderr}");
    assert!(shown.contains("awaiting_approval by policy"), "{shown}");
    // Without the finance role the CLI is refused like anyone else.
    let (ok, _, stderr) = cli(&["tasks", "approve", &task.id, "--as", "maria"]);
    assert!(!ok);
    assert!(stderr.contains("finance role"), "{stderr}");
    let (ok, approved, stderr) = cli(&[
        "tasks", "approve", &task.id, "--as", "maria", "--role", "finance", "--reason", "ok",
    ]);
    assert!(ok, "{stderr}");
    assert!(approved.contains("approved"));
    // The running server's outbox worker delivers the notice the CLI queued.
    system_frame(&mut visitor, "has been approved").await;
    let (ok, _, stderr) = cli(&["tasks", "reject", &task.id, "--role", "finance"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot go from approved to rejected"),
        "{stderr}"
    );
    let (_, events) = shop
        .get(&key, &format!("/api/v1/tasks/{}/events", task.id))
        .await;
    assert_eq!(events["data"][2]["actor"], "operator:maria");

    // Keys are listed without their secrets and can be revoked.
    let (ok, spare, stderr) = cli(&["apikey", "create", "--name", "spare", "--scope", "admin"]);
    assert!(ok, "{stderr}");
    let spare = spare.trim().to_string();
    let spare_id = stderr
        .split_whitespace()
        .skip_while(|word| *word != "key")
        .nth(1)
        .expect("the new key's id")
        .to_string();
    let (ok, listed, stderr) = cli(&["apikey", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains(&spare_id) && listed.contains("spare"),
        "{listed}"
    );
    assert!(!listed.contains("sbk_"), "{listed}");
    let (ok, _, stderr) = cli(&["apikey", "revoke", &spare_id]);
    assert!(ok, "{stderr}");
    let (status, body) = shop.get(&spare, "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (ok, listed, _) = cli(&["apikey", "list"]);
    assert!(ok && listed.contains("revoked"), "{listed}");
    let (ok, _, stderr) = cli(&["apikey", "revoke", &spare_id]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    // Revoked on this server: refused at once, though the key was just used.
    let (_, listed, _) = cli(&["apikey", "list"]);
    let ops_id = listed
        .lines()
        .find(|line| line.contains(" ops "))
        .and_then(|line| line.split_whitespace().next())
        .expect("the ops key is listed")
        .to_string();
    shop.app
        .app
        .workflow
        .revoke_api_key(&Actor::operator("test", Vec::new()), &ops_id)
        .await
        .unwrap();
    let (status, _) = shop.get(&key, "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
both_backends!(workflow_operator_cli, operators_use_the_cli);
