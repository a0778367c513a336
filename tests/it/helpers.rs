//! Test scaffolding: the real app on port 0 with a fresh database per test, on SQLite or
//! PostgreSQL, and a web chat visitor speaking the real WebSocket protocol.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::app::{App, AppOptions};
use switchboard::assistant::Assistant;
use switchboard::config::Settings;
use switchboard::store::Store;
use switchboard_connector::{Connector, EventKind, LiveEvent};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into())
}

/// A fresh database for one test: a SQLite file in a temporary directory, or a new
/// PostgreSQL database. Kept alive as long as the value lives.
pub struct TestDatabase {
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => {
                format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display())
            }
            Backend::Postgres => {
                use sqlx::Connection;
                sqlx::any::install_default_drivers();
                let admin = postgres_admin_url();
                let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
                let mut connection =
                    sqlx::AnyConnection::connect(&admin)
                        .await
                        .unwrap_or_else(|error| {
                            panic!("PostgreSQL must be reachable at {admin} for the tests: {error}")
                        });
                sqlx::Executor::execute(
                    &mut connection,
                    sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
                )
                .await
                .expect("create test database");
                let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
                let server = base
                    .rsplit_once('/')
                    .map(|(server, _)| server)
                    .unwrap_or(base);
                if query.is_empty() {
                    format!("{server}/{name}")
                } else {
                    format!("{server}/{name}?{query}")
                }
            }
        };
        TestDatabase { url, dir }
    }
}

/// The `hello` of a customer signed in to a shop whose identity secret is `secret`, as the
/// shop's page on the server's own origin sends it: a ten-minute identity token.
pub fn signed_in_hello(ws_url: &str, secret: &[u8], email: &str) -> Value {
    let identity_token = switchboard_webchat::session::IdentityVerifier::new(secret).issue_token(
        email,
        &same_origin(ws_url),
        chrono::Utc::now().timestamp() + 600,
    );
    serde_json::json!({"type": "hello", "token": null, "identity_token": identity_token})
}

/// A web chat setting of the `web` instance, as a `[[channel]]` key would set it.
pub fn set_webchat(settings: &mut Settings, key: &str, value: impl Into<Value>) {
    settings
        .channel
        .table_mut("web")
        .expect("web chat runs as `web`")
        .insert(key.to_string(), value.into());
}

pub fn settings(database: &TestDatabase) -> Settings {
    let mut settings = Settings {
        data_dir: database.dir.path().to_path_buf(),
        ..Settings::default()
    };
    settings.database.url = database.url.clone();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.outbox.poll_interval_ms = 50;
    settings.outbox.backoff_base_ms = 20;
    settings.outbox.backoff_max_ms = 200;
    settings.supervisor.restart_base_ms = 50;
    settings.supervisor.restart_max_ms = 400;
    let web = settings
        .channel
        .table_mut("web")
        .expect("web chat runs as `web`");
    web.insert(
        "session_secret".into(),
        "test-secret-0123456789abcdef0123456789".into(),
    );
    web.insert("rate_per_minute".into(), 6000.into());
    web.insert("rate_burst".into(), 500.into());
    // Every test client comes from 127.0.0.1: the per-address limits have their own tests.
    web.insert("ip_rate_per_minute".into(), 60_000.into());
    web.insert("ip_rate_burst".into(), 5000.into());
    web.insert("ip_sessions_per_minute".into(), 60_000.into());
    web.insert("ip_sessions_burst".into(), 5000.into());
    settings
}

pub struct TestApp {
    pub app: App,
    pub database: TestDatabase,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}, AppOptions::default()).await
    }

    pub async fn spawn_with(
        backend: Backend,
        configure: impl FnOnce(&mut Settings),
        options: AppOptions,
    ) -> TestApp {
        let database = TestDatabase::new(backend).await;
        let mut settings = settings(&database);
        configure(&mut settings);
        let app = App::start(settings, options).await.expect("app starts");
        TestApp { app, database }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/channels/webchat/web/ws", self.app.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.addr)
    }

    pub fn store(&self) -> &Store {
        &self.app.store
    }

    pub async fn visitor(&self) -> Visitor {
        Visitor::connect(&self.ws_url(), None).await
    }

    /// The id of the web chat visitor's latest conversation.
    pub async fn conversation_of(&self, visitor: &Visitor) -> String {
        self.store()
            .history("web", &visitor.visitor_id, 1)
            .await
            .unwrap()
            .first()
            .map(|message| message.conversation_id.clone())
            .expect("the visitor has a conversation")
    }
}

