//! Web chat: a WebSocket endpoint and the embeddable widget that talks to it.
//!
//! A browser opens `/channels/webchat/ws`, says `hello` with its session token (or none), and
//! gets its visitor's history back. Every visitor message is stored through the
//! [`ConnectorHost`] before it is acknowledged; replies come back through [`Connector::send`],
//! which pushes them to every open tab of the visitor. A visitor with no open tab gets them from
//! history on the next visit, so sending never fails for lack of a live socket.
//!
//! The wire protocol is documented in `docs/webchat-protocol.md`.

pub mod protocol;
pub mod session;

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
    AuthorKind, Connector, ConnectorError, ConnectorHost, HostError, InboundEvent, OutboundMessage,
    PlatformIdentity, SendReceipt, TypingSignal,
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
        }
    }
}

type Outbox = mpsc::Sender<ServerFrame>;

struct Tab {
    id: u64,
    frames: Outbox,
}

/// The web chat connector: keeps the open tabs of each visitor.
pub struct WebchatConnector {
    settings: WebchatSettings,
    tabs: DashMap<String, Vec<Tab>>,
    next_tab: AtomicU64,
    shutdown: CancellationToken,
}

impl WebchatConnector {
    pub fn new(settings: WebchatSettings) -> Arc<WebchatConnector> {
        Arc::new(WebchatConnector {
            settings,
            tabs: DashMap::new(),
            next_tab: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        })
    }

    /// Number of open WebSocket sessions.
    pub fn open_sessions(&self) -> usize {
        self.tabs.iter().map(|entry| entry.value().len()).sum()
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
            .push(Tab { id, frames });
        id
    }

    fn unregister(&self, visitor_id: &str, tab_id: u64) {
        self.tabs.remove_if_mut(visitor_id, |_, tabs| {
            tabs.retain(|tab| tab.id != tab_id);
            tabs.is_empty()
        });
    }

    /// Push a frame to the visitor's tabs, except `skip_tab`. A tab too slow to keep up is
    /// dropped from the set: its socket closes and the widget resumes from history.
    fn push(&self, visitor_id: &str, frame: &ServerFrame, skip_tab: Option<u64>) -> usize {
        let Some(mut tabs) = self.tabs.get_mut(visitor_id) else {
            return 0;
        };
        let mut delivered = 0;
        tabs.retain(|tab| {
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

    fn routes(self: Arc<Self>, host: Arc<dyn ConnectorHost>) -> Option<Router> {
        let state = SocketState {
            connector: self,
            host,
        };
        Some(Router::new().route("/ws", get(upgrade)).with_state(state))
    }

    async fn run(&self, _host: Arc<dyn ConnectorHost>, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        self.close_all();
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        let frame = ServerFrame::Message(MessageView {
            id: message.id.clone(),
            seq: message.seq,
            author: message.author,
            text: message.text.clone(),
            created_at: protocol::format_time(message.created_at_ms),
            client_id: None,
        });
        self.push(&message.thread, &frame, None);
        Ok(SendReceipt {
            platform_message_id: Some(message.id.clone()),
        })
    }

    async fn typing(&self, signal: &TypingSignal) {
        let frame = ServerFrame::Typing {
            author: signal.author,
            active: signal.active,
        };
        self.push(&signal.thread, &frame, None);
    }
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
    let history = match state
        .host
        .history(KIND, &visitor_id, settings.history_limit)
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
        loop {
            tokio::select! {
                incoming = socket.recv() => {
                    let Some(Ok(message)) = incoming else { break };
                    let visitor = Visitor { id: &visitor_id, tab_id, email: email.as_deref() };
                    let keep_open =
                        handle_incoming(&state, &mut socket, &visitor, &mut rate, message).await;
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
    tab_id: u64,
    email: Option<&'a str>,
}

/// Handle one frame from the browser; false closes the socket.
async fn handle_incoming(
    state: &SocketState,
    socket: &mut WebSocket,
    visitor: &Visitor<'_>,
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
                channel: KIND.to_string(),
                thread: visitor_id.to_string(),
                author: AuthorKind::Customer,
                active,
            });
            true
        }
        ClientFrame::Message { client_id, text } => {
            handle_message(state, socket, visitor, rate, client_id, text).await
        }
    }
}

async fn handle_message(
    state: &SocketState,
    socket: &mut WebSocket,
    visitor: &Visitor<'_>,
    rate: &mut RateLimit,
    client_id: String,
    text: String,
) -> bool {
    let (visitor_id, tab_id) = (visitor.id, visitor.tab_id);
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
    let event = InboundEvent {
        channel: KIND.to_string(),
        platform_message_id: format!("{visitor_id}:{client_id}"),
        sender: PlatformIdentity {
            platform_user_id: visitor_id.to_string(),
            display_name: None,
            verified: true,
            email: visitor.email.map(str::to_string),
        },
        thread: visitor_id.to_string(),
        text: text.to_string(),
        attachments: Vec::new(),
        sent_at_ms: None,
    };
    match state.host.ingest(event).await {
        Ok(receipt) => {
            if !receipt.duplicate {
                // Other tabs of the same visitor show the message too.
                let copy = ServerFrame::Message(MessageView {
                    id: receipt.message_id.clone(),
                    seq: receipt.seq,
                    author: AuthorKind::Customer,
                    text: text.to_string(),
                    created_at: protocol::format_time(chrono::Utc::now().timestamp_millis()),
                    client_id: Some(client_id.clone()),
                });
                state.connector.push(visitor_id, &copy, Some(tab_id));
            }
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
