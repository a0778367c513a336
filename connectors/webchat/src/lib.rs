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
mod socket;

pub use factory::{WebchatConfig, WebchatFactory};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::get;
use dashmap::DashMap;
use switchboard_connector::{
    Connector, ConnectorError, ConnectorHost, OutboundMessage, SendReceipt, TypingSignal,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::{Limits, Rate};
use crate::protocol::{MessageView, ServerFrame};
use crate::session::{IdentityVerifier, SessionSigner};

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

type Outbox = mpsc::Sender<Box<ServerFrame>>;

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
            match tab.frames.try_send(Box::new(frame.clone())) {
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
        let state = socket::SocketState {
            connector: self,
            host,
        };
        Some(
            Router::new()
                .route("/ws", get(socket::upgrade))
                .with_state(state),
        )
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
            drafts: true,
            ..Default::default()
        }
    }

    fn draft(&self, signal: &switchboard_connector::DraftSignal) {
        let frame = ServerFrame::Draft {
            author: switchboard_connector::AuthorKind::Bot,
            text: signal.text.clone(),
        };
        self.push(&signal.thread, &frame, None);
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}
