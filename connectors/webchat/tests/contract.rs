//! The shared connector contract, run against the real web chat connector over real WebSockets,
//! plus the protocol's error handling (docs/webchat-protocol.md, "Errors and close codes").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_connector::contract::{Harness, RecordingHost, run_all};
use switchboard_connector::{
    AuthorKind, ChannelMessage, Connector, ConnectorHost, Cursor, CursorError, EventKind,
    EventWatch, HostError, InboundEvent, IngestReceipt, LiveEvent, MessageRef, OutboundMessage,
    PlatformIdentity, TypingSignal,
};
use switchboard_webchat::limits::Rate;
use switchboard_webchat::{WebchatConnector, WebchatSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = SplitSink<Ws, Message>;

/// How long any single expected frame may take.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

fn test_settings() -> WebchatSettings {
    let mut settings = WebchatSettings::new(b"test-secret-webchat-contract");
    // The suite sends dozens of messages per connection in quick succession.
    settings.visitor_rate = Rate::new(60_000, 10_000);
    settings
}

/// One listener serving the connector's routes, as the app mounts them.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

/// What the reader task passes to a waiting `customer_sends`.
#[derive(Debug)]
enum Reply {
    Ack {
        client_id: String,
    },
    Error {
        code: String,
        client_id: Option<String>,
    },
}

/// An open visitor socket: the write half, the replies to sends and the received messages.
struct ThreadConn {
    sink: Arc<tokio::sync::Mutex<WsSink>>,
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<Reply>>,
    /// Messages from the app (not customer authored), every frame counted: the suite must see
    /// a message pushed twice as twice.
    received: Arc<Mutex<Vec<(String, String)>>>,
}

pub struct WebchatHarness {
    connector: Arc<WebchatConnector>,
    server: Mutex<Option<Server>>,
    threads: Mutex<HashMap<String, Arc<ThreadConn>>>,
}

impl WebchatHarness {
    fn new() -> WebchatHarness {
        WebchatHarness::with_settings(test_settings())
    }

    fn with_settings(settings: WebchatSettings) -> WebchatHarness {
        WebchatHarness {
            connector: WebchatConnector::new("web", settings),
            server: Mutex::new(None),
            threads: Mutex::new(HashMap::new()),
        }
    }

    /// The address and shutdown token of the latest started server.
    fn current_server(&self) -> (SocketAddr, CancellationToken) {
        let server = self.server.lock().unwrap();
        let server = server.as_ref().expect("harness started");
        (server.addr, server.shutdown.clone())
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/channels/webchat/web/ws", self.current_server().0)
    }

    fn thread(&self, thread: &str) -> Arc<ThreadConn> {
        self.threads
            .lock()
            .unwrap()
            .get(thread)
            .cloned()
            .unwrap_or_else(|| panic!("no open socket for thread {thread}"))
    }
}

fn record(received: &Mutex<Vec<(String, String)>>, view: &Value) {
    if view["author"] == "customer" {
        return;
    }
    let id = view["id"].as_str().expect("message id").to_string();
    let text = view["text"].as_str().expect("message text").to_string();
    received.lock().unwrap().push((id, text));
}

/// Reads a visitor's socket until it closes (or the server it was opened on shuts down):
/// records messages and routes acks and errors to `customer_sends`.
async fn read_frames(
    mut stream: SplitStream<Ws>,
    sink: Arc<tokio::sync::Mutex<WsSink>>,
    replies: mpsc::UnboundedSender<Reply>,
    received: Arc<Mutex<Vec<(String, String)>>>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = shutdown.cancelled() => {
                // The server is gone for this thread: close the socket like a leaving visitor.
                let _ = sink.lock().await.send(Message::Close(None)).await;
                let _ = tokio::time::timeout(FRAME_TIMEOUT, async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                return;
            }
        };
        let Some(Ok(message)) = next else { return };
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).expect("server frames are JSON");
        match frame["type"].as_str() {
            Some("message") => record(&received, &frame),
            Some("ack") => {
                let client_id = frame["client_id"].as_str().unwrap_or_default().to_string();
                let _ = replies.send(Reply::Ack { client_id });
            }
            Some("error") => {
                let _ = replies.send(Reply::Error {
                    code: frame["code"].as_str().unwrap_or_default().to_string(),
                    client_id: frame["client_id"].as_str().map(str::to_string),
                });
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Harness for WebchatHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    async fn start(&self, host: Arc<dyn ConnectorHost>, shutdown: CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let routes = self
            .connector
            .clone()
            .routes(host)
            .expect("web chat has routes");
        let app = axum::Router::new().nest("/channels/webchat/web", routes);
        let signal = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
                .expect("serve web chat");
        });
        *self.server.lock().unwrap() = Some(Server { addr, shutdown });
    }

    async fn customer_sends(&self, thread: &str, platform_id: &str, text: &str) {
        let conn = self.thread(thread);
        // Hold the reply queue for the whole exchange so that concurrent sends cannot steal acks.
        let mut replies = conn.replies.lock().await;
        let frame = json!({"type": "message", "client_id": platform_id, "text": text});
        conn.sink
            .lock()
            .await
            .send(Message::text(frame.to_string()))
            .await
            .expect("send message frame");
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let reply = tokio::time::timeout_at(deadline, replies.recv())
                .await
                .unwrap_or_else(|_| panic!("no ack for {platform_id} within {FRAME_TIMEOUT:?}"))
                .unwrap_or_else(|| panic!("socket of {thread} closed before the ack"));
            match reply {
                Reply::Ack { client_id } if client_id == platform_id => return,
                Reply::Ack { .. } => continue,
                Reply::Error { code, client_id } => {
                    panic!("message {platform_id} refused with {code} (client_id {client_id:?})")
                }
            }
        }
    }

    async fn fail_next_sends(&self, _count: usize) -> bool {
        // Nothing between the connector and the visitor can refuse a delivery: a reply to a
        // visitor without an open tab is kept in history and shown on resume. Repeated sends
        // are checked by outbound_exactly_once, counted frame by frame.
        false
    }

    async fn customer_received(&self, thread: &str) -> Vec<String> {
        let conn = self.thread(thread);
        let snapshot = || conn.received.lock().unwrap().clone();
        // Frames may still be in flight: wait until nothing new arrived for a while.
        let started = Instant::now();
        let mut last = snapshot();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(250)
            && started.elapsed() < FRAME_TIMEOUT
        {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let now = snapshot();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        last.into_iter().map(|(_, text)| text).collect()
    }

    async fn open_thread(&self, _host: Arc<dyn ConnectorHost>) -> String {
        let (_, shutdown) = self.current_server();
        let mut ws = connect(&self.ws_url()).await;
        let welcome = hello(&mut ws, None).await;
        let visitor_id = welcome["visitor_id"]
            .as_str()
            .expect("welcome has visitor_id")
            .to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        for view in welcome["history"].as_array().expect("history") {
            record(&received, view);
        }
        let (sink, stream) = ws.split();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let (replies_tx, replies_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(
            stream,
            sink.clone(),
            replies_tx,
            received.clone(),
            shutdown,
        ));
        let conn = ThreadConn {
            sink,
            replies: tokio::sync::Mutex::new(replies_rx),
            received,
        };
        self.threads
            .lock()
            .unwrap()
            .insert(visitor_id.clone(), Arc::new(conn));
        visitor_id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webchat_passes_the_connector_contract() {
    let harness = WebchatHarness::new();
    run_all(&harness).await;
    // Every check cancelled its shutdown token: no visitor socket is left open.
    let deadline = Instant::now() + FRAME_TIMEOUT;
    while harness.connector.open_sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(harness.connector.open_sessions(), 0, "sockets left open");
}

// ---------------------------------------------------------------------------------------------
// Raw protocol client for the error cases.

/// A socket from a page of the server's own origin, as a browser on it would open.
async fn connect(url: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws url");
    let authority = request.uri().authority().expect("host").to_string();
    request.headers_mut().insert(
        "origin",
        format!("http://{authority}").parse().expect("origin"),
    );
    let (ws, _response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket upgrade");
    ws
}

/// A frame as the test sees it.
#[derive(Debug)]
enum Frame {
    Json(Value),
    /// The server closed, with its close code if it sent a close frame.
    Closed(Option<u16>),
}

async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        let next = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame within the timeout");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Frame::Json(serde_json::from_str(&text).expect("server frames are JSON"));
            }
            Some(Ok(Message::Close(frame))) => {
                return Frame::Closed(frame.map(|frame| u16::from(frame.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Frame::Closed(None),
        }
    }
}

async fn expect_json(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Frame::Json(value) => value,
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

async fn expect_close(ws: &mut Ws, code: u16) {
    match next_frame(ws).await {
        Frame::Closed(Some(got)) => assert_eq!(got, code, "close code"),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

async fn send_text(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).await.expect("send frame");
}

async fn send_message(ws: &mut Ws, client_id: &str, text: &str) {
    let frame = json!({"type": "message", "client_id": client_id, "text": text});
    send_text(ws, frame.to_string()).await;
}

/// Say hello and return the welcome.
async fn hello(ws: &mut Ws, token: Option<&str>) -> Value {
    send_text(ws, json!({"type": "hello", "token": token}).to_string()).await;
    let welcome = expect_json(ws).await;
    assert_eq!(welcome["type"], "welcome", "hello is answered with welcome");
    welcome
}

async fn expect_ack(ws: &mut Ws, client_id: &str) {
    let frame = expect_json(ws).await;
    assert_eq!(frame["type"], "ack", "expected an ack, got {frame}");
    assert_eq!(frame["client_id"], client_id);
}

async fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let frame = expect_json(ws).await;
    assert_eq!(frame["type"], "error", "expected an error, got {frame}");
    assert_eq!(frame["code"], code, "error code in {frame}");
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_contained() {
    let mut settings = WebchatSettings::new(b"test-secret-webchat-protocol");
    // A burst of 3, and no refill worth speaking of while the test runs.
    settings.visitor_rate = Rate::new(1, 3);
    settings.flood_close_after = 5;
    let max_frame_bytes = settings.max_frame_bytes;
    let flood_close_after = settings.flood_close_after as usize;
    let harness = WebchatHarness::with_settings(settings);
    let host = RecordingHost::new("web");
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let url = harness.ws_url();
    let mut acked = Vec::new();

    // A malformed frame gets bad_frame and the connection keeps working.
    let mut ws = connect(&url).await;
    let welcome = hello(&mut ws, None).await;
    send_text(&mut ws, "{not json".to_string()).await;
    expect_error(&mut ws, "bad_frame").await;
    send_text(&mut ws, json!({"type": "shout"}).to_string()).await;
    expect_error(&mut ws, "bad_frame").await;
    send_message(&mut ws, "after-bad", "still here").await;
    expect_ack(&mut ws, "after-bad").await;
    acked.push("still here".to_string());

    // An oversized frame closes that socket with 1009; another visitor is unaffected.
    let mut big = connect(&url).await;
    hello(&mut big, None).await;
    let mut other = connect(&url).await;
    hello(&mut other, None).await;
    let huge = "x".repeat(max_frame_bytes + 1024);
    send_message(&mut big, "too-big", &huge).await;
    expect_close(&mut big, 1009).await;
    send_message(&mut other, "other-1", "unaffected").await;
    expect_ack(&mut other, "other-1").await;
    acked.push("unaffected".to_string());

    // A forged token is refused with invalid_token, then 4001.
    let token = welcome["token"].as_str().expect("token");
    let visitor_id = welcome["visitor_id"].as_str().expect("visitor id");
    let forged = token.replace(visitor_id, "00000000-0000-7000-8000-000000000000");
    assert_ne!(forged, token);
    let mut ws_forged = connect(&url).await;
    send_text(
        &mut ws_forged,
        json!({"type": "hello", "token": forged}).to_string(),
    )
    .await;
    expect_error(&mut ws_forged, "invalid_token").await;
    expect_close(&mut ws_forged, 4001).await;
    // The genuine token still resumes the same visitor (so the refusal was about the forgery).
    let mut resumed = connect(&url).await;
    let again = hello(&mut resumed, Some(token)).await;
    assert_eq!(again["visitor_id"], visitor_id);
    assert_eq!(again["resumed"], true);

    // A first frame that is not hello closes with 4002.
    let mut no_hello = connect(&url).await;
    send_message(&mut no_hello, "early", "hi").await;
    expect_error(&mut no_hello, "hello_required").await;
    expect_close(&mut no_hello, 4002).await;

    // Flooding: rate_limited (not stored), then 1008.
    let mut flood = connect(&url).await;
    hello(&mut flood, None).await;
    let mut flood_acked = 0;
    let mut limited = Vec::new();
    let mut closed = None;
    for i in 0..50 {
        let client_id = format!("flood-{i}");
        let text = format!("flood {i}");
        send_message(&mut flood, &client_id, &text).await;
        match next_frame(&mut flood).await {
            Frame::Json(frame) if frame["type"] == "ack" => {
                assert_eq!(frame["client_id"], client_id.as_str());
                flood_acked += 1;
                acked.push(text);
            }
            Frame::Json(frame) if frame["code"] == "rate_limited" => {
                assert_eq!(frame["type"], "error");
                assert_eq!(frame["client_id"], client_id.as_str());
                limited.push(text);
            }
            Frame::Json(frame) => panic!("unexpected frame while flooding: {frame}"),
            Frame::Closed(code) => {
                closed = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        closed,
        Some(Some(1008)),
        "a flooding client is closed with 1008"
    );
    assert_eq!(flood_acked, 3, "the burst is accepted");
    assert_eq!(
        limited.len(),
        flood_close_after - 1,
        "refused messages before the close"
    );

    // Only acknowledged messages reached the host.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stored: Vec<String> = host.events().into_iter().map(|event| event.text).collect();
    assert_eq!(
        stored.len(),
        acked.len(),
        "stored events equal acked messages"
    );
    assert_eq!(stored, acked);
    for text in &limited {
        assert!(!stored.contains(text), "{text} was rate limited but stored");
    }

    // The connections that were not closed still work.
    send_message(&mut ws, "after-all", "bye").await;
    expect_ack(&mut ws, "after-all").await;
    send_message(&mut other, "other-2", "bye too").await;
    expect_ack(&mut other, "other-2").await;
    shutdown.cancel();
}

/// A host whose `history` waits until the test lets it finish.
struct SlowHistoryHost {
    inner: Arc<RecordingHost>,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl ConnectorHost for SlowHistoryHost {
    fn channel(&self) -> &str {
        self.inner.channel()
    }

    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError> {
        self.inner.ingest(event).await
    }

    async fn history(&self, thread: &str, limit: u32) -> Result<Vec<ChannelMessage>, HostError> {
        self.entered.notify_one();
        self.release.notified().await;
        self.inner.history(thread, limit).await
    }

    async fn find_message(
        &self,
        platform_message_id: &str,
    ) -> Result<Option<MessageRef>, HostError> {
        self.inner.find_message(platform_message_id).await
    }

    async fn cursor(&self, key: &str) -> Result<Option<Cursor>, HostError> {
        self.inner.cursor(key).await
    }

    async fn set_cursor(
        &self,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> Result<Cursor, CursorError> {
        self.inner.set_cursor(key, expected, value).await
    }

    fn watch(&self, thread: &str) -> EventWatch {
        self.inner.watch(thread)
    }

    fn typing(&self, signal: TypingSignal) {
        self.inner.typing(signal)
    }
}

/// A reply sent after the history was read but before the welcome reaches the tab anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_sent_while_history_loads_is_not_lost() {
    let harness = WebchatHarness::new();
    let host = Arc::new(SlowHistoryHost {
        inner: RecordingHost::new("web"),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let visitor = "0193aaaa-0000-7000-8000-000000000001";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = test_settings().signer.issue(visitor, now);

    let mut ws = connect(&harness.ws_url()).await;
    send_text(
        &mut ws,
        json!({"type": "hello", "token": token}).to_string(),
    )
    .await;
    tokio::time::timeout(FRAME_TIMEOUT, host.entered.notified())
        .await
        .expect("history requested");
    let reply = OutboundMessage {
        id: "reply-1".to_string(),
        conversation_id: "c-1".to_string(),
        channel: "web".to_string(),
        thread: visitor.to_string(),
        seq: 1,
        author: AuthorKind::Agent,
        text: "answer during resume".to_string(),
        attachments: Vec::new(),
        choices: Vec::new(),
        in_reply_to: None,
        references: Vec::new(),
        extensions: Default::default(),
        created_at_ms: 0,
    };
    harness.connector.send(&reply).await.expect("send");
    host.release.notify_one();

    let welcome = expect_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "welcome comes first");
    assert_eq!(welcome["visitor_id"], visitor);
    let message = expect_json(&mut ws).await;
    assert_eq!(message["type"], "message", "got {message}");
    assert_eq!(message["id"], "reply-1");
    assert_eq!(message["text"], "answer during resume");
    shutdown.cancel();
}

/// A tab whose live events fell behind still shows what the visitor sent from other tabs
/// meanwhile: it reads them back from the history.
///
/// On one thread, so that the burst of events below is published before the tab's task runs
/// again: its receiver lags for certain.
#[tokio::test(flavor = "current_thread")]
async fn a_lagging_tab_reads_other_tabs_messages_back() {
    let harness = WebchatHarness::new();
    let host = RecordingHost::new("web");
    let shutdown = CancellationToken::new();
    harness.start(host.clone(), shutdown.clone()).await;
    let mut tab = connect(&harness.ws_url()).await;
    let welcome = hello(&mut tab, None).await;
    let visitor = welcome["visitor_id"]
        .as_str()
        .expect("visitor id")
        .to_string();

    // Sent from another tab while this tab's live events overflowed: their own events are
    // among those it missed.
    for n in 1..=3 {
        let event = InboundEvent::text(
            "web",
            format!("{visitor}:other-{n}"),
            PlatformIdentity::new(visitor.clone(), true),
            visitor.clone(),
            format!("from the other tab {n}"),
        );
        host.ingest(event).await.expect("ingest");
    }
    for seq in 1..=200 {
        host.publish(LiveEvent {
            conversation_id: format!("c-{visitor}"),
            channel: "web".to_string(),
            thread: visitor.clone(),
            seq,
            kind: EventKind::MessageDelivered,
            actor: "outbox".to_string(),
            data: json!({}),
            created_at_ms: 0,
        });
    }

    for n in 1..=3 {
        let frame = expect_json(&mut tab).await;
        assert_eq!(frame["type"], "message", "got {frame}");
        assert_eq!(frame["author"], "customer", "got {frame}");
        assert_eq!(frame["client_id"], format!("other-{n}"), "got {frame}");
        assert_eq!(frame["text"], format!("from the other tab {n}"));
    }
    // And the tab still works.
    send_message(&mut tab, "after-lag", "still here").await;
    expect_ack(&mut tab, "after-lag").await;
    shutdown.cancel();
}
