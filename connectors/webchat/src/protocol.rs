//! The frames of the web chat wire protocol (docs/webchat-protocol.md).

use serde::{Deserialize, Serialize};
use switchboard_connector::{AuthorKind, ChannelMessage};

/// A frame from the browser.
/// `{"email", "signature"}`: see [`crate::session::IdentityVerifier`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub email: String,
    pub signature: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Hello {
        #[serde(default)]
        token: Option<String>,
        /// A signed-in customer the embedding page vouches for: an identity token (JWT).
        #[serde(default)]
        identity_token: Option<String>,
        /// The legacy form of the same (an email signature that never expires).
        #[serde(default)]
        identity: Option<Identity>,
    },
    Message {
        client_id: String,
        text: String,
        /// Set when the visitor pressed a quick reply (its label is the text).
        #[serde(default)]
        choice_id: Option<String>,
    },
    Typing {
        active: bool,
    },
}

/// A message as the widget shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageView {
    pub id: String,
    pub seq: i64,
    pub author: AuthorKind,
    pub text: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Quick replies offered with the message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<switchboard_connector::Choice>,
}

impl MessageView {
    pub fn from_channel(message: &ChannelMessage) -> MessageView {
        MessageView {
            id: message.id.clone(),
            seq: message.seq,
            author: message.author,
            text: message.text.clone(),
            created_at: format_time(message.created_at_ms),
            client_id: message
                .platform_message_id
                .as_deref()
                .and_then(|platform_id| platform_id.split_once(':'))
                .map(|(_, client_id)| client_id.to_string()),
            choices: message.choices.clone(),
        }
    }
}

pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A frame to the browser.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        token: String,
        visitor_id: String,
        conversation_id: Option<String>,
        resumed: bool,
        history: Vec<MessageView>,
    },
    Ack {
        client_id: String,
        id: String,
        seq: i64,
        duplicate: bool,
    },
    Message(MessageView),
    Typing {
        author: AuthorKind,
        active: bool,
    },
    /// The bot's reply so far, while it is written; the next message from the bot replaces
    /// it, and an empty text takes it away.
    Draft {
        author: AuthorKind,
        text: String,
    },
    Error {
        code: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// With `rate_limited`: when to try again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    pub fn error(code: &'static str, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            code,
            message: message.into(),
            client_id: None,
            retry_after_ms: None,
        }
    }
}

/// Parse one client frame (the fuzz target's entry point too).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, serde_json::Error> {
    serde_json::from_str(text)
}

/// Whether `text` is a JSON object whose `type` is `hello`, whatever else it holds: for a frame
/// [`parse_client_frame`] refused, whether it was meant as a hello.
pub fn claims_hello(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|frame| frame.get("type").and_then(|kind| kind.as_str()) == Some("hello"))
}

/// Close codes the server uses (see the protocol document).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// The server cannot serve the tab right now (its history is unavailable); the widget
    /// reconnects.
    pub const UNAVAILABLE: u16 = 1011;
    pub const INVALID_TOKEN: u16 = 4001;
    pub const HELLO_REQUIRED: u16 = 4002;
    /// The page's origin may not open the chat (`webchat.allowed_origins`).
    pub const ORIGIN_NOT_ALLOWED: u16 = 4003;
    /// Too many new sessions from this client address; retry after the error's delay.
    pub const RATE_LIMITED: u16 = 4029;
}

/// Whether a client id is 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_client_id(client_id: &str) -> bool {
    !client_id.is_empty()
        && client_id.len() <= 64
        && client_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}
