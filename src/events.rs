//! The live event stream: every change of a conversation, published after its commit.
//!
//! [`EventBus`] is the publish/subscribe seam. [`LocalBus`] serves one process; a bus across
//! instances (PostgreSQL `LISTEN/NOTIFY`, NATS) implements the same trait and changes nothing
//! else, because subscribers never trust the bus for completeness: [`Follower`] numbers
//! events per conversation, fills any gap (a lagging receiver, another writer's event that
//! arrives later than its successor) from the database, and drops repeats. So a subscriber
//! that reconnects with the last number it saw misses nothing and sees nothing twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use switchboard_connector::{EventWatch, LiveEvent};
use tokio::sync::broadcast;

use crate::store::{Store, StoreResult};

/// Events a receiver may fall behind by before it must read back from the database.
const WATCH_CAPACITY: usize = 64;
/// How many events the firehose of all conversations may buffer per receiver.
const ALL_CAPACITY: usize = 4096;
/// Publishes between sweeps of topics nobody listens to any more.
const SWEEP_EVERY: u64 = 4096;

/// Publish and subscribe to conversation events.
pub trait EventBus: Send + Sync {
    /// Publish events already committed, in commit order.
    fn publish(&self, events: &[LiveEvent]);
    /// Live events of one conversation.
    fn watch_conversation(&self, conversation_id: &str) -> EventWatch;
    /// Live events of whatever conversation is open on a channel thread.
    fn watch_thread(&self, channel: &str, thread: &str) -> EventWatch;
    /// Live events of every conversation (the console's inbox).
    fn watch_all(&self) -> EventWatch;
}

/// The in-process bus: one broadcast channel per watched conversation and thread, created
/// on the first subscription and dropped when its last receiver is gone.
pub struct LocalBus {
    conversations: DashMap<String, broadcast::Sender<Arc<LiveEvent>>>,
    threads: DashMap<(String, String), broadcast::Sender<Arc<LiveEvent>>>,
    all: broadcast::Sender<Arc<LiveEvent>>,
    published: AtomicU64,
}

impl Default for LocalBus {
    fn default() -> LocalBus {
        LocalBus {
            conversations: DashMap::new(),
            threads: DashMap::new(),
            all: broadcast::channel(ALL_CAPACITY).0,
            published: AtomicU64::new(0),
        }
    }
}

impl LocalBus {
    fn sweep(&self) {
        self.conversations
            .retain(|_, sender| sender.receiver_count() > 0);
        self.threads.retain(|_, sender| sender.receiver_count() > 0);
    }

    /// Topics with a live receiver (for tests and metrics).
    pub fn topics(&self) -> usize {
        self.conversations.len() + self.threads.len()
    }
}

impl EventBus for LocalBus {
    fn publish(&self, events: &[LiveEvent]) {
        let to_all = self.all.receiver_count() > 0;
        for event in events {
            // An event nobody listens to is neither copied nor sent.
            let conversation = self
                .conversations
                .get(&event.conversation_id)
                .map(|sender| sender.clone());
            let thread = if self.threads.is_empty() {
                None
            } else {
                let key = (event.channel.clone(), event.thread.clone());
                self.threads.get(&key).map(|sender| sender.clone())
            };
            if conversation.is_none() && thread.is_none() && !to_all {
                continue;
            }
            let event = Arc::new(event.clone());
            for sender in conversation.iter().chain(thread.iter()) {
                let _ = sender.send(event.clone());
            }
            if to_all {
                let _ = self.all.send(event);
            }
        }
        let published = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        if published.is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
    }

    fn watch_conversation(&self, conversation_id: &str) -> EventWatch {
        self.conversations
            .entry(conversation_id.to_string())
            .or_insert_with(|| broadcast::channel(WATCH_CAPACITY).0)
            .subscribe()
    }

    fn watch_thread(&self, channel: &str, thread: &str) -> EventWatch {
        self.threads
            .entry((channel.to_string(), thread.to_string()))
            .or_insert_with(|| broadcast::channel(WATCH_CAPACITY).0)
            .subscribe()
    }

    fn watch_all(&self) -> EventWatch {
        self.all.subscribe()
    }
}

/// Follows one conversation from a known event number, in order, with no gap and no repeat:
/// first what the database holds after that number, then live events, reading back from the
/// database whenever the live stream skips or lags.
pub struct Follower {
    store: Store,
    conversation_id: String,
    live: EventWatch,
    last: i64,
    pending: VecDeque<Arc<LiveEvent>>,
    started: bool,
}

/// Events read back from the database in one go.
const CATCH_UP_PAGE: i64 = 500;

impl Follower {
    /// Follow `conversation_id` from after event number `after` (0: from the start).
    pub fn new(store: Store, bus: &dyn EventBus, conversation_id: &str, after: i64) -> Follower {
        // Subscribe before reading back, so nothing falls between the two.
        let live = bus.watch_conversation(conversation_id);
        Follower {
            store,
            conversation_id: conversation_id.to_string(),
            live,
            last: after,
            pending: VecDeque::new(),
            started: false,
        }
    }

    /// The number of the last stored event handed out.
    pub fn last_seq(&self) -> i64 {
        self.last
    }

    async fn catch_up(&mut self) -> StoreResult<()> {
        let events = self
            .store
            .events_after(&self.conversation_id, self.last, CATCH_UP_PAGE)
            .await?;
        self.pending.extend(events.into_iter().map(Arc::new));
        Ok(())
    }

    /// The next event; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<StoreResult<Arc<LiveEvent>>> {
        if !self.started {
            self.started = true;
            if let Err(error) = self.catch_up().await {
                return Some(Err(error));
            }
        }
        let mut gap_reads = 0;
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.seq == 0 {
                    return Some(Ok(event));
                }
                if event.seq <= self.last {
                    continue;
                }
                if event.seq == self.last + 1 || gap_reads >= MAX_GAP_READS {
                    if event.seq != self.last + 1 {
                        tracing::warn!(conversation = %self.conversation_id, from = self.last, to = event.seq, "event numbers skipped and never found");
                    }
                    self.last = event.seq;
                    return Some(Ok(event));
                }
                // A gap: a number is only given out after the ones before it were committed,
                // so what lies between is in the database (or about to be readable).
                self.pending.push_front(event);
                if gap_reads > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                gap_reads += 1;
                let ahead = std::mem::take(&mut self.pending);
                if let Err(error) = self.catch_up().await {
                    return Some(Err(error));
                }
                self.pending.extend(ahead);
                continue;
            }
            match self.live.recv().await {
                Ok(event) => self.pending.push_back(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(conversation = %self.conversation_id, missed, "event follower lagged, reading back");
                    if let Err(error) = self.catch_up().await {
                        return Some(Err(error));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Read-backs for one gap before a follower accepts the jump.
const MAX_GAP_READS: u32 = 50;
