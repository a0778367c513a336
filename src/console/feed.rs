//! The queue's live feed: every console of the process follows one firehose of conversation
//! changes, turned once into small items that carry the conversation's owner (so that each
//! console keeps only what its person may see) and the event's time (so that a console that
//! reconnects resumes from the last time it saw).
//!
//! Resuming is by state, not by replaying events: a console that reconnects with the time
//! of the last item it saw gets the current rows of every conversation changed since then
//! (less a margin for commits that were slower than their timestamp), then live items. A row
//! carries its conversation's last event number, so a console keeps the newer of a row and
//! an item. This needs nothing of the bus but "every event, eventually, in order per
//! conversation", so a bus across instances (PostgreSQL LISTEN/NOTIFY) slots in unchanged.

use std::sync::Arc;

use serde::Serialize;
use switchboard_connector::EventKind;
use tokio::sync::broadcast;

use crate::events::EventBus;
use crate::store::Store;

/// Items a slow console may fall behind by before it is told to reload.
const FEED_CAPACITY: usize = 8192;
/// How far before the resume time rows are sent again: longer than any commit takes.
pub const RESUME_MARGIN_MS: i64 = 30_000;

/// One change, as consoles see it in the queue.
#[derive(Debug, Clone, Serialize)]
pub struct FeedItem {
    pub conversation_id: String,
    pub seq: i64,
    pub kind: &'static str,
    pub owner: String,
    pub status: String,
    pub channel: String,
    /// For messages: who wrote it and its first words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub created_at_ms: i64,
}

pub struct Feed {
    sender: broadcast::Sender<Arc<FeedItem>>,
}

impl Feed {
    /// Follow `bus` for every console of this process, remembering the owner of up to
    /// `cached_conversations` conversations (the rest are read when they next change).
    pub fn start(store: Store, bus: Arc<dyn EventBus>, cached_conversations: usize) -> Arc<Feed> {
        let (sender, _) = broadcast::channel(FEED_CAPACITY);
        let feed = Arc::new(Feed {
            sender: sender.clone(),
        });
        let mut watch = bus.watch_all();
        let owners: quick_cache::sync::Cache<String, (String, String)> =
            quick_cache::sync::Cache::new(cached_conversations.max(1));
        tokio::spawn(async move {
            loop {
                let event = match watch.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Consoles resume from their last time; owners are read again.
                        tracing::warn!(missed, "console feed lagged behind the event bus");
                        owners.clear();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if event.kind == EventKind::Typing {
                    continue;
                }
                let known = match event.kind {
                    EventKind::OwnerChanged | EventKind::ConversationOpened => {
                        let owner = event.data["to"]
                            .as_str()
                            .or_else(|| event.data["owner"].as_str())
                            .unwrap_or("bot")
                            .to_string();
                        let status = event.data["status"].as_str().unwrap_or("bot").to_string();
                        owners.insert(
                            event.conversation_id.clone(),
                            (owner.clone(), status.clone()),
                        );
                        Some((owner, status))
                    }
                    _ => owners.get(&event.conversation_id),
                };
                if sender.receiver_count() == 0 {
                    continue;
                }
                let (owner, status) = match known {
                    Some(known) => known,
                    None => match store.conversation(&event.conversation_id).await {
                        Ok(conversation) => {
                            let known = (
                                conversation.state.owner.to_string(),
                                conversation.state.status.as_str().to_string(),
                            );
                            owners.insert(event.conversation_id.clone(), known.clone());
                            known
                        }
                        Err(error) => {
                            tracing::warn!(conversation = %event.conversation_id, error = %error, "console feed could not read a conversation");
                            continue;
                        }
                    },
                };
                let message = event.kind == EventKind::MessageStored;
                let item = FeedItem {
                    conversation_id: event.conversation_id.clone(),
                    seq: event.seq,
                    kind: event.kind.as_str(),
                    owner,
                    status,
                    channel: event.channel.clone(),
                    author: message
                        .then(|| event.data["author"].as_str().map(str::to_string))
                        .flatten(),
                    text: message
                        .then(|| {
                            event.data["text"]
                                .as_str()
                                .map(|text| text.chars().take(200).collect())
                        })
                        .flatten(),
                    created_at_ms: event.created_at_ms,
                };
                let _ = sender.send(Arc::new(item));
            }
        });
        feed
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.sender.subscribe()
    }
}