pub fn options_with(
    assistant: Option<Arc<dyn Assistant>>,
    connectors: Vec<Arc<dyn Connector>>,
) -> AppOptions {
    AppOptions {
        assistant,
        connectors,
        ..AppOptions::default()
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser tab speaking the web chat protocol.
pub struct Visitor {
    pub socket: Socket,
    pub token: String,
    pub visitor_id: String,
    pub welcome: Value,
    /// Frames read while waiting for something else.
    pub backlog: std::collections::VecDeque<Value>,
}

pub enum Next {
    Frame(Value),
    Closed(Option<u16>),
}

impl Visitor {
    pub async fn connect(url: &str, token: Option<&str>) -> Visitor {
        Visitor::hello(url, json!({"type": "hello", "token": token})).await
    }

    /// Connect with a `hello` frame of one's own. Frames before the welcome (an error about
    /// the identity) wait in the backlog.
    pub async fn hello(url: &str, hello: Value) -> Visitor {
        let socket = open_socket(url, Some(&same_origin(url))).await;
        Visitor::greet(socket, hello).await
    }

    /// Say `hello` on a socket opened by the caller; the welcome must follow.
    pub async fn greet(mut socket: Socket, hello: Value) -> Visitor {
        socket
            .send(Message::text(hello.to_string()))
            .await
            .expect("send hello");
        let mut backlog = std::collections::VecDeque::new();
        let welcome = loop {
            match read_frame(&mut socket).await {
                Next::Frame(frame) if frame["type"] == "welcome" => break frame,
                Next::Frame(frame) if frame["type"] == "error" => backlog.push_back(frame),
                Next::Frame(frame) => panic!("first frame is welcome: {frame}"),
                Next::Closed(code) => panic!("closed ({code:?}) before welcome"),
            }
        };
        Visitor {
            socket,
            token: welcome["token"].as_str().expect("token").to_string(),
            visitor_id: welcome["visitor_id"]
                .as_str()
                .expect("visitor id")
                .to_string(),
            welcome,
            backlog,
        }
    }

    pub fn history(&self) -> Vec<Value> {
        self.welcome["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn send_raw(&mut self, frame: Message) {
        self.socket.send(frame).await.expect("send frame");
    }

    pub async fn send(&mut self, client_id: &str, text: &str) {
        let frame = json!({"type": "message", "client_id": client_id, "text": text});
        self.send_raw(Message::text(frame.to_string())).await;
    }

    pub async fn next(&mut self) -> Next {
        if let Some(frame) = self.backlog.pop_front() {
            return Next::Frame(frame);
        }
        read_frame(&mut self.socket).await
    }

    /// The next frame matching `wanted`; others are kept for later.
    pub async fn expect(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(index) = self.backlog.iter().position(&wanted) {
            return self.backlog.remove(index).expect("index valid");
        }
        loop {
            match next_frame(&mut self.socket).await {
                Some(Next::Frame(frame)) if wanted(&frame) => return frame,
                Some(Next::Frame(frame)) => self.backlog.push_back(frame),
                Some(Next::Closed(code)) => panic!("closed ({code:?}) while waiting for {what}"),
                None => {
                    // What came instead says more than the timeout.
                    let seen: Vec<String> = self
                        .backlog
                        .iter()
                        .filter(|frame| frame["type"] == "message")
                        .map(|frame| format!("{}: {}", frame["author"], frame["text"]))
                        .collect();
                    panic!("no frame for {what} within 20 s; messages meanwhile: {seen:#?}");
                }
            }
        }
    }

    pub async fn send_and_ack(&mut self, client_id: &str, text: &str) -> Value {
        self.send(client_id, text).await;
        let id = client_id.to_string();
        self.expect("ack", move |frame| {
            frame["type"] == "ack" && frame["client_id"] == id.as_str()
        })
        .await
    }

    pub async fn bot_reply(&mut self) -> Value {
        self.expect("bot message", |frame| {
            frame["type"] == "message" && frame["author"] == "bot"
        })
        .await
    }

    /// Read until the server closes; the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Next::Closed(code) = read_frame(&mut self.socket).await {
                return code;
            }
        }
    }
}

