//! Web chat: a WebSocket endpoint and the embeddable widget that talks to it.
//!
//! A browser opens `/channels/webchat/<name>/ws`, says `hello` with its session token (or
//! none), and gets its visitor's history back. Every visitor message is stored through the
//! [`ConnectorHost`] before it is acknowledged; replies come back through [`Connector::send`],
//! which pushes them to every open tab of the visitor, once per message id. A visitor with no
//! open tab gets them from history on the next visit, so sending never fails for lack of a
//! live socket. A visitor's other tabs learn of a message sent from one tab through the
//! conversation's live events.
//!
//! The wire protocol is documented in `docs/webchat-protocol.md`.

mod factory;
pub mod protocol;
pub mod session;

pub use factory::{WebchatConfig, WebchatFactory};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dashmap::DashMap;
use switchboard_connector::{
    AuthorKind, Connector, ConnectorError, ConnectorHost, EventKind, HostError, InboundEvent,
    LiveEvent, OutboundMessage, PlatformIdentity, SendReceipt, TypingSignal,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ClientFrame, MessageView, ServerFrame, close};
use crate::session::{IdentityVerifier, SessionSigner};

pub const KIND: &str = "webchat";

/// Frames above this are dropped by the WebSocket layer itself.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

pub const WIDGET_JS: &str = include_str!("../assets/widget.js");
pub const WIDGET_CSS: &str = include_str!("../assets/widget.css");
pub const DEMO_HTML: &str = include_str!("../assets/demo.html");

/// Tunables of the web chat channel (`[webchat]` in the config file).
#[derive(Debug, Clone)]
pub struct WebchatSettings {
    pub signer: SessionSigner,
    /// Largest accepted text frame; a larger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    pub max_text_chars: usize,
    /// Sustained messages per minute per connection, and the burst allowed above it.
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    /// Consecutive refused messages after which a flooding client is disconnected.
    pub flood_close_after: u32,
    pub history_limit: u32,
    pub hello_timeout: Duration,
    /// Checks the signed-in customers that embedding pages vouch for; `None` refuses them.
    pub identities: Option<IdentityVerifier>,
    /// The demo page is signed in as this customer.
    pub demo_email: Option<String>,
}

impl WebchatSettings {
    pub fn new(secret: &[u8]) -> WebchatSettings {
        WebchatSettings {
            signer: SessionSigner::new(secret, 90 * 24 * 3600),
            max_frame_bytes: 16 * 1024,
            max_text_chars: 4000,
            rate_per_minute: 120,
            rate_burst: 20,
            flood_close_after: 50,
            history_limit: 100,
            hello_timeout: Duration::from_secs(10),
            identities: None,
            demo_email: None,
        }
    }
}

type Outbox = mpsc::Sender<ServerFrame>;

struct Tab {
    id: u64,
    frames: Outbox,
}

/// A visitor's open tabs, and the ids of the messages pushed to them lately: a message sent
/// again (the outbox retrying after a crash) is not pushed twice.
#[derive(Default)]
struct VisitorTabs {
    tabs: Vec<Tab>,
    recent: std::collections::VecDeque<String>,
}

/// Message ids remembered per visitor for [`VisitorTabs::recent`].
const RECENT_IDS: usize = 32;

/// The web chat connector: keeps the open tabs of each visitor.
pub struct WebchatConnector {
    name: String,
    settings: WebchatSettings,
    tabs: DashMap<String, VisitorTabs>,
    next_tab: AtomicU64,
    shutdown: CancellationToken,
}

impl WebchatConnector {
    pub fn new(name: &str, settings: WebchatSettings) -> Arc<WebchatConnector> {
        Arc::new(WebchatConnector {
            name: name.to_string(),
            settings,
            tabs: DashMap::new(),
            next_tab: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        })
    }

    /// Number of open WebSocket sessions.
    pub fn open_sessions(&self) -> usize {
        self.tabs.iter().map(|entry| entry.value().tabs.len()).sum()
    }

    /// The demo shop's page with the widget of this instance; signed in as the demo customer
    /// when `demo_email` is set.
    pub fn demo_page(&self) -> String {
        let page = DEMO_HTML.replace(
            "data-open=\"true\"",
            &format!(
                "data-open=\"true\" data-channel=\"{}\"",
                escape_html(&self.name)
            ),
        );
        let (Some(email), Some(identities)) =
            (&self.settings.demo_email, &self.settings.identities)
        else {
            return page;
        };
        let signature = identities.sign(email);
        let email = escape_html(email);
        page.replace(
            "data-open=\"true\"",
            &format!(
                "data-open=\"true\" data-user-email=\"{email}\" data-user-signature=\"{signature}\""
            ),
        )
        .replace(
            "<!-- signed-in -->",
            &format!("<p class=\"signed-in\">Signed in to the demo shop as <strong>{email}</strong>: ask about your orders (1042 to 1045), a refund or a cancellation.</p>"),
        )
    }

