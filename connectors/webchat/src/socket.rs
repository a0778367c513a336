//! One visitor's socket: the upgrade with its origin and frame limits, the `hello` handshake
//! (guest session or signed identity), and the loop that stores what the visitor sends and
//! pushes what the conversation says back, within the visitor's, address's and session's
//! rate limits.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use switchboard_connector::{
    AuthorKind, ClientAddress, ConnectorHost, EventKind, HostError, InboundEvent, LiveEvent,
    PlatformIdentity, TypingSignal,
};
use tokio::sync::mpsc;

use crate::peer::{Peer, origin_allowed, preferred_language};
use crate::protocol::{ClientFrame, MessageView, ServerFrame, close};
use crate::session::{IdentityRefused, normalise_origin};
use crate::{HARD_FRAME_LIMIT, RECENT_IDS, WebchatConnector, WebchatSettings, now_secs, protocol};

#[derive(Clone)]
pub(crate) struct SocketState {
    pub(crate) connector: Arc<WebchatConnector>,
    pub(crate) host: Arc<dyn ConnectorHost>,
}

pub(crate) async fn upgrade(
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
    let language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .and_then(preferred_language);
    let peer = Peer {
        origin_allowed: origin_allowed(&settings.allowed_origins, origin.as_deref(), host),
        origin,
        address: client.map(|axum::Extension(ClientAddress(address))| address),
        language,
    };
    let limit = settings.max_frame_bytes;
    // Small buffers: most sessions sit idle, and 100,000 of them must fit in 1 GB. A chat
    // frame fits in 1 KiB; a longer one is read in several pieces.
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        // Frames up to 1 MiB are read so that an oversized one gets a proper 1009 close and a
        // log line; only larger ones end in a transport error.
        .max_message_size(limit.max(HARD_FRAME_LIMIT))
        .max_frame_size(limit.max(HARD_FRAME_LIMIT))
        .on_upgrade(move |socket| serve_socket(state, socket, peer))
        .into_response()
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
            Incoming::Frame(Message::Text(text)) => match protocol::parse_client_frame(&text) {
                Ok(frame) => Some(frame),
                // A hello with a bad field: say which, rather than that no hello came.
                Err(error) if protocol::claims_hello(&text) => {
                    tracing::info!(error = %error, "web chat client sent a malformed hello");
                    let frame =
                        ServerFrame::error("bad_frame", format!("malformed hello: {error}"));
                    refuse_and_close(socket, frame, close::HELLO_REQUIRED, "malformed hello").await;
                    return None;
                }
                Err(_) => None,
            },
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
    }) = Box::pin(handshake(&state, &mut socket, &peer)).await
    else {
        return;
    };
    let connector = state.connector.clone();
    let settings = connector.settings.clone();
    // Register before reading the history so that no reply can fall between history and live:
    // a reply sent meanwhile waits in the channel until after the welcome (the client drops it
    // by id if the history has it too).
    // Boxed: the channel allocates its first block of slots at once, and a slot holds a
    // pointer instead of a whole frame.
    let (frames_tx, mut frames_rx) = mpsc::channel::<Box<ServerFrame>>(64);
    let tab_id = connector.register(&visitor_id, frames_tx);
    // Messages this visitor sends from other tabs reach this one through the live events.
    let mut events = state.host.watch(&visitor_id);
    let history = match Box::pin(state.host.history(&visitor_id, settings.history_limit)).await {
        Ok(history) => history,
        Err(error) => {
            connector.unregister(&visitor_id, tab_id);
            tracing::warn!(error = %error, "web chat history unavailable");
            send_frame(
                &mut socket,
                &ServerFrame::error("unavailable", "history is unavailable, try again"),
            )
            .await;
            close_with(&mut socket, close::UNAVAILABLE, "unavailable").await;
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
                        language: peer.language.as_deref(),
                        sent_here: &mut sent_here,
                    };
                    // Boxed, like the other rare steps below: an idle session's task keeps
                    // only what its loop needs between frames, not room for the ingest.
                    let keep_open = Box::pin(handle_incoming(
                        &state,
                        &mut socket,
                        &mut visitor,
                        &mut flood,
                        message,
                    ))
                    .await;
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
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::debug!(visitor = %visitor_id, missed, "web chat tab fell behind the live events, reading back");
                            let keep_open = Box::pin(catch_up_other_tabs(
                                &state,
                                &mut socket,
                                &visitor_id,
                                &sent_here,
                            ))
                            .await;
                            if !keep_open {
                                break;
                            }
                        }
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
    /// The browser's preferred language, the conversation's language hint.
    language: Option<&'a str>,
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

/// After this tab's live events lagged: what the visitor sent from other tabs lately, read back
/// from the history (the widget drops what it already shows, by id, and places the rest by
/// number). All of the recent history's, not only what came after the last event seen: events
/// reach the tab in the order they were published, which is not always the order of the
/// messages' numbers. False closes the socket: with the history unavailable too, the tab reconnects
/// and gets the whole history in its welcome.
async fn catch_up_other_tabs(
    state: &SocketState,
    socket: &mut WebSocket,
    visitor_id: &str,
    sent_here: &SentHere,
) -> bool {
    let limit = state.connector.settings.history_limit;
    let history = match state.host.history(visitor_id, limit).await {
        Ok(history) => history,
        Err(error) => {
            tracing::warn!(error = %error, "web chat history unavailable after a lag, closing the tab");
            close_with(socket, close::UNAVAILABLE, "unavailable").await;
            return false;
        }
    };
    for message in &history {
        let from_here = message
            .platform_message_id
            .as_deref()
            .is_some_and(|platform_id| sent_here.contains(platform_id));
        if message.author != AuthorKind::Customer || from_here {
            continue;
        }
        let frame = ServerFrame::Message(MessageView::from_channel(message));
        if !send_frame(socket, &frame).await {
            return false;
        }
    }
    true
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
        Message::Close(_) => {
            // The answering close frame is queued by the socket; send it before the socket
            // goes, so the browser sees a clean close (1000), not an abnormal one (1006).
            let _ = futures::SinkExt::flush(socket).await;
            return false;
        }
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
    sender.language = visitor.language.map(str::to_string);
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
