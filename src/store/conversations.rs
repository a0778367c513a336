//! Conversations and their messages: ingest at the door, history, turns, ownership moves.
//!
//! Every write here also writes the conversation's events (see [`super::events`]) in the same
//! script or transaction, and returns them as [`LiveEvent`]s for the caller to publish once
//! the write is durable.

use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use switchboard_connector::{
    AuthorKind, ChannelMessage, Choice, EventKind, Extensions, InboundEvent, LiveEvent, MessageRef,
};

use super::events::{MessageFields, NewEvent, Place, live, no_data, with_message};
use super::outbox::OutboxRow;
use super::script::{Returns, Statement};
use super::transfers::{Transfer, owner_change_data};
use super::{
    Backend, MESSAGE_COLUMNS, Store, StoreError, StoreResult, json_text, message_of, new_id, now_ms,
};
use crate::conversation::{Move, Owner, State, Status};

/// A conversation as the router needs it.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: String,
    pub contact_id: String,
    /// The channel instance it lives on; replies leave through it.
    pub channel: String,
    pub thread: String,
    pub state: State,
    pub language: Option<String>,
    pub assistant_state: serde_json::Value,
    pub verified: bool,
}

/// How the router wants an inbound event stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// A message on the thread of a resolved conversation reopens it to the bot; otherwise it
    /// opens a new conversation on the thread.
    pub reopen_resolved: bool,
    /// Store the message as already handled, so no owner answers it (a machine's message:
    /// see `switchboard_connector::RecordOnly`). It joins the thread's latest conversation
    /// whatever its status, and reopens nothing.
    pub record_only: bool,
}

/// The result of storing an inbound event.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub message_id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub duplicate: bool,
    /// A duplicate whose original came on another thread of the channel: the platform reused
    /// an id (a forged or broken email `Message-ID`), and this message was not stored.
    pub other_thread: bool,
    /// Whether the owner has taken the message yet (false for a new one, unless recorded only).
    pub handled: bool,
    /// The message reopened a resolved conversation (its state changed).
    pub reopened: bool,
    /// The events written, to publish.
    pub events: Vec<LiveEvent>,
}

/// An inbound message the router still owes a turn (after a crash, or just ingested).
#[derive(Debug, Clone)]
pub struct PendingInbound {
    pub message_id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub text: String,
    pub platform_message_id: Option<String>,
    /// What the channel said beyond the text (a command's reply, say), as stored.
    pub extensions: Extensions,
}

/// A reply to store and queue for delivery in the same transaction.
#[derive(Debug, Clone)]
pub struct NewReply {
    pub author: AuthorKind,
    pub author_id: Option<String>,
    pub text: String,
    pub choices: Vec<Choice>,
}

impl NewReply {
    pub fn bot(text: impl Into<String>) -> NewReply {
        NewReply {
            author: AuthorKind::Bot,
            author_id: None,
            text: text.into(),
            choices: Vec::new(),
        }
    }
}

/// Everything one turn of the owner decided, committed atomically with marking the inbound
/// message handled: a crash either loses the whole turn (and it is redone) or none of it.
#[derive(Debug, Clone, Default)]
pub struct TurnCommit {
    pub conversation_id: String,
    pub inbound_message_id: String,
    /// The platform's id of the inbound message, which the replies answer.
    pub inbound_platform_id: Option<String>,
    pub replies: Vec<NewReply>,
    pub assistant_state: Option<serde_json::Value>,
    pub language: Option<String>,
    /// A change of owner, with the event that explains it.
    pub transfer: Option<Transfer>,
}

/// What a committed turn left behind.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Replies to deliver, reserved for this instance.
    pub outbox: Vec<OutboxRow>,
    /// The conversation's state after the turn.
    pub state: State,
    pub events: Vec<LiveEvent>,
}

fn state_of(row: &sqlx::any::AnyRow) -> StoreResult<State> {
    let status: &str = row.try_get("status")?;
    let owner: &str = row.try_get("owner")?;
    Ok(State {
        status: Status::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("conversation status {status}")))?,
        owner: Owner::parse(owner)
            .ok_or_else(|| StoreError::Corrupt(format!("conversation owner {owner}")))?,
        version: row.try_get("version")?,
    })
}