    /// Close every socket with 1001 so that clients reconnect elsewhere or later.
    pub fn close_all(&self) {
        self.shutdown.cancel();
    }

    fn register(&self, visitor_id: &str, frames: Outbox) -> u64 {
        let id = self.next_tab.fetch_add(1, Ordering::Relaxed);
        self.tabs
            .entry(visitor_id.to_string())
            .or_default()
            .tabs
            .push(Tab { id, frames });
        id
    }

    fn unregister(&self, visitor_id: &str, tab_id: u64) {
        self.tabs.remove_if_mut(visitor_id, |_, visitor| {
            visitor.tabs.retain(|tab| tab.id != tab_id);
            visitor.tabs.is_empty()
        });
    }

    /// Push a message to the visitor's tabs unless it was pushed already.
    fn push_once(&self, visitor_id: &str, message_id: &str, frame: &ServerFrame) {
        {
            let Some(mut visitor) = self.tabs.get_mut(visitor_id) else {
                return;
            };
            if visitor.recent.iter().any(|seen| seen == message_id) {
                return;
            }
            if visitor.recent.len() >= RECENT_IDS {
                visitor.recent.pop_front();
            }
            visitor.recent.push_back(message_id.to_string());
        }
        self.push(visitor_id, frame, None);
    }

    /// Push a frame to the visitor's tabs, except `skip_tab`. A tab too slow to keep up is
    /// dropped from the set: its socket closes and the widget resumes from history.
    fn push(&self, visitor_id: &str, frame: &ServerFrame, skip_tab: Option<u64>) -> usize {
        let Some(mut visitor) = self.tabs.get_mut(visitor_id) else {
            return 0;
        };
        let mut delivered = 0;
        visitor.tabs.retain(|tab| {
            if Some(tab.id) == skip_tab {
                return true;
            }
            match tab.frames.try_send(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        visitor = visitor_id,
                        tab = tab.id,
                        "slow web chat tab dropped"
                    );
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        delivered
    }
}

#[async_trait]
impl Connector for WebchatConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn routes(self: Arc<Self>, host: Arc<dyn ConnectorHost>) -> Option<Router> {
        let state = SocketState {
            connector: self,
            host,
        };
        Some(Router::new().route("/ws", get(upgrade)).with_state(state))
    }

    async fn run(
        &self,
        _host: Arc<dyn ConnectorHost>,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectorError> {
        shutdown.cancelled().await;
        self.close_all();
        Ok(())
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        let frame = ServerFrame::Message(MessageView {
            id: message.id.clone(),
            seq: message.seq,
            author: message.author,
            text: message.text.clone(),
            created_at: protocol::format_time(message.created_at_ms),
            client_id: None,
            choices: message.choices.clone(),
        });
        self.push_once(&message.thread, &message.id, &frame);
        // The browser knows the message by our own id: there is no platform id to record.
        Ok(SendReceipt::default())
    }

    fn capabilities(&self) -> switchboard_connector::Capabilities {
        switchboard_connector::Capabilities {
            choices: true,
            ..Default::default()
        }
    }

    async fn typing(&self, signal: &TypingSignal) {
        let frame = ServerFrame::Typing {
            author: signal.author,
            active: signal.active,
        };
        self.push(&signal.thread, &frame, None);
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Clone)]
struct SocketState {
    connector: Arc<WebchatConnector>,
    host: Arc<dyn ConnectorHost>,
}

async fn upgrade(State(state): State<SocketState>, ws: WebSocketUpgrade) -> Response {
    let limit = state.connector.settings.max_frame_bytes;
    // Small buffers: most sessions sit idle, and 10,000 of them must fit in little memory.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        // Frames up to 1 MiB are read so that an oversized one gets a proper 1009 close and a
        // log line; only larger ones end in a transport error.
        .max_message_size(limit.max(HARD_FRAME_LIMIT))
        .max_frame_size(limit.max(HARD_FRAME_LIMIT))
        .on_upgrade(move |socket| serve_socket(state, socket))
        .into_response()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

fn encode(frame: &ServerFrame) -> Message {
    let text = serde_json::to_string(frame).expect("server frames serialise");
    Message::Text(Utf8Bytes::from(text))
}

/// Send a close frame and finish the closing handshake: read (and drop) what the client still
/// sends until its close frame, for at most two seconds. Dropping the socket with unread data
/// would make the kernel reset the connection, and the client would never see the close code.
async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let sent = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
    if sent.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn send_frame(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    socket.send(encode(frame)).await.is_ok()
}

/// Who is on the other end of a socket.
struct Session {
    visitor_id: String,
    token: String,
    resumed: bool,
    /// The signed-in customer's email, when the embedding page vouched for one.
    email: Option<String>,
}

/// Visitor ids of signed-in customers start with this; anonymous ones are UUIDs.
const IDENTITY_PREFIX: &str = "id-";

/// Wait for `hello`, then check or issue the session token. A signed-in customer (a valid
/// `identity`) is the same visitor on every device; a token of a signed-in customer is not
/// honoured without the identity (someone else may be using the browser after they left).
async fn handshake(state: &SocketState, socket: &mut WebSocket) -> Option<Session> {
    let settings = &state.connector.settings;
    let first = tokio::time::timeout(settings.hello_timeout, socket.recv()).await;
    let frame = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<ClientFrame>(&text).ok(),
        Ok(Some(Ok(_))) => None,
        Ok(Some(Err(_)) | None) => return None,
        Err(_elapsed) => None,
    };
    let Some(ClientFrame::Hello { token, identity }) = frame else {
        tracing::info!("web chat client did not start with hello");
        send_frame(
            socket,
            &ServerFrame::error("hello_required", "the first frame must be hello"),
        )
        .await;
        close_with(socket, close::HELLO_REQUIRED, "hello required").await;
        return None;
    };
    let email = match identity {
        None => None,
        Some(identity) => {
            let verified = settings
                .identities
                .as_ref()
                .and_then(|identities| identities.verify(&identity.email, &identity.signature));
            if verified.is_none() {
                tracing::info!("web chat identity refused");
                send_frame(
                    socket,
                    &ServerFrame::error(
                        "invalid_identity",
                        "the identity is not signed by this site; continuing as a guest",
                    ),
                )
                .await;
            }
            verified
        }
    };
    let from_token = match token {
        Some(token) => match settings.signer.verify(&token, now_secs()) {
            Some(visitor_id) => Some((visitor_id, token)),
            None => {
                tracing::info!("web chat session token refused");
                send_frame(
                    socket,
                    &ServerFrame::error("invalid_token", "the session token is not valid"),
                )
                .await;
                close_with(socket, close::INVALID_TOKEN, "invalid token").await;
                return None;
            }
        },
        None => None,
    };
    let now = now_secs();
    Some(match (email, from_token) {
        (Some(email), token) => {
            let visitor_id = settings.signer.identity_visitor(&email);
            let resumed = token.is_some_and(|(previous, _)| previous == visitor_id);
            Session {
                token: settings.signer.issue(&visitor_id, now),
                visitor_id,
                resumed,
                email: Some(email),
            }
        }
        (None, Some((visitor_id, token))) if !visitor_id.starts_with(IDENTITY_PREFIX) => Session {
            visitor_id,
            token,
            resumed: true,
            email: None,
        },
        (None, _) => {
            let visitor_id = uuid::Uuid::now_v7().to_string();
            Session {
                token: settings.signer.issue(&visitor_id, now),
                visitor_id,
                resumed: false,
                email: None,
            }
        }
    })
}

/// A token bucket per connection.
struct RateLimit {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
    refused_in_a_row: u32,
}

impl RateLimit {
    fn new(settings: &WebchatSettings) -> RateLimit {
        RateLimit {
            tokens: settings.rate_burst as f64,
            capacity: settings.rate_burst as f64,
            per_second: settings.rate_per_minute as f64 / 60.0,
            last: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            false
        }
    }
}

async fn serve_socket(state: SocketState, mut socket: WebSocket) {
    let Some(Session {
        visitor_id,
        token,
        resumed,
        email,
    }) = handshake(&state, &mut socket).await
    else {
        return;
    };
    let connector = state.connector.clone();
    let settings = connector.settings.clone();
    // Register before reading the history so that no reply can fall between history and live:
    // a reply sent meanwhile waits in the channel until after the welcome (the client drops it
    // by id if the history has it too).
    let (frames_tx, mut frames_rx) = mpsc::channel::<ServerFrame>(64);
    let tab_id = connector.register(&visitor_id, frames_tx);
    // Messages this visitor sends from other tabs reach this one through the live events.
    let mut events = state.host.watch(&visitor_id);
    let history = match state
        .host
        .history(&visitor_id, settings.history_limit)
        .await
    {
        Ok(history) => history,
        Err(error) => {
            connector.unregister(&visitor_id, tab_id);
            tracing::warn!(error = %error, "web chat history unavailable");
            send_frame(
                &mut socket,
                &ServerFrame::error("unavailable", "history is unavailable, try again"),
            )
            .await;
            close_with(&mut socket, 1011, "unavailable").await;
            return;
        }
    };
    let welcome = ServerFrame::Welcome {
        token,
        visitor_id: visitor_id.clone(),
        conversation_id: history.last().map(|m| m.conversation_id.clone()),
        resumed,
        history: history.iter().map(MessageView::from_channel).collect(),
    };
    if send_frame(&mut socket, &welcome).await {
        let mut rate = RateLimit::new(&settings);
        let mut sent_here = SentHere::default();
        loop {
            tokio::select! {
                incoming = socket.recv() => {
                    let Some(Ok(message)) = incoming else { break };
                    let mut visitor = Visitor {
                        id: &visitor_id,
                        email: email.as_deref(),
                        sent_here: &mut sent_here,
                    };
                    let keep_open =
                        handle_incoming(&state, &mut socket, &mut visitor, &mut rate, message).await;
                    if !keep_open {
                        break;
                    }
                }
                outgoing = frames_rx.recv() => {
                    let Some(frame) = outgoing else {
                        close_with(&mut socket, close::POLICY, "too slow").await;
                        break;
                    };
                    if !send_frame(&mut socket, &frame).await {
                        break;
                    }
                }
                event = events.recv() => {
                    match event {
                        Ok(event) => {
                            if let Some(frame) = other_tab_message(&event, &sent_here)
                                && !send_frame(&mut socket, &frame).await
                            {
                                break;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            events = state.host.watch(&visitor_id);
                        }
                    }
                }
                _ = connector.shutdown.cancelled() => {
                    close_with(&mut socket, close::GOING_AWAY, "server shutting down").await;
                    break;
                }
            }
        }
    }
    connector.unregister(&visitor_id, tab_id);
}

/// The visitor behind one socket (one tab).
struct Visitor<'a> {
    id: &'a str,
    email: Option<&'a str>,
    sent_here: &'a mut SentHere,
}

/// The platform ids of the messages sent from this tab lately: the live events of the
/// conversation bring them back, and this tab has them already.
#[derive(Default)]
struct SentHere(std::collections::VecDeque<String>);

impl SentHere {
    fn add(&mut self, platform_id: String) {
        if self.0.len() >= RECENT_IDS {
            self.0.pop_front();
        }
        self.0.push_back(platform_id);
    }

    fn contains(&self, platform_id: &str) -> bool {
        self.0.iter().any(|seen| seen == platform_id)
    }
}

/// The frame for a customer message stored from another tab of this visitor.
fn other_tab_message(event: &LiveEvent, sent_here: &SentHere) -> Option<ServerFrame> {
    if event.kind != EventKind::MessageStored || event.data["author"] != "customer" {
        return None;
    }
    let platform_id = event.data["platform_message_id"].as_str()?;
    if sent_here.contains(platform_id) {
        return None;
    }
    let client_id = platform_id
        .rsplit_once(':')
        .map(|(_, client)| client.to_string());
    Some(ServerFrame::Message(MessageView {
        id: event.data["message_id"].as_str()?.to_string(),
        seq: event.data["seq"].as_i64()?,
        author: AuthorKind::Customer,
        text: event.data["text"].as_str()?.to_string(),
        created_at: protocol::format_time(event.created_at_ms),
        client_id,
        choices: Vec::new(),
    }))
}

/// Handle one frame from the browser; false closes the socket.
async fn handle_incoming(
    state: &SocketState,
    socket: &mut WebSocket,
    visitor: &mut Visitor<'_>,
    rate: &mut RateLimit,
    message: Message,
) -> bool {
    let visitor_id = visitor.id;
    let settings = &state.connector.settings;
    let text = match message {
        Message::Text(text) => text,
        Message::Close(_) => return false,
        Message::Ping(_) | Message::Pong(_) => return true,
        Message::Binary(_) => {
            return send_frame(
                socket,
                &ServerFrame::error("bad_frame", "binary frames are not supported"),
            )
            .await;
        }
    };
    if text.len() > settings.max_frame_bytes {
        tracing::info!(
            visitor = visitor_id,
            bytes = text.len(),
            "web chat frame too large"
        );
        close_with(socket, close::TOO_BIG, "frame too large").await;
        return false;
    }
    let frame = match serde_json::from_str::<ClientFrame>(&text) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::debug!(visitor = visitor_id, error = %error, "malformed web chat frame");
            return send_frame(
                socket,
                &ServerFrame::error("bad_frame", format!("malformed frame: {error}")),
            )
            .await;
        }
    };
    match frame {
        ClientFrame::Hello { .. } => {
            send_frame(
                socket,
                &ServerFrame::error("bad_frame", "hello was already received"),
            )
            .await
        }
        ClientFrame::Typing { active } => {
            state.host.typing(TypingSignal {
                channel: state.connector.name.clone(),
                thread: visitor_id.to_string(),
                author: AuthorKind::Customer,
                active,
            });
            true
        }
        ClientFrame::Message {
            client_id,
            text,
            choice_id,
        } => {
            let message = Typed {
                client_id,
                text,
                choice_id,
            };
            handle_message(state, socket, visitor, rate, message).await
        }
    }
}

