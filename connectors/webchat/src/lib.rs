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
pub mod limits;
mod peer;
pub mod protocol;
pub mod session;

pub use factory::{WebchatConfig, WebchatFactory};

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dashmap::DashMap;
use switchboard_connector::{
    AuthorKind, ClientAddress, Connector, ConnectorError, ConnectorHost, EventKind, HostError,
    InboundEvent, LiveEvent, OutboundMessage, PlatformIdentity, SendReceipt, TypingSignal,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::{Limits, Rate};
use crate::peer::{Peer, origin_allowed};
use crate::protocol::{ClientFrame, MessageView, ServerFrame, close};
use crate::session::{IdentityRefused, IdentityVerifier, SessionSigner, normalise_origin};

pub const KIND: &str = "webchat";

/// Frames above this are dropped by the WebSocket layer itself.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

pub const WIDGET_JS: &str = include_str!("../assets/widget.js");
pub const WIDGET_CSS: &str = include_str!("../assets/widget.css");
pub const DEMO_HTML: &str = include_str!("../assets/demo.html");

/// Lifetime of the demo page's identity token: a copied page stops working within the hour.
const DEMO_TOKEN_SECS: i64 = 3600;

/// Tunables of one web chat instance (its `[[channel]]` table, see [`WebchatConfig`]).
#[derive(Clone)]
pub struct WebchatSettings {
    pub signer: SessionSigner,
    /// Largest accepted text frame; a larger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    pub max_text_chars: usize,
    /// Messages per visitor, across all its sockets.
    pub visitor_rate: Rate,
    /// Messages per client address, across all its visitors.
    pub address_rate: Rate,
    /// New sessions per client address.
    pub session_rate: Rate,
    /// Frames of any kind per socket (typing and malformed frames included).
    pub frame_rate: Rate,
    /// Consecutive refused frames after which a flooding client is disconnected.
    pub flood_close_after: u32,
    pub history_limit: u32,
    /// A socket that has not said `hello` by then is closed.
    pub hello_timeout: Duration,
    /// Origins whose pages may open the socket; empty: the server's own origin only.
    pub allowed_origins: Vec<String>,
    /// Checks the signed-in customers that embedding pages vouch for; `None` refuses them.
    pub identities: Option<IdentityVerifier>,
    /// Demo mode only: the demo page is signed in as this customer.
    pub demo_email: Option<String>,
}

impl std::fmt::Debug for WebchatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebchatSettings")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("visitor_rate", &self.visitor_rate)
            .field("address_rate", &self.address_rate)
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

impl WebchatSettings {
    pub fn new(secret: &[u8]) -> WebchatSettings {
        WebchatSettings {
            signer: SessionSigner::new(secret, 30 * 24 * 3600),
            max_frame_bytes: 16 * 1024,
            max_text_chars: 4000,
            visitor_rate: Rate::new(120, 20),
            address_rate: Rate::new(600, 100),
            session_rate: Rate::new(30, 20),
            frame_rate: Rate::new(600, 120),
            flood_close_after: 50,
            history_limit: 100,
            hello_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
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
    limits: Limits,
    tabs: DashMap<String, VisitorTabs>,
    next_tab: AtomicU64,
    shutdown: CancellationToken,
}

impl WebchatConnector {
    pub fn new(name: &str, settings: WebchatSettings) -> Arc<WebchatConnector> {
        let limits = Limits::new(
            settings.visitor_rate,
            settings.address_rate,
            settings.session_rate,
            settings.frame_rate,
        );
        Arc::new(WebchatConnector {
            name: name.to_string(),
            settings,
            limits,
            tabs: DashMap::new(),
            next_tab: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        })
    }

    /// Number of open WebSocket sessions.
    pub fn open_sessions(&self) -> usize {
        self.tabs.iter().map(|entry| entry.value().tabs.len()).sum()
    }

    /// The demo shop's page with the widget of this instance, as served to a browser on
    /// `origin` (`http://127.0.0.1:8080`). In demo mode (`demo_email` set) it is signed in as
    /// the demo customer with an identity token for that origin which expires within the
    /// hour, so a copied page stops working and works nowhere else.
    pub fn demo_page(&self, origin: &str) -> String {
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
        let expires = now_secs() + DEMO_TOKEN_SECS;
        // The token is base64url and the email was checked; escaped all the same.
        let token = escape_html(&identities.issue_token(email, origin, expires));
        let email = escape_html(email);
        page.replace(
            "data-open=\"true\"",
            &format!("data-open=\"true\" data-user-token=\"{token}\""),
        )
        .replace(
            "<!-- signed-in -->",
            &format!("<p class=\"signed-in\">Signed in to the demo shop as <strong>{email}</strong>: ask about your orders (1042 to 1045), a refund or a cancellation.</p>"),
        )
    }

    /// Rate limit keys held in memory (pruned every minute).
    pub fn tracked_limit_keys(&self) -> usize {
        self.limits.tracked_keys()
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
        // The rate limit buckets of quiet visitors and addresses are dropped every minute, so
        // their memory follows the number of recently active keys.
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = prune.tick() => self.limits.forget_idle(),
                _ = shutdown.cancelled() => break,
            }
        }
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

async fn upgrade(
    State(state): State<SocketState>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddress>>,
    ws: WebSocketUpgrade,
) -> Response {
    let settings = &state.connector.settings;
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(normalise_origin);
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    let peer = Peer {
        origin_allowed: origin_allowed(&settings.allowed_origins, origin.as_deref(), host),
        origin,
        address: client.map(|axum::Extension(ClientAddress(address))| address),
    };
    let limit = settings.max_frame_bytes;
    // Small buffers: most sessions sit idle, and 10,000 of them must fit in little memory.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        // Frames up to 1 MiB are read so that an oversized one gets a proper 1009 close and a
        // log line; only larger ones end in a transport error.
        .max_message_size(limit.max(HARD_FRAME_LIMIT))
        .max_frame_size(limit.max(HARD_FRAME_LIMIT))
        .on_upgrade(move |socket| serve_socket(state, socket, peer))
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

/// Read the next frame, as the handshake and the socket loop see it.
enum Incoming {
    Frame(Message),
    /// A text frame that is not UTF-8: the socket is closed with 1007.
    InvalidUtf8,
    Gone,
}

fn classify(incoming: Option<Result<Message, axum::Error>>) -> Incoming {
    match incoming {
        Some(Ok(message)) => Incoming::Frame(message),
        Some(Err(error)) => {
            let invalid_utf8 = error
                .into_inner()
                .downcast_ref::<tungstenite::Error>()
                .is_some_and(|error| matches!(error, tungstenite::Error::Utf8(_)));
            if invalid_utf8 {
                Incoming::InvalidUtf8
            } else {
                Incoming::Gone
            }
        }
        None => Incoming::Gone,
    }
}

/// Tell the client why it is refused, then close with `code`.
async fn refuse_and_close(
    socket: &mut WebSocket,
    frame: ServerFrame,
    code: u16,
    reason: &'static str,
) {
    send_frame(socket, &frame).await;
    close_with(socket, code, reason).await;
}

fn retry_millis(retry: Duration) -> u64 {
    u64::try_from(retry.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The signed-in customer a `hello` vouches for, if its identity holds.
async fn verify_identity(
    state: &SocketState,
    socket: &mut WebSocket,
    peer: &Peer,
    identity_token: Option<String>,
    legacy: Option<protocol::Identity>,
) -> Option<String> {
    if identity_token.is_none() && legacy.is_none() {
        return None;
    }
    let connector = &state.connector;
    let verified = match connector.settings.identities.as_ref() {
        None => Err(IdentityRefused::Invalid),
        Some(identities) => match (identity_token, legacy) {
            (Some(token), _) => identities.verify_token(&token, peer.origin.as_deref(), now_secs()),
            (None, Some(legacy)) => identities.verify_legacy(&legacy.email, &legacy.signature),
            (None, None) => Err(IdentityRefused::Invalid),
        },
    };
    match verified {
        Ok(email) => Some(email),
        Err(refused) => {
            tracing::info!(reason = %refused, "web chat identity refused");
            state.host.edge_rejection("webchat_identity");
            let message = format!("{refused}; continuing as a guest");
            send_frame(socket, &ServerFrame::error(refused.code(), message)).await;
            None
        }
    }
}

/// Wait for `hello`, then check or issue the session token. A signed-in customer (a valid
/// identity) is the same visitor on every device; a token of a signed-in customer is not
/// honoured without the identity (someone else may be using the browser after they left).
/// A resumed session gets a fresh token: the old one ages out, an active visitor never does.
async fn handshake(state: &SocketState, socket: &mut WebSocket, peer: &Peer) -> Option<Session> {
    let connector = &state.connector;
    let settings = &connector.settings;
    if !peer.origin_allowed {
        tracing::info!(origin = ?peer.origin, "web chat socket from a foreign origin refused");
        state.host.edge_rejection("webchat_origin");
        let frame = ServerFrame::error(
            "origin_not_allowed",
            "pages of this origin may not open the chat",
        );
        refuse_and_close(
            socket,
            frame,
            close::ORIGIN_NOT_ALLOWED,
            "origin not allowed",
        )
        .await;
        return None;
    }
    let first = tokio::time::timeout(settings.hello_timeout, socket.recv()).await;
    let frame = match first {
        Ok(incoming) => match classify(incoming) {
            Incoming::Frame(Message::Text(text)) => protocol::parse_client_frame(&text).ok(),
            Incoming::Frame(_) => None,
            Incoming::InvalidUtf8 => {
                close_with(socket, close::INVALID_PAYLOAD, "invalid utf-8").await;
                return None;
            }
            Incoming::Gone => return None,
        },
        Err(_elapsed) => {
            state.host.edge_rejection("webchat_hello_timeout");
            None
        }
    };
    let Some(ClientFrame::Hello {
        token,
        identity_token,
        identity,
    }) = frame
    else {
        tracing::info!("web chat client did not start with hello");
        let frame = ServerFrame::error("hello_required", "the first frame must be hello");
        refuse_and_close(socket, frame, close::HELLO_REQUIRED, "hello required").await;
        return None;
    };
    let email = verify_identity(state, socket, peer, identity_token, identity).await;
    let now = now_secs();
    let from_token = match token {
        Some(token) => match settings.signer.verify(&token, now) {
            Some(visitor_id) => Some(visitor_id),
            None => {
                tracing::info!("web chat session token refused");
                let frame = ServerFrame::error("invalid_token", "the session token is not valid");
                refuse_and_close(socket, frame, close::INVALID_TOKEN, "invalid token").await;
                return None;
            }
        },
        None => None,
    };
    let (visitor_id, resumed) = match (&email, from_token) {
        (Some(email), previous) => {
            let visitor_id = settings.signer.identity_visitor(email);
            let resumed = previous.is_some_and(|previous| previous == visitor_id);
            (visitor_id, resumed)
        }
        (None, Some(visitor_id)) if !visitor_id.starts_with(IDENTITY_PREFIX) => (visitor_id, true),
        (None, _) => (uuid::Uuid::now_v7().to_string(), false),
    };
    if !resumed && let Err(retry) = connector.limits.new_session(peer.address) {
        tracing::info!(address = ?peer.address, "web chat new sessions rate limited");
        state.host.edge_rejection("webchat_new_sessions");
        let frame = ServerFrame::Error {
            code: "rate_limited",
            message: "too many new chat sessions from this address, try again later".into(),
            client_id: None,
            retry_after_ms: Some(retry_millis(retry)),
        };
        refuse_and_close(socket, frame, close::RATE_LIMITED, "too many new sessions").await;
        return None;
    }
    Some(Session {
        token: settings.signer.issue(&visitor_id, now),
        visitor_id,
        resumed,
        email,
    })
}

/// Consecutive refusals on one socket: a client that keeps going after being told to slow
/// down is disconnected.
#[derive(Default)]
struct Flood {
    refused_in_a_row: u32,
}

impl Flood {
    fn allowed(&mut self) {
        self.refused_in_a_row = 0;
    }

    /// Count a refusal; true when the client should be disconnected.
    fn refused(&mut self, settings: &WebchatSettings) -> bool {
        self.refused_in_a_row += 1;
        self.refused_in_a_row >= settings.flood_close_after
    }
}

async fn serve_socket(state: SocketState, mut socket: WebSocket, peer: Peer) {
    let Some(Session {
        visitor_id,
        token,
        resumed,
        email,
    }) = handshake(&state, &mut socket, &peer).await
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
        let frames = connector.limits.frames();
        let mut flood = Flood::default();
        let mut sent_here = SentHere::default();
        loop {
            tokio::select! {
                incoming = socket.recv() => {
                    let message = match classify(incoming) {
                        Incoming::Frame(message) => message,
                        Incoming::InvalidUtf8 => {
                            state.host.edge_rejection("webchat_invalid_utf8");
                            close_with(&mut socket, close::INVALID_PAYLOAD, "invalid utf-8").await;
                            break;
                        }
                        Incoming::Gone => break,
                    };
                    // Over the frame rate: dropped unanswered, so that a flood of malformed
                    // frames is not echoed back as a flood of errors.
                    if matches!(message, Message::Text(_) | Message::Binary(_))
                        && frames.check().is_err()
                    {
                        state.host.edge_rejection("webchat_frame_rate");
                        if flood.refused(&settings) {
                            tracing::warn!(visitor = %visitor_id, "web chat client flooding, closing");
                            close_with(&mut socket, close::POLICY, "flooding").await;
                            break;
                        }
                        continue;
                    }
                    let mut visitor = Visitor {
                        id: &visitor_id,
                        email: email.as_deref(),
                        address: peer.address,
                        sent_here: &mut sent_here,
                    };
                    let keep_open =
                        handle_incoming(&state, &mut socket, &mut visitor, &mut flood, message).await;
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
    address: Option<IpAddr>,
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
    flood: &mut Flood,
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
    let frame = match protocol::parse_client_frame(&text) {
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
            handle_message(state, socket, visitor, flood, message).await
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
    flood: &mut Flood,
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
        retry_after_ms: None,
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
    if let Err(retry) = state.connector.limits.message(visitor_id, visitor.address) {
        state.host.edge_rejection("webchat_rate_limited");
        if flood.refused(settings) {
            tracing::warn!(visitor = visitor_id, "web chat client flooding, closing");
            close_with(socket, close::POLICY, "flooding").await;
            return false;
        }
        let frame = ServerFrame::Error {
            code: "rate_limited",
            message: "too many messages, slow down".into(),
            client_id: Some(client_id),
            retry_after_ms: Some(retry_millis(retry)),
        };
        return send_frame(socket, &frame).await;
    }
    flood.allowed();
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
