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
//! [`Router::recover`] at start-up, and a committed reply waits in the outbox. A message that
//! was stored but not queued (a later step of its ingest failed) is queued when the platform
//! redelivers it, without waiting for a restart.
//!
//! Every change is published on the [`EventBus`] once it is committed. Connectors reach the
//! router through an instance-scoped host ([`crate::channels::host::InstanceHost`]).

pub mod console;
pub mod lanes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashSet;
use switchboard_connector::{
    AuthorKind, CommandReply, Connector, EventKind, HostError, InboundEvent, IngestReceipt,
    LiveEvent, RecordOnly, TypingSignal,
};

use crate::assistant::{ActionRunner, Assistant, Reply, Shop, Turn};
use crate::channels::Channels;
use crate::config::RouterSettings;
use crate::conversation::{Move, Owner, State, Status};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::outbox::Delivery;
use crate::store::{
    Conversation, IngestOptions, NewReply, PendingInbound, Store, StoreError, Transfer,
    TransferError, TurnCommit, now_ms,
};
use lanes::Lanes;

/// Longest inbound text the router stores; platforms cap far below this.
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// One inbound message waiting for its conversation's owner.
#[derive(Debug, Clone)]
pub struct Job {
    pub message_id: String,
    pub conversation_id: String,
    pub text: String,
    /// The platform's id of the message, which the replies answer.
    pub platform_message_id: Option<String>,
    pub received: Instant,
    /// A command the channel answers itself (a channel's `CommandReply`, such as Telegram's
    /// `/start` or `/human`): the bot's turn says its reply (and hands over if it asks to), the
    /// assistant is not asked. Kept with the stored message, so a message replayed after a
    /// restart is still the command.
    pub command: Option<CommandReply>,
}

impl Job {
    /// The job of a stored message that never got its turn.
    fn replay(message: PendingInbound) -> Job {
        Job {
            command: message.extensions.get::<CommandReply>(),
            message_id: message.message_id,
            conversation_id: message.conversation_id,
            text: message.text,
            platform_message_id: message.platform_message_id,
            received: Instant::now(),
        }
    }
}

pub struct Router {
    store: Store,
    assistant: Arc<dyn Assistant>,
    /// Carries out what the assistant asks of the back office (the workflow).
    actions: Option<Arc<dyn ActionRunner>>,
    /// The shop as each conversation's customer sees it, handed to the assistant per turn.
    shop: Option<Arc<dyn Shop>>,
    channels: Arc<Channels>,
    metrics: Arc<Metrics>,
    delivery: Arc<Delivery>,
    bus: Arc<dyn EventBus>,
    settings: RouterSettings,
    lanes: std::sync::OnceLock<Arc<Lanes<Job>>>,
    accepting: AtomicBool,
    /// Conversations as the last turn left them, so a turn need not read its row first. A
    /// stale entry is harmless: the turn's commit is guarded by the row's version and is redone
    /// on the fresh row if anything changed it. Bounded, least recently used out first.
    conversations: quick_cache::sync::Cache<String, Conversation>,
    /// The open conversation of a channel thread, for publishing presence.
    threads: quick_cache::sync::Cache<(String, String), String>,
    /// Channel identities whose vouched-for email is linked already: `(channel, user, email)`.
    linked_emails: quick_cache::sync::Cache<(String, String, String), ()>,
    /// Messages queued on a lane and not yet through their turn.
    queued: DashSet<String>,
    /// Whether a queue's people are there when the bot hands over (business hours).
    handoff: Option<Arc<dyn HandoffPolicy>>,
    /// Threads whose customer just rated their resolved conversation: their next message
    /// within the window is the rating's comment, `(conversation id, until ms)`.
    awaiting_comment: quick_cache::sync::Cache<(String, String), (String, i64)>,
}

/// What becomes of a handoff to a queue whose people are away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffDecision {
    Open,
    /// Out of hours: tell the customer `notice` (when people are back), and either wait in
    /// the queue or, with `back_to_bot`, stay with the bot.
    Closed {
        notice: String,
        back_to_bot: bool,
    },
}

/// Decides handoffs by the queue's business hours.
pub trait HandoffPolicy: Send + Sync {
    fn decide(&self, queue: &str, language: Option<&str>) -> HandoffDecision;
}