/// A message frame's contents.
struct Typed {
    client_id: String,
    text: String,
    choice_id: Option<String>,
}

async fn handle_message(
    state: &SocketState,
    socket: &mut WebSocket,
    visitor: &mut Visitor<'_>,
    rate: &mut RateLimit,
    message: Typed,
) -> bool {
    let Typed {
        client_id,
        text,
        choice_id,
    } = message;
    let visitor_id = visitor.id;
    let settings = &state.connector.settings;
    let refuse = |code: &'static str, message: String, client_id: &str| ServerFrame::Error {
        code,
        message,
        client_id: Some(client_id.to_string()),
    };
    if !protocol::valid_client_id(&client_id) {
        let frame = ServerFrame::error(
            "bad_frame",
            "client_id must be 1 to 64 characters of A-Z a-z 0-9 _ -",
        );
        return send_frame(socket, &frame).await;
    }
    let text = text.trim();
    if text.is_empty() {
        let frame = refuse("bad_frame", "text is empty".into(), &client_id);
        return send_frame(socket, &frame).await;
    }
    if text.chars().count() > settings.max_text_chars {
        let message = format!("text is longer than {} characters", settings.max_text_chars);
        let frame = refuse("text_too_long", message, &client_id);
        return send_frame(socket, &frame).await;
    }
    if !rate.allow() {
        if rate.refused_in_a_row >= settings.flood_close_after {
            tracing::warn!(visitor = visitor_id, "web chat client flooding, closing");
            close_with(socket, close::POLICY, "flooding").await;
            return false;
        }
        let frame = refuse(
            "rate_limited",
            "too many messages, slow down".into(),
            &client_id,
        );
        return send_frame(socket, &frame).await;
    }
    let platform_message_id = format!("{visitor_id}:{client_id}");
    let mut sender = PlatformIdentity::new(visitor_id, true);
    sender.email = visitor.email.map(str::to_string);
    let mut event = InboundEvent::text(
        state.connector.name.clone(),
        platform_message_id.clone(),
        sender,
        visitor_id,
        text,
    );
    event.choice = choice_id
        .filter(|id| protocol::valid_client_id(id))
        .map(|choice_id| switchboard_connector::PickedChoice {
            choice_id,
            message_platform_id: None,
        });
    // Before the ingest: its event may come back through the live stream before the ack.
    visitor.sent_here.add(platform_message_id);
    match state.host.ingest(event).await {
        Ok(receipt) => {
            let ack = ServerFrame::Ack {
                client_id,
                id: receipt.message_id,
                seq: receipt.seq,
                duplicate: receipt.duplicate,
            };
            send_frame(socket, &ack).await
        }
        Err(HostError::Rejected(reason)) => {
            send_frame(socket, &refuse("bad_frame", reason, &client_id)).await
        }
        Err(HostError::Unavailable(reason)) => {
            tracing::warn!(visitor = visitor_id, reason = %reason, "web chat message not stored");
            let frame = refuse(
                "unavailable",
                "the message could not be stored, resend it".into(),
                &client_id,
            );
            send_frame(socket, &frame).await
        }
    }
}
