//! The channel platform: named instances from `[[channel]]` tables, supervision, per-instance
//! outbound limits, durable cursors, the live event stream and its catch-up, and a message
//! whose ingest failed half-way being answered on its redelivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard::app::AppOptions;
use switchboard::config::Settings;
use switchboard::store::CursorWrite;
use switchboard::workflow::{Actor, Scope};
use switchboard_connector::{
    ChannelFactory, Connector, ConnectorError, ConnectorHost, InstanceConfig, LiveEvent,
    OutboundMessage, SendReceipt,
};
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, eventually};

const TOKEN_A: &str = "token-for-instance-a-0123";
const TOKEN_B: &str = "token-for-instance-b-4567";

/// A backend that receives an API channel's replies: records them, and can answer 429 with
/// `Retry-After` for a while.
#[derive(Clone, Default)]
struct Peer {
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
    /// Requests answered 429 so far, and how many to answer so.
    throttled: Arc<AtomicUsize>,
    throttle: Arc<AtomicUsize>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

async fn peer_callback(State(peer): State<Peer>, body: axum::Json<Value>) -> impl IntoResponse {
    peer.attempts.lock().unwrap().push(Instant::now());
    if peer.throttled.load(Ordering::SeqCst) < peer.throttle.load(Ordering::SeqCst) {
        peer.throttled.fetch_add(1, Ordering::SeqCst);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down").into_response();
    }
    let id = format!("peer-{}", body["id"].as_str().unwrap_or_default());
    peer.received.lock().unwrap().push((Instant::now(), body.0));
    axum::Json(json!({"id": id})).into_response()
}

impl Peer {
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/replies", post(peer_callback))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/replies")
    }

    fn texts(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| body["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn api_table(name: &str, token: &str, callback: &str) -> serde_json::Map<String, Value> {
    json!({"kind": "api", "name": name, "token": token, "callback_url": callback})
        .as_object()
        .unwrap()
        .clone()
}

async fn post_message(app: &TestApp, instance: &str, token: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.http_url(&format!("/channels/api/{instance}/messages")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(id: &str, thread: &str, text: &str) -> Value {
    json!({"id": id, "thread": thread, "user": {"id": format!("user-{thread}")}, "text": text})
}

async fn two_instances(backend: Backend) {
    let (peer_a, peer_b) = (Peer::default(), Peer::default());
    let (url_a, url_b) = (peer_a.start().await, peer_b.start().await);
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.channel.0.push(api_table("api-a", TOKEN_A, &url_a));
            settings.channel.0.push(api_table("api-b", TOKEN_B, &url_b));
        },
        AppOptions::default(),
    )
    .await;
    // Each instance checks its own token.
    let (status, body) = post_message(&app, "api-a", TOKEN_B, message("m1", "t1", "hi")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post_message(&app, "api-a", TOKEN_A, json!({"id": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    // The same platform ids on both instances are two different messages.
    let (status, a) = post_message(&app, "api-a", TOKEN_A, message("m1", "t1", "to a")).await;
    assert_eq!(status, 200, "{a}");
    let (status, b) = post_message(&app, "api-b", TOKEN_B, message("m1", "t1", "to b")).await;
    assert_eq!(status, 200, "{b}");
    assert_ne!(a["conversation_id"], b["conversation_id"]);
    let (_, again) = post_message(&app, "api-a", TOKEN_A, message("m1", "t1", "to a")).await;
    assert_eq!(again["duplicate"], true);
    eventually(10, "both replies", || {
        let (a, b) = (peer_a.clone(), peer_b.clone());
        async move { !a.texts().is_empty() && !b.texts().is_empty() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Echo assistant: each reply left through the instance its conversation came in on.
    assert_eq!(peer_a.texts(), ["echo: to a"]);
    assert_eq!(peer_b.texts(), ["echo: to b"]);
    let conversation_a = app
        .store()
        .conversation(a["conversation_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(conversation_a.channel, "api-a");
    // The reply answers the platform's message, and its receipt leads back to it.
    let reply = peer_a.received.lock().unwrap()[0].1.clone();
    assert_eq!(reply["in_reply_to"], "m1");
    let reply_id = reply["id"].as_str().unwrap().to_string();
    let platform_id = format!("peer-{reply_id}");
    let store = app.store().clone();
    eventually(10, "the receipt to be recorded", || {
        let (store, platform_id) = (store.clone(), platform_id.clone());
        async move {
            store
                .find_message("api-a", &platform_id)
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    let found = app
        .store()
        .find_message("api-a", &platform_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.message_id, reply_id);
    assert_eq!(found.thread, "t1");
    assert!(
        app.store()
            .find_message("api-b", &platform_id)
            .await
            .unwrap()
            .is_none(),
        "platform ids belong to their instance"
    );
    // /readyz lists both instances running.
    let ready: Value = reqwest::get(app.http_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = ready["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api-a", "api-b", "web"]);
    assert_eq!(ready["status"], "ready", "{ready}");
}
both_backends!(two_instances_of_one_kind, two_instances);

async fn retry_after_pauses_one_instance(backend: Backend) {
    let (slow, fast) = (Peer::default(), Peer::default());
    slow.throttle.store(1, Ordering::SeqCst);
    let (url_slow, url_fast) = (slow.start().await, fast.start().await);
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings
                .channel
                .0
                .push(api_table("slow", TOKEN_A, &url_slow));
            settings
                .channel
                .0
                .push(api_table("fast", TOKEN_B, &url_fast));
        },
        AppOptions::default(),
    )
    .await;
    post_message(&app, "slow", TOKEN_A, message("s1", "t1", "first")).await;
    eventually(10, "the 429", || {
        let slow = slow.clone();
        async move { slow.throttled.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let paused_at = Instant::now();
    // During the pause: another conversation of the paused instance, and the other instance.
    post_message(&app, "slow", TOKEN_A, message("s2", "t2", "second")).await;
    post_message(&app, "fast", TOKEN_B, message("f1", "t1", "quick")).await;
    eventually(10, "the other instance's reply", || {
        let fast = fast.clone();
        async move { !fast.texts().is_empty() }
    })
    .await;
    let fast_delivered = fast.received.lock().unwrap()[0].0;
    eventually(15, "the paused instance's replies", || {
        let slow = slow.clone();
        async move { slow.texts().len() == 2 }
    })
    .await;
    let attempts = slow.attempts.lock().unwrap().clone();
    let during_pause: Vec<_> = attempts
        .iter()
        .filter(|at| **at > paused_at && at.duration_since(paused_at) < Duration::from_millis(1500))
        .collect();
    assert!(
        during_pause.is_empty(),
        "nothing was sent through the paused instance during its pause: {:?}",
        during_pause
    );
    let first_after = slow.received.lock().unwrap()[0].0;
    assert!(
        fast_delivered < first_after,
        "the other instance kept sending while this one was paused"
    );
    let mut texts = slow.texts();
    texts.sort();
    assert_eq!(texts, ["echo: first", "echo: second"]);
}
both_backends!(
    retry_after_pauses_only_its_instance,
    retry_after_pauses_one_instance
);

/// A connector whose run fails a number of times before it stays up.
struct FlakyFactory {
    runs: Arc<AtomicUsize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlakyConfig {
    fail_times: usize,
    #[serde(default)]
    misconfigured: bool,
}

struct Flaky {
    name: String,
    config: FlakyConfig,
    /// Runs of every flaky instance, and of this one.
    runs: Arc<AtomicUsize>,
    own_runs: AtomicUsize,
}

impl ChannelFactory for FlakyFactory {
    fn kind(&self) -> &'static str {
        "flaky"
    }

    fn build(&self, instance: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(Flaky {
            config: instance.parse()?,
            name: instance.name,
            runs: self.runs.clone(),
            own_runs: AtomicUsize::new(0),
        }))
    }
}

#[async_trait]
impl Connector for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        _host: Arc<dyn ConnectorHost>,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectorError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let run = self.own_runs.fetch_add(1, Ordering::SeqCst);
        if self.config.misconfigured {
            return Err(ConnectorError::Config("the token was refused".into()));
        }
        // Stay up a moment so that each state can be seen.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if run < self.config.fail_times {
            return Err(ConnectorError::retriable(format!("boom {run}")));
        }
        shutdown.cancelled().await;
        Ok(())
    }

    async fn send(&self, _message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        Ok(SendReceipt::default())
    }
}

async fn channel_state(app: &TestApp, name: &str) -> Value {
    let ready: Value = reqwest::get(app.http_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn supervised(backend: Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = TestApp::spawn_with(
        backend,
        |settings: &mut Settings| {
            settings.supervisor.restart_base_ms = 300;
            settings.channel.0.push(
                json!({"kind": "flaky", "name": "flaky-1", "fail_times": 2})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            settings.channel.0.push(
                json!({"kind": "flaky", "name": "broken", "fail_times": 0, "misconfigured": true})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
        },
        AppOptions {
            factories: vec![Arc::new(FlakyFactory { runs: runs.clone() })],
            ..AppOptions::default()
        },
    )
    .await;
    let mut seen_backing_off = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = channel_state(&app, "flaky-1").await;
        if state["state"] == "backing_off" && seen_backing_off.is_none() {
            seen_backing_off = Some(state.clone());
        }
        if state["state"] == "running" && state["restarts"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never running again: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backing_off = seen_backing_off.expect("backing off was shown");
    assert!(
        backing_off["last_error"].as_str().unwrap().contains("boom"),
        "{backing_off}"
    );
    assert!(backing_off["retry_at_ms"].as_i64().is_some());
    let broken = channel_state(&app, "broken").await;
    assert_eq!(broken["state"], "failed", "{broken}");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("token was refused")
    );
    let ready: Value = reqwest::get(app.http_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "degraded", "one instance is failed");
    let metrics = reqwest::get(app.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_channel_up{kind=\"flaky\",instance=\"flaky-1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_channel_up{kind=\"flaky\",instance=\"broken\"} 0"),
        "{metrics}"
    );
    // The misconfigured one is not retried; the flaky one ran three times.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}
both_backends!(failing_connectors_are_restarted, supervised);

async fn cursors_compare_and_set(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..25 {
                    loop {
                        let current = store.cursor("api-a", "offset").await.unwrap();
                        let value = current
                            .as_ref()
                            .map_or(0, |c| c.value.parse::<i64>().unwrap());
                        let expected = current.map(|c| c.version);
                        match store
                            .set_cursor("api-a", "offset", expected, &(value + 1).to_string())
                            .await
                            .unwrap()
                        {
                            CursorWrite::Written(_) => break,
                            CursorWrite::Conflict(_) => conflicts += 1,
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let cursor = store.cursor("api-a", "offset").await.unwrap().unwrap();
    assert_eq!(cursor.value, "200", "no increment was lost");
    assert_eq!(cursor.version, 200);
    println!("cursor: 200 increments, {conflicts} conflicts retried");
    // Cursors belong to their instance, and a stale version is refused.
    assert!(store.cursor("api-b", "offset").await.unwrap().is_none());
    assert_eq!(
        store
            .set_cursor("api-a", "offset", Some(3), "9")
            .await
            .unwrap(),
        CursorWrite::Conflict(Some(200))
    );
}
both_backends!(
    cursor_compare_and_set_loses_nothing,
    cursors_compare_and_set
);

/// Read an SSE stream until `stop` says so: (id, event, data) of each event.
async fn read_sse(
    response: reqwest::Response,
    mut stop: impl FnMut(&[(i64, String, Value)]) -> bool,
) -> Vec<(i64, String, Value)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (0, String::new(), Value::Null);
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().parse().unwrap();
                } else if let Some(value) = line.strip_prefix("event:") {
                    kind = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = serde_json::from_str(value.trim()).unwrap();
                }
            }
            if !kind.is_empty() {
                events.push((id, kind, data));
            }
            if stop(&events) {
                return events;
            }
        }
    }
    events
}

/// An API key that may follow conversations, as the console's.
async fn console_key(app: &TestApp) -> String {
    let (_, key) = app
        .app
        .workflow
        .create_api_key(
            &Actor::operator("test", Vec::new()),
            "console",
            &[Scope::ConversationsRead],
            &[],
        )
        .await
        .unwrap();
    key
}

/// How many of the conversation's stored events are deliveries.
async fn deliveries(app: &TestApp, conversation_id: &str) -> usize {
    let events = app
        .store()
        .conversation_events(conversation_id)
        .await
        .unwrap();
    events
        .iter()
        .filter(|e| e.kind.as_str() == "message.delivered")
        .count()
}

/// The conversation's stored events, once `count` deliveries are among them.
async fn events_once_delivered(
    app: &TestApp,
    conversation_id: &str,
    count: usize,
) -> Vec<LiveEvent> {
    eventually(10, "the deliveries to be recorded", || async move {
        deliveries(app, conversation_id).await == count
    })
    .await;
    app.store()
        .conversation_events(conversation_id)
        .await
        .unwrap()
}

/// The conversation's event stream through the REST API, resumed after event `after` if given
/// (as an EventSource does with `Last-Event-ID`).
async fn open_stream(
    app: &TestApp,
    key: &str,
    conversation_id: &str,
    after: Option<i64>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(app.http_url(&format!("/api/v1/conversations/{conversation_id}/stream")))
        .bearer_auth(key);
    if let Some(after) = after {
        request = request.header("Last-Event-ID", after.to_string());
    }
    request.send().await.unwrap()
}

/// A reply's delivery reaches a live subscriber when it is recorded. A follower fills a gap
/// from the log when the next event comes, so only a delivery with nothing after it shows
/// one that was stored but never published.
async fn delivery_published_live(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = console_key(&app).await;
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("0", "hello").await;
    visitor.bot_reply().await;
    let conversation_id = app.conversation_of(&visitor).await;
    let seen = events_once_delivered(&app, &conversation_id, 1).await.len() as i64;
    let stream = open_stream(&app, &key, &conversation_id, Some(seen)).await;
    visitor.send_and_ack("1", "hello again").await;
    visitor.bot_reply().await;
    let delivered = |events: &[(i64, String, Value)]| {
        events
            .iter()
            .any(|(_, kind, _)| kind == "message.delivered")
    };
    let events = tokio::time::timeout(Duration::from_secs(20), read_sse(stream, delivered))
        .await
        .unwrap_or_default();
    assert!(delivered(&events), "no live delivery event: {events:?}");
    let ids: Vec<i64> = events.iter().map(|(id, _, _)| *id).collect();
    let expected: Vec<i64> = (seen + 1..=seen + ids.len() as i64).collect();
    assert_eq!(
        ids, expected,
        "the turn's events, in order, then its delivery"
    );
}
both_backends!(a_delivery_is_published_live, delivery_published_live);

/// An open event stream ends cleanly when the server stops, rather than holding the shutdown
/// up until it is cut: the client reads the end of the response, and reconnects.
async fn stream_ends_at_shutdown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = console_key(&app).await;
    let mut visitor = app.visitor().await;
    visitor.send_and_ack("0", "hello").await;
    visitor.bot_reply().await;
    let conversation_id = app.conversation_of(&visitor).await;
    let stream = open_stream(&app, &key, &conversation_id, None).await;
    assert_eq!(stream.status(), 200);
    let TestApp { app, database } = app;
    let stopped = tokio::spawn(app.shutdown());
    let mut body = stream.bytes_stream();
    // Only a guard against hanging: a stream the shutdown does not end stays open for good.
    let end = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            chunk?;
        }
        Ok::<(), reqwest::Error>(())
    })
    .await
    .expect("the stream ends when the server stops");
    end.expect("a clean end of the response, not a cut");
    stopped.await.unwrap();
    drop(database);
}
both_backends!(a_stream_ends_at_shutdown, stream_ends_at_shutdown);

async fn subscriber_catches_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = console_key(&app).await;
    let mut visitor = app.visitor().await;
    let ack = visitor.send_and_ack("0", "hello").await;
    let conversation_id = ack["conversation_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default();
    let conversation_id = if conversation_id.is_empty() {
        app.conversation_of(&visitor).await
    } else {
        conversation_id
    };
    let client = reqwest::Client::new();
    let first = open_stream(&app, &key, &conversation_id, None).await;
    assert_eq!(first.status(), 200);
    // A burst from the customer while the subscriber reads, then it drops mid-burst.
    let burst = tokio::spawn(async move {
        for n in 1..=30 {
            visitor.send(&format!("b{n}"), &format!("burst {n}")).await;
        }
        for _ in 0..30 {
            visitor.bot_reply().await;
        }
        visitor
    });
    let before = read_sse(first, |events| events.len() >= 12).await;
    let last_seen = before.iter().map(|(id, _, _)| *id).max().unwrap();
    let mut visitor = burst.await.unwrap();
    visitor.send_and_ack("end", "the end").await;
    visitor.bot_reply().await;
    // Reconnect where it left off, as an EventSource does with Last-Event-ID.
    let stored = events_once_delivered(&app, &conversation_id, 32).await;
    let total = stored.len() as i64;
    let second = open_stream(&app, &key, &conversation_id, Some(last_seen)).await;
    let after = read_sse(second, |events| {
        events.iter().any(|(id, _, _)| *id == total)
    })
    .await;
    let mut seen: Vec<i64> = before
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| *id > 0)
        .collect();
    seen.extend(after.iter().map(|(id, _, _)| *id).filter(|id| *id > 0));
    let expected: Vec<i64> = (1..=total).collect();
    assert_eq!(seen, expected, "every event once, in order, no gap");
    let kinds: Vec<String> = before
        .iter()
        .chain(after.iter())
        .filter(|(id, _, _)| *id > 0)
        .map(|(_, kind, _)| kind.clone())
        .collect();
    let stored_kinds: Vec<String> = stored.iter().map(|e| e.kind.as_str().to_string()).collect();
    assert_eq!(kinds, stored_kinds);
    // The read-back page says the same.
    let page: Value = client
        .get(app.http_url(&format!(
            "/api/v1/conversations/{conversation_id}/events?after={last_seen}"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["last_seq"], total);
    // Without the scope, no stream.
    let (_, weak) = app
        .app
        .workflow
        .create_api_key(
            &Actor::operator("test", Vec::new()),
            "weak",
            &[Scope::TasksRead],
            &[],
        )
        .await
        .unwrap();
    let refused = open_stream(&app, &weak, &conversation_id, None).await;
    assert_eq!(refused.status(), 403);
}
both_backends!(a_subscriber_that_drops_catches_up, subscriber_catches_up);

/// Run SQL on the test database from outside the app.
async fn execute(app: &TestApp, sql: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::AnyConnection::connect(&app.database.url)
        .await
        .unwrap();
    for statement in sql.split(";;") {
        sqlx::Executor::execute(&mut connection, sqlx::AssertSqlSafe(statement.to_string()))
            .await
            .unwrap();
    }
}

async fn half_ingested_message_is_answered(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |settings| crate::helpers::set_webchat(settings, "identity_secret", "shop-secret"),
        AppOptions::default(),
    )
    .await;
    let hello = crate::helpers::signed_in_hello(&app.ws_url(), b"shop-secret", "ana@example.com");
    // Linking the customer's email fails after the message is stored.
    let (fail, heal) = match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER refuse_links BEFORE INSERT ON contact_emails \
             BEGIN SELECT RAISE(ABORT, 'links refused'); END",
            "DROP TRIGGER refuse_links",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION refuse_links() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'links refused'; END $$ LANGUAGE plpgsql;; \
             CREATE TRIGGER refuse_links BEFORE INSERT ON contact_emails \
             FOR EACH ROW EXECUTE FUNCTION refuse_links()",
            "DROP TRIGGER refuse_links ON contact_emails",
        ),
    };
    execute(&app, fail).await;
    let mut visitor = crate::helpers::Visitor::hello(&app.ws_url(), hello).await;
    visitor.send("c1", "where is my order").await;
    let refused = visitor
        .expect("the refusal", |frame| frame["type"] == "error")
        .await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["client_id"], "c1");
    execute(&app, heal).await;
    // The widget resends; the message was stored the first time, so it is a duplicate, and
    // it is answered now rather than at the next restart.
    let ack = visitor.send_and_ack("c1", "where is my order").await;
    assert_eq!(ack["duplicate"], true);
    let reply = visitor.bot_reply().await;
    assert_eq!(reply["text"], "echo: where is my order");
}
both_backends!(
    a_half_ingested_message_is_answered_on_resend,
    half_ingested_message_is_answered
);