impl Router {
    pub fn new(parts: RouterParts) -> Arc<Router> {
        let cached = parts.settings.cached_conversations.max(1);
        let router = Arc::new(Router {
            store: parts.store,
            assistant: parts.assistant,
            actions: parts.actions,
            shop: parts.shop,
            channels: parts.channels,
            metrics: parts.metrics,
            delivery: parts.delivery,
            bus: parts.bus,
            settings: parts.settings,
            lanes: std::sync::OnceLock::new(),
            accepting: AtomicBool::new(true),
            conversations: quick_cache::sync::Cache::new(cached),
            threads: quick_cache::sync::Cache::new(cached),
            linked_emails: quick_cache::sync::Cache::new(cached),
            queued: DashSet::new(),
            handoff: parts.handoff,
            awaiting_comment: quick_cache::sync::Cache::new(10_000),
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

    /// How many conversations a per-conversation cache keeps (`router.cached_conversations`):
    /// the one bound for every such cache of the process.
    pub fn cached_conversations(&self) -> usize {
        self.settings.cached_conversations.max(1)
    }

    fn lanes(&self) -> &Arc<Lanes<Job>> {
        self.lanes.get().expect("lanes are set in Router::new")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    fn queue(&self, job: Job) {
        self.queued.insert(job.message_id.clone());
        let lane = job.conversation_id.clone();
        self.lanes().push(&lane, job);
    }

    /// Queue every stored message that never got its turn (a crash interrupted it).
    /// Call before accepting new messages, so that they queue behind the old ones.
    pub async fn recover(&self) -> Result<usize, crate::store::StoreError> {
        let pending = self.store.unhandled_inbound().await?;
        let count = pending.len();
        for message in pending {
            self.queue(Job::replay(message));
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
                Ok(()) => {
                    self.queued.remove(&job.message_id);
                    return;
                }
                Err(error) => {
                    tracing::warn!(message = %job.message_id, error = %error, "turn failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Who has the conversation now, as this router last committed it (read from the store
    /// once if it is not cached).
    pub async fn status(&self, conversation_id: &str) -> Result<Status, StoreError> {
        Ok(self.conversation(conversation_id).await?.state.status)
    }

    async fn conversation(&self, id: &str) -> Result<Conversation, StoreError> {
        if let Some(conversation) = self.conversations.get(id) {
            return Ok(conversation);
        }
        let conversation = self.store.conversation(id).await?;
        self.conversations
            .insert(id.to_string(), conversation.clone());
        Ok(conversation)
    }

    async fn try_turn(&self, job: &Job) -> Result<(), StoreError> {
        loop {
            let conversation = self.conversation(&job.conversation_id).await?;
            let commit = if conversation.state.status == Status::Bot {
                let mut reply = match &job.command {
                    Some(command) => Reply {
                        messages: vec![command.reply.clone()],
                        handoff: command
                            .handoff
                            .as_ref()
                            .map(|reason| crate::assistant::Handoff {
                                reason: "customer_request".into(),
                                queue: None,
                                // What the console's handoff box shows, as far as a
                                // command tells it: no classifier ran.
                                summary: serde_json::json!({
                                    "requested": reason,
                                    "last_message": job.text,
                                    "language": conversation.language,
                                }),
                            }),
                        ..Reply::default()
                    },
                    None => self.ask_assistant(&conversation, job).await,
                };
                self.run_actions(&conversation, job, &mut reply).await;
                self.commit_for_bot(&conversation, job, reply)
            } else {
                // A queue or an agent owns the conversation: the bot stays silent.
                TurnCommit {
                    conversation_id: conversation.id.clone(),
                    inbound_message_id: job.message_id.clone(),
                    inbound_platform_id: job.platform_message_id.clone(),
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
            self.bus.publish(&committed.events);
            self.remember(conversation, &commit, committed.state);
            self.metrics.router_latency.observe(job.received.elapsed());
            if commit.transfer.is_some() {
                self.metrics.handoff();
            }
            self.delivery.submit(committed.outbox);
            return Ok(());
        }
    }

    /// Keep the conversation as the committed turn left it.
    fn remember(&self, mut conversation: Conversation, commit: &TurnCommit, state: State) {
        if let Some(assistant_state) = &commit.assistant_state {
            conversation.assistant_state = assistant_state.clone();
        }
        if let Some(language) = &commit.language {
            conversation.language = Some(language.clone());
        }
        conversation.state = state;
        self.conversations
            .insert(conversation.id.clone(), conversation);
    }

    /// Move a conversation to a new owner, or resolve it (an agent taking over, a hand-back,
    /// the console resolving), if the rules allow it and, with `expected_version`, nobody
    /// changed it since it was read. Turns in flight for the old owner then commit nothing.
    pub async fn transfer(
        &self,
        conversation_id: &str,
        transfer: &Transfer,
        expected_version: Option<i64>,
    ) -> Result<State, TransferError> {
        let result = self
            .store
            .transfer_conversation(conversation_id, transfer, expected_version)
            .await;
        self.conversations.remove(conversation_id);
        let (state, event) = result?;
        self.bus.publish(std::slice::from_ref(&event));
        Ok(state)
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
            shop: self.shop.clone(),
            draft: self.draft_sink(conversation),
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
        let language = reply
            .language
            .clone()
            .or_else(|| conversation.language.clone());
        let mut notice = None;
        let transfer = reply.handoff.and_then(|handoff| {
            let queue = handoff
                .queue
                .unwrap_or_else(|| self.settings.default_queue.clone());
            let decision = match &self.handoff {
                Some(policy) => policy.decide(&queue, language.as_deref()),
                None => HandoffDecision::Open,
            };
            let mut data =
                serde_json::json!({"reason": handoff.reason, "summary": handoff.summary});
            if let HandoffDecision::Closed {
                notice: text,
                back_to_bot,
            } = decision
            {
                notice = Some(text);
                if back_to_bot {
                    return None;
                }
                data["out_of_hours"] = true.into();
            }
            Some(Transfer {
                to: Move::To(Owner::Queue(queue)),
                change: "handoff".into(),
                actor: "bot".into(),
                data,
            })
        });
        let mut replies: Vec<NewReply> = reply.messages.into_iter().map(NewReply::bot).collect();
        if !reply.choices.is_empty()
            && let Some(last) = replies.last_mut()
        {
            last.choices = reply.choices;
        }
        if let Some(text) = notice {
            replies.push(NewReply {
                author: AuthorKind::System,
                ..NewReply::bot(text)
            });
        }
        TurnCommit {
            conversation_id: conversation.id.clone(),
            inbound_message_id: job.message_id.clone(),
            inbound_platform_id: job.platform_message_id.clone(),
            replies,
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
        if self.linked_emails.get(&key).is_some() {
            return Ok(());
        }
        let source = format!("channel:{}", event.channel);
        self.store
            .link_identity_email(&key.0, &key.1, &key.2, &source)
            .await
            .map_err(|error| {
                tracing::error!(channel = %event.channel, error = %error, "email not linked");
                HostError::Unavailable("storage unavailable".into())
            })?;
        self.linked_emails.insert(key, ());
        Ok(())
    }

    /// Where the assistant may show its reply as it is written, if the channel can.
    fn draft_sink(
        &self,
        conversation: &Conversation,
    ) -> Option<Arc<dyn crate::assistant::DraftSink>> {
        let instance = self.channels.get(&conversation.channel).ok()?;
        instance.connector.capabilities().drafts.then(|| {
            Arc::new(ChannelDraft {
                connector: instance.connector.clone(),
                channel: conversation.channel.clone(),
                thread: conversation.thread.clone(),
            }) as Arc<dyn crate::assistant::DraftSink>
        })
    }

    async fn typing(&self, conversation: &Conversation, active: bool) {
        let signal = TypingSignal {
            channel: conversation.channel.clone(),
            thread: conversation.thread.clone(),
            author: AuthorKind::Bot,
            active,
        };
        self.publish_typing(&conversation.id, &signal);
        let Ok(instance) = self.channels.get(&conversation.channel) else {
            return;
        };
        instance.connector.typing(&signal).await;
    }

    /// Presence is published, not stored.
    fn publish_typing(&self, conversation_id: &str, signal: &TypingSignal) {
        self.bus.publish(&[LiveEvent {
            conversation_id: conversation_id.to_string(),
            channel: signal.channel.clone(),
            thread: signal.thread.clone(),
            seq: 0,
            kind: EventKind::Typing,
            actor: signal.author.as_str().to_string(),
            data: serde_json::json!({"author": signal.author, "active": signal.active}),
            created_at_ms: now_ms(),
        }]);
    }

    /// The customer is typing on `channel` (not stored; the console sees it live).
    pub fn customer_typing(&self, channel: &str, signal: TypingSignal) {
        let key = (channel.to_string(), signal.thread.clone());
        let conversation_id = self.threads.get(&key).unwrap_or_default();
        self.publish_typing(&conversation_id, &signal);
    }
}

/// A conversation's channel, as the place its assistant shows drafts.
struct ChannelDraft {
    connector: Arc<dyn Connector>,
    channel: String,
    thread: String,
}

impl std::fmt::Debug for ChannelDraft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelDraft")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl crate::assistant::DraftSink for ChannelDraft {
    fn draft(&self, text_so_far: &str) {
        self.connector.draft(&switchboard_connector::DraftSignal {
            channel: self.channel.clone(),
            thread: self.thread.clone(),
            text: text_so_far.to_string(),
        });
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

impl Router {
    /// Store an inbound event durably (deduplicated on its platform id) and queue it for its
    /// conversation's owner.
    pub async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError> {
        let received = Instant::now();
        validate(&event)?;
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(HostError::Unavailable("shutting down".into()));
        }
        // A rating of a resolved conversation (or its comment) belongs to that conversation.
        if let Some(receipt) = self.take_rating(&event).await? {
            return Ok(receipt);
        }
        // A message nobody should answer (an auto-reply, a bounce, imported history) is kept for
        // people to read only: two automatic responders must never answer each other.
        let record_only = event.extensions.get::<RecordOnly>();
        let options = IngestOptions {
            reopen_resolved: self.settings.reopen_resolved,
            record_only: record_only.is_some(),
        };
        let stored = self.store.ingest(&event, options).await.map_err(|error| {
            tracing::error!(channel = %event.channel, error = %error, "inbound message not stored");
            HostError::Unavailable("storage unavailable".into())
        })?;
        if stored.other_thread {
            // Not this thread's message: nothing of it is stored, queued or linked, and the
            // conversation the id belongs to is left alone.
            tracing::warn!(
                channel = %event.channel,
                thread = %event.thread,
                platform_message_id = %event.platform_message_id,
                "message dropped: its platform id is already stored for another thread (a reused email Message-ID?)"
            );
            self.metrics.inbound_duplicate(&event.channel);
            return Ok(IngestReceipt {
                message_id: stored.message_id,
                conversation_id: stored.conversation_id,
                seq: stored.seq,
                duplicate: true,
            });
        }
        if stored.reopened {
            self.conversations.remove(&stored.conversation_id);
        }
        self.bus.publish(&stored.events);
        self.threads.insert(
            (event.channel.clone(), event.thread.clone()),
            stored.conversation_id.clone(),
        );
        if let Some(email) = event
            .sender
            .email
            .as_deref()
            .filter(|_| event.sender.verified)
        {
            // Before the turn: what the customer asks for may depend on whose orders are
            // theirs. If this fails the message is stored but not queued; the client is told
            // to resend, and the resend queues it (below).
            self.link_email(&event, email).await?;
        }
        if stored.duplicate {
            self.metrics.inbound_duplicate(&event.channel);
            // Stored earlier but never queued (a later step of that ingest failed): queue it
            // now rather than at the next restart.
            if !stored.handled && !self.queued.contains(&stored.message_id) {
                self.requeue(&stored.message_id).await?;
            }
        } else if let Some(record_only) = record_only {
            self.metrics.inbound(&event.channel);
            tracing::info!(
                channel = %event.channel,
                conversation = %stored.conversation_id,
                reason = %record_only.reason,
                "message recorded, not answered"
            );
        } else {
            self.metrics.inbound(&event.channel);
            self.queue(Job {
                message_id: stored.message_id.clone(),
                conversation_id: stored.conversation_id.clone(),
                text: event.text,
                platform_message_id: Some(event.platform_message_id),
                received,
                command: event.extensions.get::<CommandReply>(),
            });
        }
        Ok(IngestReceipt {
            message_id: stored.message_id,
            conversation_id: stored.conversation_id,
            seq: stored.seq,
            duplicate: stored.duplicate,
        })
    }

    async fn requeue(&self, message_id: &str) -> Result<(), HostError> {
        let pending = self
            .store
            .unhandled_message(message_id)
            .await
            .map_err(|error| {
                tracing::error!(message = message_id, error = %error, "stored message not read back");
                HostError::Unavailable("storage unavailable".into())
            })?;
        if let Some(message) = pending
            && !self.queued.contains(&message.message_id)
        {
            tracing::info!(
                message = message_id,
                "queueing a stored message that was never queued"
            );
            self.queue(Job::replay(message));
        }
        Ok(())
    }
}

/// What a router is built from.
pub struct RouterParts {
    pub store: Store,
    pub assistant: Arc<dyn Assistant>,
    /// Carries out what the assistant asks of the back office (the workflow).
    pub actions: Option<Arc<dyn ActionRunner>>,
    /// What the assistant may look up in the shop (products, the customer's orders, prices).
    pub shop: Option<Arc<dyn Shop>>,
    pub channels: Arc<Channels>,
    pub metrics: Arc<Metrics>,
    pub delivery: Arc<Delivery>,
    pub bus: Arc<dyn EventBus>,
    pub settings: RouterSettings,
    /// Business hours of the queues handoffs go to; None: always open.
    pub handoff: Option<Arc<dyn HandoffPolicy>>,
}