impl Store {
    /// Store an inbound event once. The `(channel, platform_message_id)` unique constraint is
    /// the dedupe: a redelivery inserts nothing and returns the original message.
    pub async fn ingest(
        &self,
        event: &InboundEvent,
        options: IngestOptions,
    ) -> StoreResult<Ingested> {
        // Unique-constraint races (two instances opening the same conversation, or taking the
        // same number) and a conversation changed under a reopen are settled by retrying: the
        // second try sees the winner's rows.
        self.retrying(
            |error: &StoreError| {
                error.is_unique_violation() || matches!(error, StoreError::OwnerChanged(_))
            },
            || self.try_ingest(event, options),
        )
        .await
    }

    async fn try_ingest(
        &self,
        event: &InboundEvent,
        options: IngestOptions,
    ) -> StoreResult<Ingested> {
        let now = now_ms();
        let handled_at = options.record_only.then_some(now);
        let message_id = new_id();
        let attachments = json_text(&event.attachments)?;
        let extensions = json_text(&event.extensions)?;
        let stored = NewEvent {
            kind: EventKind::MessageStored,
            actor: "customer".into(),
            data: event_data_of(event),
            message_id: Some(message_id.clone()),
        };
        // The common case in one script: the thread has an open conversation. The event
        // reads the message the first statement wrote: on SQLite the statements run in turn
        // (a message not written, a redelivery or no open conversation, fails the event's
        // guard: see `Statement::guarded`), on PostgreSQL it reads the first statement's
        // RETURNING rows (`s0`).
        let event_sql = match self.backend() {
            Backend::Sqlite => {
                "INSERT INTO conversation_events \
                 (conversation_id, seq, kind, actor, data, message_id, created_at) \
                 VALUES ((SELECT conversation_id FROM messages WHERE id = $1), \
                 COALESCE((SELECT e.seq FROM conversation_events e WHERE e.conversation_id = \
                 (SELECT conversation_id FROM messages WHERE id = $1) \
                 ORDER BY e.seq DESC LIMIT 1), 0) + 1, \
                 'message.stored', 'customer', $2, $1, $3) RETURNING seq"
            }
            Backend::Postgres => {
                "INSERT INTO conversation_events \
                 (conversation_id, seq, kind, actor, data, message_id, created_at) \
                 SELECT m.conversation_id, COALESCE((SELECT e.seq FROM conversation_events e \
                 WHERE e.conversation_id = m.conversation_id ORDER BY e.seq DESC LIMIT 1), 0) \
                 + 1, 'message.stored', 'customer', $2, $1, $3 FROM s0 m RETURNING seq"
            }
        };
        // On SQLite a single-row INSERT ... VALUES, the open conversation feeding its NOT NULL
        // `conversation_id` (no open conversation fails the guard): an INSERT ... SELECT runs
        // with a statement journal. PostgreSQL runs the script as one statement whose event
        // reads this one's RETURNING rows, so a failed guard there would fail the whole
        // script instead of just finding no conversation.
        let message_sql = match self.backend() {
            Backend::Sqlite => {
                "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                 author_id, text, attachments, channel, platform_message_id, platform_sent_at, \
                 created_at, extensions, handled_at) \
                 VALUES ($1, (SELECT id FROM conversations \
                 WHERE channel = $5 AND thread = $9 AND status <> 'resolved'), \
                 (SELECT COALESCE(MAX(m.seq), 0) + 1 FROM messages m WHERE m.conversation_id = \
                 (SELECT id FROM conversations \
                 WHERE channel = $5 AND thread = $9 AND status <> 'resolved')), \
                 'in', 'customer', $2, $3, $4, $5, $6, $7, $8, $10, $11) \
                 ON CONFLICT (channel, platform_message_id) DO NOTHING \
                 RETURNING conversation_id, seq"
            }
            Backend::Postgres => {
                "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                 author_id, text, attachments, channel, platform_message_id, platform_sent_at, \
                 created_at, extensions, handled_at) \
                 SELECT $1, c.id, \
                 (SELECT COALESCE(MAX(m.seq), 0) + 1 FROM messages m WHERE m.conversation_id = c.id), \
                 'in', 'customer', $2, $3, $4, $5, $6, $7, $8, $10, $11 \
                 FROM conversations c \
                 WHERE c.channel = $5 AND c.thread = $9 AND c.status <> 'resolved' \
                 ON CONFLICT (channel, platform_message_id) DO NOTHING \
                 RETURNING conversation_id, seq"
            }
        };
        let mut message = Statement::new(
            message_sql,
            vec![
                (&message_id).into(),
                (&event.sender.platform_user_id).into(),
                (&event.text).into(),
                (&attachments).into(),
                (&event.channel).into(),
                (&event.platform_message_id).into(),
                event.sent_at_ms.into(),
                now.into(),
                (&event.thread).into(),
                (&extensions).into(),
                handled_at.into(),
            ],
        )
        .returning_as("conversation_id", Returns::Text)
        .returning_as("seq", Returns::Int);
        if self.backend() == Backend::Sqlite {
            message = message.guarded();
        }
        let script = vec![
            message,
            Statement::new(
                event_sql,
                vec![
                    (&message_id).into(),
                    stored.data.to_string().into(),
                    now.into(),
                ],
            )
            .returning("seq")
            .guarded(),
        ];
        let returned = self.run_script_rows(script).await?;
        if let [Some(message), Some(event_row)] = returned.as_slice() {
            let conversation_id = message.text(0)?;
            let seq = message.int(1)?;
            let event_seq = event_row.int(0)?;
            let place = Place {
                conversation_id: &conversation_id,
                channel: &event.channel,
                thread: &event.thread,
            };
            let data = inbound_event_data(&stored, &message_id, seq, event);
            let events = vec![live(&place, event_seq, &stored, data, now)];
            return Ok(Ingested {
                message_id,
                conversation_id,
                seq,
                duplicate: false,
                other_thread: false,
                handled: options.record_only,
                reopened: false,
                events,
            });
        }
        // Nothing inserted: a redelivery, or no open conversation on the thread.
        if let Some(existing) = self
            .existing(&event.channel, &event.thread, &event.platform_message_id)
            .await?
        {
            return Ok(existing);
        }
        let mut tx = self.write.begin().await?;
        let latest = if options.reopen_resolved || options.record_only {
            latest_on_thread(&mut tx, &event.channel, &event.thread).await?
        } else {
            None
        };
        fn place_of<'a>(conversation_id: &'a str, event: &'a InboundEvent) -> Place<'a> {
            Place {
                conversation_id,
                channel: &event.channel,
                thread: &event.thread,
            }
        }
        let mut reopened = false;
        let mut events = Vec::new();
        // The message's number and its event's number in the conversation it joins.
        let (conversation_id, seq, event_seq) = match latest {
            Some((conversation_id, state)) => {
                let (last_message, mut last_event) =
                    last_numbers(&mut tx, &conversation_id).await?;
                if state.status == Status::Resolved && !options.record_only {
                    last_event += 1;
                    let change = reopen(&mut tx, &conversation_id, &state, last_event, now).await?;
                    let place = place_of(&conversation_id, event);
                    events.push(live(&place, last_event, &change, change.data.clone(), now));
                    reopened = true;
                }
                (conversation_id, last_message + 1, last_event + 1)
            }
            None => {
                let (conversation_id, opened) = self.open_conversation(&mut tx, event, now).await?;
                events.extend(opened);
                (conversation_id, 1, 2)
            }
        };
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, author_id, \
             text, attachments, channel, platform_message_id, platform_sent_at, created_at, \
             extensions, handled_at) \
             VALUES ($1, $2, $3, 'in', 'customer', $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&message_id)
        .bind(&conversation_id)
        .bind(seq)
        .bind(&event.sender.platform_user_id)
        .bind(&event.text)
        .bind(&attachments)
        .bind(&event.channel)
        .bind(&event.platform_message_id)
        .bind(event.sent_at_ms)
        .bind(now)
        .bind(&extensions)
        .bind(handled_at)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, &conversation_id, event_seq, &stored, now).await?;
        tx.commit().await?;
        let data = inbound_event_data(&stored, &message_id, seq, event);
        events.push(live(
            &place_of(&conversation_id, event),
            event_seq,
            &stored,
            data,
            now,
        ));
        Ok(Ingested {
            message_id,
            conversation_id,
            seq,
            duplicate: false,
            other_thread: false,
            handled: options.record_only,
            reopened,
            events,
        })
    }

    pub(in crate::store) async fn existing(
        &self,
        channel: &str,
        thread: &str,
        platform_message_id: &str,
    ) -> StoreResult<Option<Ingested>> {
        let row = sqlx::query(
            "SELECT m.id, m.conversation_id, m.seq, m.handled_at, c.thread \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.channel = $1 AND m.platform_message_id = $2",
        )
        .bind(channel)
        .bind(platform_message_id)
        .fetch_optional(&self.write)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Ingested {
            message_id: row.try_get("id")?,
            conversation_id: row.try_get("conversation_id")?,
            seq: row.try_get("seq")?,
            duplicate: true,
            other_thread: row.try_get::<&str, _>("thread")? != thread,
            handled: row.try_get::<Option<i64>, _>("handled_at")?.is_some(),
            reopened: false,
            events: Vec::new(),
        }))
    }

    /// Find or create the contact, then open a conversation owned by the bot (its event is
    /// the conversation's first).
    async fn open_conversation(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &InboundEvent,
        now: i64,
    ) -> StoreResult<(String, Vec<LiveEvent>)> {
        let sender = &event.sender;
        let existing = sqlx::query(
            "SELECT contact_id FROM contact_identities WHERE channel = $1 AND platform_user_id = $2",
        )
        .bind(&event.channel)
        .bind(&sender.platform_user_id)
        .fetch_optional(&mut **tx)
        .await?;
        let contact_id = match existing {
            Some(row) => {
                if sender.username.is_some() {
                    sqlx::query(
                        "UPDATE contact_identities SET username = $3 \
                         WHERE channel = $1 AND platform_user_id = $2",
                    )
                    .bind(&event.channel)
                    .bind(&sender.platform_user_id)
                    .bind(&sender.username)
                    .execute(&mut **tx)
                    .await?;
                }
                row.try_get::<String, _>("contact_id")?
            }
            None => {
                let contact_id = new_id();
                sqlx::query(
                    "INSERT INTO contacts (id, display_name, created_at) VALUES ($1, $2, $3)",
                )
                .bind(&contact_id)
                .bind(&sender.display_name)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO contact_identities \
                     (channel, platform_user_id, contact_id, verified, created_at, username) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&event.channel)
                .bind(&sender.platform_user_id)
                .bind(&contact_id)
                .bind(i64::from(sender.verified))
                .bind(now)
                .bind(&sender.username)
                .execute(&mut **tx)
                .await?;
                contact_id
            }
        };
        let conversation_id = new_id();
        sqlx::query(
            "INSERT INTO conversations \
             (id, contact_id, channel, thread, status, owner, created_at, updated_at, version, \
              language) \
             VALUES ($1, $2, $3, $4, 'bot', 'bot', $5, $5, 0, $6)",
        )
        .bind(&conversation_id)
        .bind(&contact_id)
        .bind(&event.channel)
        .bind(&event.thread)
        .bind(now)
        // The language the platform reports for the person (Telegram's `language_code`) seeds
        // the conversation's; the assistant may still change it from what they write.
        .bind(sender.language.clone())
        .execute(&mut **tx)
        .await?;
        let opened = NewEvent {
            kind: EventKind::ConversationOpened,
            actor: "router".into(),
            data: serde_json::json!({"channel": event.channel, "owner": "bot", "status": "bot"}),
            message_id: None,
        };
        insert_event(tx, &conversation_id, 1, &opened, now).await?;
        let place = Place {
            conversation_id: &conversation_id,
            channel: &event.channel,
            thread: &event.thread,
        };
        let events = vec![live(&place, 1, &opened, opened.data.clone(), now)];
        Ok((conversation_id, events))
    }

    /// The latest `limit` messages of the open conversation on a channel thread, oldest first.
    pub async fn history(
        &self,
        channel: &str,
        thread: &str,
        limit: u32,
    ) -> StoreResult<Vec<ChannelMessage>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = \
             (SELECT id FROM conversations WHERE channel = $1 AND thread = $2 \
              AND status <> 'resolved') \
             ORDER BY seq DESC LIMIT $3"
        )))
        .bind(channel)
        .bind(thread)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut messages = rows
            .iter()
            .map(message_of)
            .collect::<StoreResult<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// Every message of a conversation in order.
    pub async fn conversation_messages(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Vec<ChannelMessage>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq"
        )))
        .bind(conversation_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(message_of).collect()
    }

    /// Our message behind a platform id on a channel instance.
    pub async fn find_message(
        &self,
        channel: &str,
        platform_message_id: &str,
    ) -> StoreResult<Option<MessageRef>> {
        let row = sqlx::query(
            "SELECT m.id, m.conversation_id, c.thread, m.author_kind, c.status \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.channel = $1 AND m.platform_message_id = $2",
        )
        .bind(channel)
        .bind(platform_message_id)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let author: &str = row.try_get("author_kind")?;
        let status: &str = row.try_get("status")?;
        Ok(Some(MessageRef {
            message_id: row.try_get("id")?,
            conversation_id: row.try_get("conversation_id")?,
            thread: row.try_get("thread")?,
            author: super::author_of(author)?,
            open: status != Status::Resolved.as_str(),
        }))
    }

    pub async fn conversation(&self, id: &str) -> StoreResult<Conversation> {
        let row = sqlx::query(
            "SELECT c.id, c.contact_id, c.channel, c.thread, c.status, c.owner, c.version, \
             c.language, c.assistant_state, \
             (SELECT MAX(i.verified) FROM contact_identities i \
              WHERE i.contact_id = c.contact_id AND i.channel = c.channel) AS verified \
             FROM conversations c WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("conversation {id}")))?;
        let state: &str = row.try_get("assistant_state")?;
        Ok(Conversation {
            id: row.try_get("id")?,
            contact_id: row.try_get("contact_id")?,
            channel: row.try_get("channel")?,
            thread: row.try_get("thread")?,
            state: state_of(&row)?,
            language: row.try_get("language")?,
            assistant_state: serde_json::from_str(state)
                .map_err(|error| StoreError::Corrupt(format!("assistant state: {error}")))?,
            verified: row.try_get::<Option<i64>, _>("verified")?.unwrap_or(0) == 1,
        })
    }

    /// Every stored event of a conversation, in order.
    pub async fn conversation_events(&self, conversation_id: &str) -> StoreResult<Vec<LiveEvent>> {
        self.events_after(conversation_id, 0, i64::MAX).await
    }

    /// Inbound messages that no owner has taken yet, in conversation order.
    pub async fn unhandled_inbound(&self) -> StoreResult<Vec<PendingInbound>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, seq, text, platform_message_id, extensions FROM messages \
             WHERE direction = 'in' AND handled_at IS NULL ORDER BY conversation_id, seq",
        )
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(pending_of).collect()
    }

    /// One stored inbound message that no owner has taken yet.
    pub async fn unhandled_message(&self, message_id: &str) -> StoreResult<Option<PendingInbound>> {
        let row = sqlx::query(
            "SELECT id, conversation_id, seq, text, platform_message_id, extensions \
             FROM messages WHERE id = $1 AND direction = 'in' AND handled_at IS NULL",
        )
        .bind(message_id)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(pending_of).transpose()
    }

    /// The channel instance and attachments of a message.
    pub async fn message_attachments(
        &self,
        message_id: &str,
    ) -> StoreResult<Option<(String, Vec<switchboard_connector::Attachment>)>> {
        let row = sqlx::query("SELECT channel, attachments FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let attachments: &str = row.try_get("attachments")?;
        Ok(Some((
            row.try_get("channel")?,
            super::attachments_of(attachments)?,
        )))
    }
}

