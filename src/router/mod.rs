//! The conversation router: the one path every inbound message takes.
//!
//! 1. [`Router::ingest`] stores the event, deduplicated on `(channel, platform id)` by a unique
//!    constraint, and returns once it is durable (connectors acknowledge only then).
//! 2. The message is queued on its conversation's lane: one turn at a time per conversation,
//!    conversations in parallel.
//! 3. The turn goes to the owner. The bot's [`Assistant`] answers; a queue or an agent gets the
//!    message without a bot reply. Replies, state and owner changes are committed in one
//!    transaction with the message marked handled, and leave through the outbox.
//!
//! A crash at any point loses nothing: a stored message without `handled_at` is replayed by
//! [`Router::recover`] at start-up, and a committed reply waits in the outbox.

pub mod lanes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchboard_connector::{
    AuthorKind, ChannelMessage, ConnectorHost, HostError, InboundEvent, IngestReceipt, TypingSignal,
};

use crate::assistant::{ActionRunner, Assistant, Reply, Turn};
use crate::channels::Channels;
use crate::config::RouterSettings;
use crate::metrics::Metrics;
use crate::outbox::Delivery;
use crate::store::{Conversation, NewReply, Store, StoreError, Transfer, TurnCommit};
use lanes::Lanes;

/// Longest inbound text the router stores; platforms cap far below this.
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// One inbound message waiting for its conversation's owner.
#[derive(Debug, Clone)]
pub struct Job {
    pub message_id: String,
    pub conversation_id: String,
    pub text: String,
    pub received: Instant,
}

pub struct Router {
    store: Store,
    assistant: Arc<dyn Assistant>,
    /// Carries out what the assistant asks of the back office (the workflow).
    actions: Option<Arc<dyn ActionRunner>>,
    channels: Arc<Channels>,
    metrics: Arc<Metrics>,
    delivery: Arc<Delivery>,
    settings: RouterSettings,
    lanes: std::sync::OnceLock<Arc<Lanes<Job>>>,
    accepting: AtomicBool,
    /// Conversations as the last turn left them, so a turn need not read its row first. A
    /// stale entry is harmless: the turn's commit is guarded by the row's version and is redone
    /// on the fresh row if anything changed it.
    conversations: dashmap::DashMap<String, Conversation>,
    /// Channel identities whose vouched-for email is linked already: `(channel, user, email)`.
    linked_emails: dashmap::DashSet<(String, String, String)>,
}

/// Most conversations kept in the router's cache.
const CACHED_CONVERSATIONS: usize = 100_000;

impl Router {
    pub fn new(
        store: Store,
        assistant: Arc<dyn Assistant>,
        actions: Option<Arc<dyn ActionRunner>>,
        channels: Arc<Channels>,
        metrics: Arc<Metrics>,
        delivery: Arc<Delivery>,
        settings: RouterSettings,
    ) -> Arc<Router> {
        let router = Arc::new(Router {
            store,
            assistant,
            actions,
            channels,
            metrics,
            delivery,
            settings,
            lanes: std::sync::OnceLock::new(),
            accepting: AtomicBool::new(true),
            conversations: dashmap::DashMap::new(),
            linked_emails: dashmap::DashSet::new(),
        });
        let weak = Arc::downgrade(&router);
        let lanes = Lanes::new(Arc::new(move |job: Job| {
            let router = weak.upgrade();
            Box::pin(async move {
                if let Some(router) = router {
                    router.take_turn(job).await;
                }
            })
        }));
        let _ = router.lanes.set(lanes);
        router
    }

    fn lanes(&self) -> &Arc<Lanes<Job>> {
        self.lanes.get().expect("lanes are set in Router::new")
    }

    /// Queue every stored message that never got its turn (a crash interrupted it).
    /// Call before accepting new messages, so that they queue behind the old ones.
    pub async fn recover(&self) -> Result<usize, crate::store::StoreError> {
        let pending = self.store.unhandled_inbound().await?;
        let count = pending.len();
        for message in pending {
            self.lanes().push(
                &message.conversation_id.clone(),
                Job {
                    message_id: message.message_id,
                    conversation_id: message.conversation_id,
                    text: message.text,
                    received: Instant::now(),
                },
            );
        }
        if count > 0 {
            tracing::info!(count, "replaying messages that had not been handled");
        }
        Ok(count)
    }

    /// Refuse new messages (connectors answer "unavailable", so clients resend later), then
    /// wait for every queued turn to finish.
    pub async fn drain(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.lanes().drain().await;
    }

