//! The demo shop in this process, in LLM mode, and its customers chatting through the real web
//! chat: what `eval llm` and `bench llm` drive. The model server is reached through a
//! recording proxy ([`crate::llm::proxy`]), so what the provider received can be checked.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::router::{Socket, lifted_web_table, same_origin_request, tempdir::TempDir};
use crate::app::{App, AppOptions};
use crate::config::{ChannelTables, Settings};
use crate::conversation::Move;
use crate::store::Transfer;

/// The model server a run drives, and how long it waits for one answer (`eval llm` and
/// `bench llm` alike).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelServer {
    /// The model server's OpenAI-compatible base URL (default: `[llm] base_url`).
    #[arg(long)]
    pub url: Option<String>,
    /// The model name (default: `[llm] model`).
    #[arg(long)]
    pub model: Option<String>,
    /// Longest wait for the reply to one message, in seconds.
    #[arg(long, default_value_t = 120)]
    pub turn_timeout_secs: u64,
}

impl ModelServer {
    /// The server's base URL (`--url` or `[llm] base_url`), with `--model` set in `settings`.
    pub fn choose(&self, settings: &mut Settings) -> anyhow::Result<String> {
        let url = self.url.clone().unwrap_or(settings.llm.base_url.clone());
        anyhow::ensure!(
            !url.is_empty(),
            "no model server: pass --url or set [llm] base_url"
        );
        if let Some(model) = &self.model {
            settings.llm.model = model.clone();
        }
        Ok(url)
    }

    pub fn turn_timeout(&self) -> Duration {
        Duration::from_secs(self.turn_timeout_secs)
    }
}

/// A turn is over once a reply came and nothing else followed for this long (a task's notice
/// follows the assistant's turn through the outbox).
const QUIET: Duration = Duration::from_millis(1500);

/// The demo shop running in a scratch directory.
pub struct ShopChat {
    app: App,
    secret: String,
    _dir: TempDir,
}

/// One customer's web chat session.
pub struct Customer {
    socket: Socket,
    pub visitor_id: String,
}

/// What came back for one customer message.
#[derive(Debug)]
pub struct TurnFrames {
    /// When the message was sent.
    pub sent_at: Instant,
    /// From sending to the first draft of the answer (LLM mode streams its answer as drafts).
    pub first_draft: Option<Duration>,
    /// From sending to the first stored message back (bot or system).
    pub first_reply: Option<Duration>,
    /// The last draft shown before the answer.
    pub last_draft: Option<String>,
    /// (author, text) of every message back, in order.
    pub replies: Vec<(String, String)>,
}

impl TurnFrames {
    /// Whether the stored answer is the one whose drafts were shown (not the builtin
    /// assistant's, after the model's answer was refused).
    pub fn answer_was_drafted(&self) -> bool {
        let Some(draft) = self.last_draft.as_deref() else {
            return false;
        };
        self.replies
            .iter()
            .find(|(author, _)| author == "bot")
            .is_some_and(|(_, text)| text.starts_with(draft.trim_end()))
    }
}