/// What an inbound message's event says beyond the message itself.
fn event_data_of(event: &InboundEvent) -> serde_json::Value {
    match &event.choice {
        Some(choice) => serde_json::json!({"choice_id": choice.choice_id}),
        None => no_data(),
    }
}

fn inbound_event_data(
    stored: &NewEvent,
    message_id: &str,
    seq: i64,
    event: &InboundEvent,
) -> serde_json::Value {
    with_message(
        &stored.data,
        &MessageFields {
            id: message_id,
            seq,
            author: AuthorKind::Customer.as_str(),
            text: &event.text,
            platform_message_id: Some(&event.platform_message_id),
        },
    )
}

fn pending_of(row: &sqlx::any::AnyRow) -> StoreResult<PendingInbound> {
    let extensions: &str = row.try_get("extensions")?;
    Ok(PendingInbound {
        extensions: serde_json::from_str(extensions)
            .map_err(|error| StoreError::Corrupt(format!("extensions: {error}")))?,
        message_id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        text: row.try_get("text")?,
        platform_message_id: row.try_get("platform_message_id")?,
    })
}

/// The latest conversation on a channel thread (resolved, since the thread has no open one,
/// unless another writer opened one a moment ago), with its state.
async fn latest_on_thread(
    tx: &mut Transaction<'static, Any>,
    channel: &str,
    thread: &str,
) -> StoreResult<Option<(String, State)>> {
    let row = sqlx::query(
        "SELECT id, status, owner, version FROM conversations \
         WHERE channel = $1 AND thread = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(channel)
    .bind(thread)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| Ok((row.try_get("id")?, state_of(&row)?)))
        .transpose()
}