    async fn take_turn(&self, job: Job) {
        // The database may be briefly unavailable; the message is stored, so keep trying
        // (a restart would replay it anyway).
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_turn(&job).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(message = %job.message_id, error = %error, "turn failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn conversation(&self, id: &str) -> Result<Conversation, StoreError> {
        if let Some(conversation) = self.conversations.get(id) {
            return Ok(conversation.clone());
        }
        let conversation = self.store.conversation(id).await?;
        if self.conversations.len() >= CACHED_CONVERSATIONS {
            self.conversations.clear();
        }
        self.conversations
            .insert(id.to_string(), conversation.clone());
        Ok(conversation)
    }

    async fn try_turn(&self, job: &Job) -> Result<(), StoreError> {
        loop {
            let conversation = self.conversation(&job.conversation_id).await?;
            let commit = if conversation.status == "bot" {
                let mut reply = self.ask_assistant(&conversation, job).await;
                self.run_actions(&conversation, job, &mut reply).await;
                self.commit_for_bot(&conversation, job, reply)
            } else {
                // A queue or an agent owns the conversation: the bot stays silent.
                TurnCommit {
                    conversation_id: conversation.id.clone(),
                    inbound_message_id: job.message_id.clone(),
                    ..TurnCommit::default()
                }
            };
            let committed = match self
                .store
                .commit_turn(
                    &conversation,
                    &commit,
                    self.delivery.instance(),
                    self.delivery.lease(),
                )
                .await
            {
                Ok(committed) => committed,
                Err(StoreError::OwnerChanged(_)) => {
                    // Taken over (or changed) while the turn ran: redo it on the fresh row.
                    tracing::debug!(conversation = %conversation.id, "conversation changed during the turn, redoing it");
                    self.conversations.remove(&conversation.id);
                    continue;
                }
                Err(error) => {
                    self.conversations.remove(&conversation.id);
                    return Err(error);
                }
            };
            self.remember(conversation, &commit, committed.version);
            self.metrics.router_latency.observe(job.received.elapsed());
            if commit.transfer.is_some() {
                self.metrics.handoff();
            }
            self.delivery.submit(committed.outbox);
            return Ok(());
        }
    }

    /// Keep the conversation as the committed turn left it.
    fn remember(&self, mut conversation: Conversation, commit: &TurnCommit, version: i64) {
        if let Some(state) = &commit.assistant_state {
            conversation.assistant_state = state.clone();
        }
        if let Some(language) = &commit.language {
            conversation.language = Some(language.clone());
        }
        if let Some(transfer) = &commit.transfer {
            conversation.status = transfer.status.to_string();
            conversation.owner = transfer.owner.clone();
        }
        conversation.updated_at_ms = version;
        self.conversations
            .insert(conversation.id.clone(), conversation);
    }

    async fn ask_assistant(&self, conversation: &Conversation, job: &Job) -> Reply {
        let turn = Turn {
            conversation_id: conversation.id.clone(),
            contact_id: conversation.contact_id.clone(),
            channel: conversation.channel.clone(),
            verified: conversation.verified,
            text: job.text.clone(),
            language: conversation.language.clone(),
            state: conversation.assistant_state.clone(),
        };
        let respond = self.assistant.respond(&turn);
        tokio::pin!(respond);
        let typing_after = Duration::from_millis(self.settings.typing_after_ms);
        let outcome = tokio::select! {
            outcome = &mut respond => outcome,
            _ = tokio::time::sleep(typing_after) => {
                self.typing(conversation, true).await;
                let outcome = respond.await;
                self.typing(conversation, false).await;
                outcome
            }
        };
        match outcome {
            Ok(reply) => reply,
            Err(error) => {
                tracing::error!(conversation = %conversation.id, error = %error, "assistant failed, handing over");
                Reply {
                    messages: vec![
                        "Sorry, something went wrong on our side. A person will take over.".into(),
                    ],
                    handoff: Some(crate::assistant::Handoff {
                        reason: "assistant_error".into(),
                        queue: None,
                        summary: serde_json::json!({"error": error.to_string()}),
                    }),
                    ..Reply::default()
                }
            }
        }
    }

    /// Carry out the assistant's actions before the turn commits, so that what came of them
    /// is said in the same turn. Keyed by the inbound message: a redone turn (a crash before
    /// the commit, a takeover) replays them instead of doing them twice.
    async fn run_actions(&self, conversation: &Conversation, job: &Job, reply: &mut Reply) {
        if reply.actions.is_empty() {
            return;
        }
        let Some(actions) = &self.actions else {
            tracing::warn!(conversation = %conversation.id, "the assistant asked for back-office actions, but none can run here");
            return;
        };
        let language = reply
            .language
            .clone()
            .or_else(|| conversation.language.clone());
        for (index, action) in std::mem::take(&mut reply.actions).iter().enumerate() {
            let key = format!("turn:{}:{index}", job.message_id);
            let said = actions
                .run(&conversation.id, language.as_deref(), action, &key)
                .await;
            reply.messages.extend(said);
        }
    }

    fn commit_for_bot(&self, conversation: &Conversation, job: &Job, reply: Reply) -> TurnCommit {
        let transfer = reply.handoff.map(|handoff| {
            let queue = handoff
                .queue
                .unwrap_or_else(|| self.settings.default_queue.clone());
            Transfer {
                status: "queued",
                owner: format!("queue:{queue}"),
                event_kind: "conversation.handoff",
                actor: "bot".into(),
                data: serde_json::json!({"reason": handoff.reason, "summary": handoff.summary}),
            }
        });
        TurnCommit {
            conversation_id: conversation.id.clone(),
            inbound_message_id: job.message_id.clone(),
            replies: reply
                .messages
                .into_iter()
                .map(|text| NewReply {
                    author: AuthorKind::Bot,
                    author_id: None,
                    text,
                })
                .collect(),
            assistant_state: reply.state,
            language: reply.language,
            transfer,
        }
    }

    /// Link the email a channel vouches for to the sender's contact, once per process.
    async fn link_email(&self, event: &InboundEvent, email: &str) -> Result<(), HostError> {
        let email = switchboard_connector::normalise_email(email);
        let key = (
            event.channel.clone(),
            event.sender.platform_user_id.clone(),
            email,
        );
        if self.linked_emails.contains(&key) {
            return Ok(());
        }
        if self.linked_emails.len() >= CACHED_CONVERSATIONS {
            self.linked_emails.clear();
        }
        let source = format!("channel:{}", event.channel);
        self.store
            .link_identity_email(&key.0, &key.1, &key.2, &source)
            .await
            .map_err(|error| {
                tracing::error!(channel = %event.channel, error = %error, "email not linked");
                HostError::Unavailable("storage unavailable".into())
            })?;
        self.linked_emails.insert(key);
        Ok(())
    }

    async fn typing(&self, conversation: &Conversation, active: bool) {
        let Ok(connector) = self.channels.get(&conversation.channel) else {
            return;
        };
        connector
            .typing(&TypingSignal {
                channel: conversation.channel.clone(),
                thread: conversation.thread.clone(),
                author: AuthorKind::Bot,
                active,
            })
            .await;
    }
}

fn validate(event: &InboundEvent) -> Result<(), HostError> {
    if event.platform_message_id.is_empty() {
        return Err(HostError::Rejected("platform message id is empty".into()));
    }
    if event.sender.platform_user_id.is_empty() || event.thread.is_empty() {
        return Err(HostError::Rejected("sender and thread are required".into()));
    }
    if event.text.trim().is_empty() && event.attachments.is_empty() {
        return Err(HostError::Rejected(
            "message has no text and no attachment".into(),
        ));
    }
    if event.text.len() > MAX_TEXT_BYTES {
        return Err(HostError::Rejected(format!(
            "text is longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(())
}

#[async_trait]
impl ConnectorHost for Router {
    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError> {
        let received = Instant::now();
        validate(&event)?;
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(HostError::Unavailable("shutting down".into()));
        }
        let stored = self.store.ingest(&event).await.map_err(|error| {
            tracing::error!(channel = %event.channel, error = %error, "inbound message not stored");
            HostError::Unavailable("storage unavailable".into())
        })?;
        if let Some(email) = event
            .sender
            .email
            .as_deref()
            .filter(|_| event.sender.verified)
        {
            // Before the turn: what the customer asks for may depend on whose orders are theirs.
            self.link_email(&event, email).await?;
        }
        if stored.duplicate {
            self.metrics.inbound_duplicate(&event.channel);
        } else {
            self.metrics.inbound(&event.channel);
            self.lanes().push(
                &stored.conversation_id,
                Job {
                    message_id: stored.message_id.clone(),
                    conversation_id: stored.conversation_id.clone(),
                    text: event.text,
                    received,
                },
            );
        }
        Ok(IngestReceipt {
            message_id: stored.message_id,
            conversation_id: stored.conversation_id,
            seq: stored.seq,
            duplicate: stored.duplicate,
        })
    }

    async fn history(
        &self,
        channel: &str,
        thread: &str,
        limit: u32,
    ) -> Result<Vec<ChannelMessage>, HostError> {
        self.store
            .history(channel, thread, limit)
            .await
            .map_err(|error| {
                tracing::error!(channel, error = %error, "history unavailable");
                HostError::Unavailable("storage unavailable".into())
            })
    }

    fn typing(&self, signal: TypingSignal) {
        // The agent console subscribes to these; until then there is no one to tell.
        tracing::trace!(channel = %signal.channel, thread = %signal.thread, active = signal.active, "customer typing");
    }
}
