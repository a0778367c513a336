//! The public edge under attack: slow clients, connection floods, headers, HTTP rejections,
//! the metrics endpoint and the data directory. Each attack is refused or bounded with a code
//! a client can act on, and an honest client is answered meanwhile.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use switchboard::workflow::{Actor, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, tcp_from};

/// Read until the server closes the connection (or `limit` passes); what it sent, and whether
/// it closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let outcome = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    (
        String::from_utf8_lossy(&received).into_owned(),
        outcome.is_ok(),
    )
}

async fn metrics_text(app: &TestApp) -> String {
    reqwest::get(app.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn slow_and_many_connections_are_bounded(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.http.header_read_timeout_secs = 1;
            settings.http.max_connections_per_ip = 20;
        },
        Default::default(),
    )
    .await;
    // Half a request header, then nothing: closed once the header timeout passes.
    let mut half = tcp_from("127.0.0.2", app.app.addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // Nothing at all after connecting: the same.
    let mut silent = tcp_from("127.0.0.2", app.app.addr).await;
    // More connections from that address than it may hold: the extra ones are closed at once.
    let mut held = Vec::new();
    for _ in 0..18 {
        held.push(tcp_from("127.0.0.2", app.app.addr).await);
    }
    let mut extra = tcp_from("127.0.0.2", app.app.addr).await;
    let (_, extra_closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(
        extra_closed,
        "a connection over the per-address cap is closed"
    );

    // Meanwhile an honest visitor on another address is answered at once.
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("m1", "still there?").await;
    assert_eq!(visitor.bot_reply().await["text"], "echo: still there?");

    let (answer, half_closed) = read_until_closed(&mut half, Duration::from_secs(10)).await;
    assert!(half_closed, "a half-sent header does not hold the socket");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "closed, or told 408: {answer:?}"
    );
    let (_, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(silent_closed, "a connection that never sends is closed");
    drop(held);

    let body = metrics_text(&app).await;
    assert!(
        metric(
            &body,
            "switchboard_edge_rejections_total{reason=\"max_connections_per_ip\"}"
        ) >= 1,
        "{body}"
    );
    assert!(
        metric(
            &body,
            "switchboard_edge_rejections_total{reason=\"header_read_timeout\"}"
        ) >= 1,
        "{body}"
    );
    assert!(body.contains("switchboard_http_connections "));
}
both_backends!(slow_clients, slow_and_many_connections_are_bounded);

async fn connection_cap_holds(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.http.max_connections = 8,
        Default::default(),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tcp_from("127.0.0.3", app.app.addr).await);
    }
    // The cap is reached: a ninth is closed without an answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = tcp_from("127.0.0.4", app.app.addr).await;
    ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut ninth, Duration::from_secs(5)).await;
    assert!(
        closed && answer.is_empty(),
        "over the cap: closed, got {answer:?}"
    );
    // Once connections go away, the server serves again.
    drop(held);
    crate::helpers::eventually(10, "the server to accept again", || async {
        reqwest::get(app.http_url("/healthz"))
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    let body = metrics_text(&app).await;
    assert!(
        metric(
            &body,
            "switchboard_edge_rejections_total{reason=\"max_connections\"}"
        ) >= 1,
        "{body}"
    );
}
both_backends!(connection_cap, connection_cap_holds);

async fn security_headers_everywhere(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.http.frame_ancestors = "https://shop.example.com".into(),
        Default::default(),
    )
    .await;
    let client = reqwest::Client::new();
    for path in [
        "/healthz",
        "/metrics",
        "/api/v1/tasks",
        "/api/v1/openapi.json",
        "/widget.js",
        "/nowhere",
    ] {
        let response = client.get(app.http_url(path)).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
    // The page that hosts the chat: framed only by the configured ancestors.
    let page = client.get(app.http_url("/")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("frame-ancestors https://shop.example.com"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self' ws: wss:"), "{policy}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
}
both_backends!(security_headers, security_headers_everywhere);

async fn metrics_need_the_token(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.http.metrics_token = switchboard_connector::Secret::new("scrape-me"),
        Default::default(),
    )
    .await;
    let client = reqwest::Client::new();
    let anonymous = client.get(app.http_url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = client
        .get(app.http_url("/metrics"))
        .bearer_auth("scrape-you")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let scraper = client
        .get(app.http_url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(scraper.status(), 200);
    assert!(
        scraper
            .text()
            .await
            .unwrap()
            .contains("switchboard_outbox_depth")
    );
}
both_backends!(metrics_token, metrics_need_the_token);

async fn metrics_on_their_own_address(backend: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(
        backend,
        |settings| settings.http.metrics_address = format!("127.0.0.1:{port}"),
        Default::default(),
    )
    .await;
    let public = reqwest::get(app.http_url("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "not on the public address");
    let private = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    assert!(
        private
            .text()
            .await
            .unwrap()
            .contains("switchboard_outbox_depth")
    );
}
both_backends!(metrics_address, metrics_on_their_own_address);

async fn api_key(app: &TestApp) -> String {
    app.app
        .workflow
        .create_api_key(
            &Actor::operator("test", Vec::new()),
            "edge test",
            &[Scope::TasksRead, Scope::TasksWrite],
            &[],
        )
        .await
        .unwrap()
        .1
}

async fn error_code(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: {content_type}"
    );
    let body: Value = response.json().await.unwrap();
    (status, body)
}

async fn http_rejections_are_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = api_key(&app).await;
    let client = reqwest::Client::new();

    let get = |path: &str| client.get(app.http_url(path)).bearer_auth(&key).send();

    // A duplicated query parameter.
    let response = get("/api/v1/tasks?status=open&status=done").await.unwrap();
    let (status, body) = error_code(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");

    // A parameter of the wrong type is named, in the API's words.
    let response = get("/api/v1/conversations/x/events?after=abc")
        .await
        .unwrap();
    let (status, body) = error_code(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(body["error"]["field"], "after", "{body}");
    assert_eq!(
        body["error"]["message"], "invalid digit found in string",
        "{body}"
    );

    // A JSON body sent as text/plain (what a cross-site form can send without a preflight).
    let task = serde_json::json!({"type": "callback", "contact_id": "x", "payload": {}});
    let response = client
        .post(app.http_url("/api/v1/tasks"))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body(task.to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = error_code(response).await;
    assert_eq!(status, 415);
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    // A method the route does not have.
    let response = client
        .delete(app.http_url("/api/v1/tasks"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    let (status, body) = error_code(response).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");

    // A body over the size limit: refused once the limit is passed, without reading the rest.
    let raw = tcp_from("127.0.0.1", app.app.addr).await;
    let (mut reader, mut writer) = raw.into_split();
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 3000000\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..46 {
            writer.write_all(&chunk).await?;
        }
        std::io::Result::Ok(writer)
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut answer)).await;
    sender.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    assert!(
        answer.contains("\"code\":\"payload_too_large\""),
        "{answer}"
    );

    // A path that does not exist.
    let response = client
        .get(app.http_url("/api/v1/nothing-here"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (status, body) = error_code(response).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    // The honest call still works, with JSON.
    let response = client
        .get(app.http_url("/api/v1/tasks"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
both_backends!(http_rejections, http_rejections_are_json);

async fn api_keys_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.http.api_rate_per_minute = 1;
            settings.http.api_rate_burst = 5;
        },
        Default::default(),
    )
    .await;
    let greedy = api_key(&app).await;
    let honest = api_key(&app).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..20 {
        let response = client
            .get(app.http_url("/api/v1/tasks"))
            .bearer_auth(&greedy)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        5,
        "{statuses:?}"
    );
    let limited = limited.expect("the greedy key is limited");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (_, body) = error_code(limited).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another key is answered at once.
    let response = client
        .get(app.http_url("/api/v1/tasks"))
        .bearer_auth(&honest)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
both_backends!(api_rate_limits, api_keys_are_rate_limited);

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let start = || {
        let mut settings = switchboard::config::Settings {
            data_dir: data_dir.clone(),
            ..Default::default()
        };
        settings.http.port = 0;
        settings.assistant.kind = "echo".into();
        switchboard::app::App::start(settings, Default::default())
    };
    let app = start().await.unwrap();
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("webchat-web.secret")), 0o600);
    assert_eq!(mode(&data_dir.join("switchboard.db")), 0o600);
    app.shutdown().await;

    // A secret left readable by others (an older version, a careless copy) is tightened.
    let secret = data_dir.join("webchat-web.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = start().await.unwrap();
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(&data_dir), 0o700);
    app.shutdown().await;
}

/// The commands that write to the database before any `serve` (an operator creating the first
/// user, say) create the data directory and the database owner-only too: the database holds
/// the password and key hashes.
#[cfg(unix)]
#[test]
fn the_command_line_creates_the_data_directory_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg("/nonexistent/switchboard.toml")
        .args([
            "user",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "Ops",
        ])
        .args([
            "--role",
            "admin",
            "--password-env",
            "SWITCHBOARD_TEST_PASSWORD",
        ])
        .env("SWITCHBOARD_TEST_PASSWORD", "a long enough password")
        .env("SWITCHBOARD__DATA_DIR", &data_dir)
        .env("SWITCHBOARD__LOG__LEVEL", "warn")
        .output()
        .expect("the switchboard binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(
        files.iter().any(|path| path.ends_with("switchboard.db")),
        "{files:?}"
    );
    for file in files {
        assert_eq!(mode(&file) & 0o077, 0, "{}", file.display());
    }
}