/// A conversation's last message number and last event number.
async fn last_numbers(
    tx: &mut Transaction<'static, Any>,
    conversation_id: &str,
) -> StoreResult<(i64, i64)> {
    let row = sqlx::query(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = $1) AS message, \
         (SELECT COALESCE(MAX(seq), 0) FROM conversation_events WHERE conversation_id = $1) AS event",
    )
    .bind(conversation_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.try_get("message")?, row.try_get("event")?))
}

/// Give a resolved conversation back to the bot (the customer wrote again on its thread), with
/// its owner.changed event numbered `event_seq`. The assistant's memory of the old request
/// is dropped: a resolved conversation finished it. Another writer that changed the row
/// first makes this fail with `OwnerChanged`, and the ingest is retried.
async fn reopen(
    tx: &mut Transaction<'static, Any>,
    conversation_id: &str,
    current: &State,
    event_seq: i64,
    now: i64,
) -> StoreResult<NewEvent> {
    let next = current
        .apply(&Move::Reopen)
        .map_err(|_| StoreError::OwnerChanged(conversation_id.to_string()))?;
    let updated = sqlx::query(
        "UPDATE conversations SET status = $1, owner = $2, version = version + 1, \
         updated_at = $3, assistant_state = '{}' \
         WHERE id = $4 AND version = $5 AND status = 'resolved'",
    )
    .bind(next.status.as_str())
    .bind(next.owner.to_string())
    .bind(now)
    .bind(conversation_id)
    .bind(current.version)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(StoreError::OwnerChanged(conversation_id.to_string()));
    }
    let transfer = Transfer {
        to: Move::Reopen,
        change: "reopened".into(),
        actor: "customer".into(),
        data: serde_json::json!({}),
    };
    let event = NewEvent {
        kind: EventKind::OwnerChanged,
        actor: transfer.actor.clone(),
        data: owner_change_data(current, &next, &transfer),
        message_id: None,
    };
    insert_event(tx, conversation_id, event_seq, &event, now).await?;
    Ok(event)
}

/// Insert one event with a known number, inside a transaction that just created or locked
/// the conversation.
async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    conversation_id: &str,
    seq: i64,
    event: &NewEvent,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO conversation_events \
         (conversation_id, seq, kind, actor, data, message_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(conversation_id)
    .bind(seq)
    .bind(event.kind.as_str())
    .bind(&event.actor)
    .bind(event.data.to_string())
    .bind(&event.message_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
