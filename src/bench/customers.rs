//! Customer messages through the real assistant (`bench router --assistant builtin --messages
//! FILE`): each visitor sends texts from a file, and a visitor whose conversation was handed to
//! people starts a new one, as a customer who got an agent would leave the bot alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::router::{Socket, connect_session};
use crate::conversation::Status;
use crate::router::Router;

/// The texts a run sends, and the in-process router that tells whether the bot still owns a
/// conversation.
pub struct Script {
    texts: Vec<String>,
    router: Arc<Router>,
    /// Conversations that left the bot in the measured window (handed to people, or closed).
    pub left_bot: AtomicU64,
}

/// The `text` column of the CSV file at `path` (with a header row), blank rows left out.
pub fn read_texts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("reading the messages file {}", path.display()))?;
    let column = reader
        .headers()?
        .iter()
        .position(|name| name.trim() == "text")
        .with_context(|| format!("{} has no `text` column in its header", path.display()))?;
    let mut texts = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        if let Some(text) = record.get(column).map(str::trim)
            && !text.is_empty()
        {
            texts.push(text.to_string());
        }
    }
    if texts.is_empty() {
        bail!("{} holds no messages", path.display());
    }
    Ok(texts)
}

impl Script {
    /// `texts` (from [`read_texts`], never empty) sent to the server `router` runs in.
    pub fn new(texts: Vec<String>, router: Arc<Router>) -> Script {
        Script {
            texts,
            router,
            left_bot: AtomicU64::new(0),
        }
    }

    /// How many messages the file holds (never none: reading refuses an empty file).
    pub fn messages(&self) -> usize {
        self.texts.len()
    }

    /// The `n`-th text of `visitor`: visitors start at different places in the file.
    fn text(&self, visitor: usize, n: u64) -> &str {
        &self.texts[(visitor.wrapping_mul(7919) + n as usize) % self.texts.len()]
    }

    /// The conversation the visitor's message `client_id` went to.
    async fn conversation_of(&self, visitor_id: &str, client_id: &str) -> anyhow::Result<String> {
        let platform_id = format!("{visitor_id}:{client_id}");
        let found = self
            .router
            .store()
            .find_message("web", &platform_id)
            .await?
            .with_context(|| format!("message {platform_id} was acknowledged but is not stored"))?;
        Ok(found.conversation_id)
    }
}

/// One visitor's closed loop: send a text, wait for the first reply to it, and start a new
/// conversation when people took this one over. Returns (sent, answered in the window).
pub(super) async fn closed_loop(
    visitor: usize,
    session: (Socket, String),
    ws_url: &str,
    script: &Script,
    latency: &mut hdrhistogram::Histogram<u64>,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<(u64, u64)> {
    let (mut socket, mut visitor_id) = session;
    let mut conversation: Option<String> = None;
    let (mut n, mut answered) = (0u64, 0u64);
    while Instant::now() < stop_at {
        n += 1;
        let client_id = format!("v{visitor}-m{n}");
        let frame = serde_json::json!({
            "type": "message",
            "client_id": client_id,
            "text": script.text(visitor, n),
        });
        let sent_at = Instant::now();
        socket.send(Message::text(frame.to_string())).await?;
        first_reply(&mut socket, &client_id).await?;
        let now = Instant::now();
        let measured = sent_at >= measure_from && now <= stop_at;
        if measured {
            latency.record(now.duration_since(sent_at).as_micros().max(1) as u64)?;
            answered += 1;
        }
        // Looked up once per conversation; its owner then comes from the router's cache.
        let id = match &conversation {
            Some(id) => id.clone(),
            None => script.conversation_of(&visitor_id, &client_id).await?,
        };
        if script.router.status(&id).await? == Status::Bot {
            conversation = Some(id);
        } else {
            if measured {
                script.left_bot.fetch_add(1, Ordering::Relaxed);
            }
            let _ = socket.close(None).await;
            (socket, visitor_id) = connect_session(ws_url).await?;
            conversation = None;
        }
    }
    let _ = socket.close(None).await;
    Ok((n, answered))
}

/// Wait for the acknowledgement of `client_id`, then for the first message after it that the
/// customer did not write. Later replies of an earlier turn come before the acknowledgement's
/// place in the conversation and are passed over.
async fn first_reply(socket: &mut Socket, client_id: &str) -> anyhow::Result<()> {
    let mut acked_seq: Option<i64> = None;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .context("no reply within 60 s")?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection closed"),
        };
        let frame: Value = serde_json::from_str(&text).context("a frame that is not JSON")?;
        match frame["type"].as_str() {
            Some("ack") if frame["client_id"] == client_id => {
                acked_seq = frame["seq"].as_i64();
            }
            Some("message") => {
                let after_ack = matches!(
                    (acked_seq, frame["seq"].as_i64()),
                    (Some(acked), Some(seq)) if seq > acked
                );
                if after_ack && frame["author"] != "customer" {
                    return Ok(());
                }
            }
            Some("error") => bail!("server error: {text}"),
            _ => {}
        }
    }
}