/// The origin of the server's own pages, as a browser on the demo page would send it.
pub fn same_origin(ws_url: &str) -> String {
    let authority = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("a host");
    format!("http://{authority}")
}

/// A WebSocket with the given `Origin` header (none: like a script, not a browser).
pub async fn open_socket(url: &str, origin: Option<&str>) -> Socket {
    let origin = origin.map(|origin| ("origin", origin));
    open_socket_with(url, origin.as_slice()).await
}

/// A WebSocket to `url` whose upgrade request carries `headers`.
pub async fn open_socket_with(url: &str, headers: &[(&'static str, &str)]) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws url");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("ws connect");
    socket
}

/// A TCP connection to `server` from the loopback address `source` (127.0.0.2 is another
/// client as far as the server can tell).
pub async fn tcp_from(source: &str, server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
    socket
        .bind(format!("{source}:0").parse().expect("source address"))
        .expect("bind the source address");
    socket.connect(server).await.expect("tcp connect")
}

/// A WebSocket to the web chat from the loopback address `source`, with `Origin` as given.
pub async fn socket_from(source: &str, app: &TestApp, origin: Option<&str>) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url().into_client_request().expect("ws url");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("origin header"));
    }
    let tcp = tcp_from(source, app.app.addr).await;
    let (socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("ws handshake");
    socket
}

pub async fn read_frame(socket: &mut Socket) -> Next {
    next_frame(socket).await.expect("a frame within 20 s")
}

/// The next frame, or `None` after 20 s without one.
pub async fn next_frame(socket: &mut Socket) -> Option<Next> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .ok()?;
        return Some(match frame {
            Some(Ok(Message::Text(text))) => {
                Next::Frame(serde_json::from_str(&text).expect("server frames are JSON"))
            }
            Some(Ok(Message::Close(frame))) => {
                Next::Closed(frame.map(|frame| u16::from(frame.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => Next::Closed(None),
        });
    }
}

/// Poll `check` until it holds or `seconds` pass.
/// A conversation's handoff: its `owner.changed` event whose change is `handoff`.
pub async fn handoff_event(store: &Store, conversation_id: &str) -> LiveEvent {
    store
        .conversation_events(conversation_id)
        .await
        .unwrap()
        .into_iter()
        .find(|event| event.kind == EventKind::OwnerChanged && event.data["change"] == "handoff")
        .expect("a handoff event")
}

pub async fn eventually<F, Fut>(seconds: u64, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {seconds} s waiting for {what}");
}

/// A free port below the kernel's ephemeral range, for an app that must come back on the same
/// port after a kill (a webhook URL or reconnecting clients name it). An ephemeral port is not safe there: while the app is
/// down, another test's `bind(0)` can take it, and the peer's retried webhook connections to
/// it can be given it as their own source port and connect to themselves, and either way the
/// restarted app finds it in use.
pub fn free_port() -> u16 {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = ephemeral_from.clamp(12_000, 32_768);
    for _ in 0..1000 {
        let port = rand::random_range(10_000..below);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Wait until a server on `port` answers `/readyz` with 200 (at most `seconds`).
pub async fn wait_ready(port: u16, seconds: u64) {
    let client = reqwest::Client::new();
    eventually(seconds, "the server to be ready", || {
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
}

/// Run a test body against both stores: `both_backends!(name, body)` makes `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body($crate::helpers::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$body($crate::helpers::Backend::Postgres).await;
            }
        }
    };
}