impl ShopChat {
    /// `settings` (the demo shop's intents, knowledge and orders, as `config/switchboard.toml`
    /// sets them) in LLM mode on the model server at `llm_base_url`, in a scratch directory
    /// on SQLite.
    pub async fn start(mut settings: Settings, llm_base_url: &str) -> anyhow::Result<ShopChat> {
        let dir = TempDir::new("shop-chat")?;
        let secret = uuid::Uuid::new_v4().to_string();
        settings.data_dir = dir.0.clone();
        settings.database.url = String::new();
        settings.http.host = "127.0.0.1".into();
        settings.http.port = 0;
        settings.assistant.kind = "llm".into();
        // A signed-in customer's sessions share one thread; each run's conversation ends
        // resolved, and the next message starts a new one.
        settings.router.reopen_resolved = false;
        settings.llm.base_url = llm_base_url.to_string();
        // One address opens every session: the per-address limits are lifted.
        let mut web = lifted_web_table();
        web.insert("identity_secret".into(), secret.clone().into());
        settings.channel = ChannelTables(vec![web]);
        let app = App::start(settings, AppOptions::default())
            .await
            .context("starting the demo shop")?;
        Ok(ShopChat {
            app,
            secret,
            _dir: dir,
        })
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// A web chat session signed in as the shop customer `email`.
    pub async fn customer(&self, email: &str) -> anyhow::Result<Customer> {
        let url = format!("ws://{}/channels/webchat/web/ws", self.app.addr);
        let origin = format!("http://{}", self.app.addr);
        let token = switchboard_webchat::session::IdentityVerifier::new(self.secret.as_bytes())
            .issue_token(email, &origin, chrono::Utc::now().timestamp() + 3600);
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
            same_origin_request(&url)?,
            Some(super::router::client_config()),
            true,
        )
        .await?;
        let hello = json!({"type": "hello", "token": null, "identity_token": token});
        socket.send(Message::text(hello.to_string())).await?;
        loop {
            let frame = next_frame(&mut socket, Duration::from_secs(10)).await?;
            if frame["type"] == "welcome" {
                let visitor_id = frame["visitor_id"]
                    .as_str()
                    .context("a welcome names the visitor")?
                    .to_string();
                return Ok(Customer { socket, visitor_id });
            }
        }
    }

    /// Resolve the conversation `customer` is in, so their next message starts a new one;
    /// its id.
    pub async fn end_conversation(&self, customer: &Customer) -> anyhow::Result<String> {
        let id = self.conversation_id(customer).await?;
        let resolve = Transfer {
            to: Move::Resolve,
            change: "resolved".into(),
            actor: "system:shop-chat".into(),
            data: json!({}),
        };
        self.app.router.transfer(&id, &resolve, None).await?;
        Ok(id)
    }

    /// The open conversation `customer` is in.
    pub async fn conversation_id(&self, customer: &Customer) -> anyhow::Result<String> {
        let history = self
            .app
            .store
            .history("web", &customer.visitor_id, 1)
            .await?;
        Ok(history
            .first()
            .context("the customer has written nothing")?
            .conversation_id
            .clone())
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
    }
}

impl Customer {
    /// Send `text` and collect what comes back until the turn is over (`wait` at most).
    pub async fn say(&mut self, text: &str, wait: Duration) -> anyhow::Result<TurnFrames> {
        let client_id = uuid::Uuid::new_v4().to_string();
        let frame = json!({"type": "message", "client_id": client_id, "text": text});
        let started = Instant::now();
        self.socket.send(Message::text(frame.to_string())).await?;
        let mut frames = TurnFrames {
            sent_at: started,
            first_draft: None,
            first_reply: None,
            last_draft: None,
            replies: Vec::new(),
        };
        loop {
            let left = if frames.replies.is_empty() {
                wait.saturating_sub(started.elapsed())
            } else {
                QUIET
            };
            if left.is_zero() {
                bail!("no reply to {text:?} within {wait:?}");
            }
            let frame = match next_frame(&mut self.socket, left).await {
                Ok(frame) => frame,
                Err(_) if !frames.replies.is_empty() => return Ok(frames),
                Err(error) => return Err(error.context(format!("waiting for a reply to {text:?}"))),
            };
            match frame["type"].as_str() {
                Some("draft") => {
                    frames.first_draft.get_or_insert(started.elapsed());
                    let text = frame["text"].as_str().unwrap_or_default();
                    frames.last_draft = (!text.is_empty()).then(|| text.to_string());
                }
                Some("message") if frame["author"] != "customer" => {
                    frames.first_reply.get_or_insert(started.elapsed());
                    frames.replies.push((
                        frame["author"].as_str().unwrap_or_default().to_string(),
                        frame["text"].as_str().unwrap_or_default().to_string(),
                    ));
                }
                Some("error") => bail!("the web chat refused {text:?}: {frame}"),
                _ => {}
            }
        }
    }
}

async fn next_frame(socket: &mut Socket, wait: Duration) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(wait, socket.next())
            .await
            .context("nothing came")?;
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("the web chat closed the connection"),
        }
    }
}
