//! Persistence: every SQL statement of Switchboard lives under this module.
//!
//! One SQL text serves SQLite (the embedded default) and PostgreSQL (scale-out) through sqlx's
//! `Any` driver: ids are TEXT, timestamps BIGINT milliseconds, JSON is TEXT, and placeholders
//! are `$n`, which both backends accept. Where the dialects differ (row locking for the outbox)
//! the [`Backend`] picks the text.
//!
//! SQLite allows one writer at a time, so it gets a dedicated single-connection write pool
//! (writers queue in-process instead of failing with SQLITE_BUSY) beside a read pool; both run
//! in WAL mode. PostgreSQL uses one pool for both.

mod outbox;
mod script;
mod workflow;

pub use outbox::{OutboxRow, Outcome as DeliveryOutcome};
use script::Statement;
pub use workflow::{
    ApiKeyRow, CustomerNotice, DeliveryRow, IdempotencyHit, IdempotencyRecord, OrderRow,
    TaskCommit, TaskConflict, TaskEventRow, TaskFilter, TaskRow, TaskUpdate, WebhookRow,
    task_conflict,
};

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};
use switchboard_connector::{
    Attachment, AuthorKind, ChannelMessage, InboundEvent, OutboundMessage,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The conversation changed owner since the turn began; nothing was written.
    #[error("conversation {0} changed owner")]
    OwnerChanged(String),
}

impl StoreError {
    /// A unique-constraint race between instances; the caller may retry.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(error)) => error.is_unique_violation(),
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    backend: Backend,
    /// SQLite only: the group-commit writer that runs scripts.
    group: Option<script::GroupWriter>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A conversation as the router needs it.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: String,
    pub contact_id: String,
    pub channel: String,
    pub thread: String,
    pub status: String,
    pub owner: String,
    pub language: Option<String>,
    pub assistant_state: serde_json::Value,
    pub verified: bool,
    /// Changes whenever the row does: a turn commits only if it is still the same.
    pub updated_at_ms: i64,
}

/// The result of storing an inbound event.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub message_id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub duplicate: bool,
}

/// An inbound message the router still owes a turn (after a crash, or just ingested).
#[derive(Debug, Clone)]
pub struct PendingInbound {
    pub message_id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub text: String,
    pub platform_message_id: Option<String>,
}

/// A reply to store and queue for delivery in the same transaction.
#[derive(Debug, Clone)]
pub struct NewReply {
    pub author: AuthorKind,
    pub author_id: Option<String>,
    pub text: String,
}

/// Everything one turn of the owner decided, committed atomically with marking the inbound
/// message handled: a crash either loses the whole turn (and it is redone) or none of it.
#[derive(Debug, Clone, Default)]
pub struct TurnCommit {
    pub conversation_id: String,
    pub inbound_message_id: String,
    pub replies: Vec<NewReply>,
    pub assistant_state: Option<serde_json::Value>,
    pub language: Option<String>,
    /// New (status, owner) and the event that explains it.
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub status: &'static str,
    pub owner: String,
    pub event_kind: &'static str,
    pub actor: String,
    pub data: serde_json::Value,
}

/// What a committed turn left behind.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Replies to deliver, reserved for this instance.
    pub outbox: Vec<OutboxRow>,
    /// The conversation's version after the turn.
    pub version: i64,
}

/// A conversation event row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConversationEvent {
    pub id: i64,
    pub conversation_id: String,
    pub kind: String,
    pub actor: String,
    pub data: serde_json::Value,
    pub created_at_ms: i64,
}

fn author_of(value: &str) -> StoreResult<AuthorKind> {
    AuthorKind::parse(value).ok_or_else(|| StoreError::Corrupt(format!("author kind {value}")))
}

fn attachments_of(value: &str) -> StoreResult<Vec<Attachment>> {
    serde_json::from_str(value)
        .map_err(|error| StoreError::Corrupt(format!("attachments: {error}")))
}

fn message_of(row: &sqlx::any::AnyRow) -> StoreResult<ChannelMessage> {
    Ok(ChannelMessage {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        author: author_of(row.try_get::<&str, _>("author_kind")?)?,
        text: row.try_get("text")?,
        attachments: attachments_of(row.try_get::<&str, _>("attachments")?)?,
        platform_message_id: row.try_get("platform_message_id")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, author_kind, text, attachments, \
                               platform_message_id, created_at";

impl Store {
    /// Open the database named by `url`, creating a SQLite file if needed, and migrate it.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database url scheme in {}",
                    crate::config::redact_url(url)
                )
                .into(),
            )));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let store = match backend {
            Backend::Sqlite => {
                if let Some(path) = sqlite_path(url)
                    && let Some(parent) = std::path::Path::new(&path).parent()
                {
                    std::fs::create_dir_all(parent)
                        .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
                }
                let pragmas = |pool: AnyPoolOptions| {
                    pool.after_connect(|connection, _meta| {
                        Box::pin(async move {
                            connection.execute("PRAGMA journal_mode = WAL").await?;
                            connection.execute("PRAGMA synchronous = NORMAL").await?;
                            connection.execute("PRAGMA busy_timeout = 10000").await?;
                            connection.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                };
                let write = pragmas(AnyPoolOptions::new().max_connections(1).min_connections(1))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options.clone())
                    .await?;
                // Migrate before the readers open, so they see the schema.
                sqlx::migrate!("migrations/sqlite").run(&write).await?;
                let read = pragmas(AnyPoolOptions::new().max_connections(max_connections.max(1)))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await?;
                Store {
                    group: Some(script::GroupWriter::start(write.clone())),
                    write,
                    read,
                    backend,
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Store {
                    write: pool.clone(),
                    read: pool,
                    backend,
                    group: None,
                }
            }
        };
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Store an inbound event once. The `(channel, platform_message_id)` unique constraint is
    /// the dedupe: a redelivery inserts nothing and returns the original message.
    pub async fn ingest(&self, event: &InboundEvent) -> StoreResult<Ingested> {
        // Unique-constraint races (two instances opening the same conversation, or taking the
        // same seq) are settled by retrying: the second try sees the winner's rows.
        let mut attempt = 0;
        loop {
            match self.try_ingest(event).await {
                Err(error) if error.is_unique_violation() && attempt < 10 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_ingest(&self, event: &InboundEvent) -> StoreResult<Ingested> {
        let now = now_ms();
        let message_id = new_id();
        let attachments = serde_json::to_string(&event.attachments)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        // The common case in one statement: the thread has an open conversation.
        let insert = Statement::new(
            "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, author_id, \
                  text, attachments, channel, platform_message_id, platform_sent_at, created_at) \
                  SELECT $1, c.id, \
                  (SELECT COALESCE(MAX(m.seq), 0) + 1 FROM messages m WHERE m.conversation_id = c.id), \
                  'in', 'customer', $2, $3, $4, $5, $6, $7, $8 \
                  FROM conversations c \
                  WHERE c.channel = $5 AND c.thread = $9 AND c.status <> 'resolved' \
                  ON CONFLICT (channel, platform_message_id) DO NOTHING \
                  RETURNING conversation_id, seq",
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
            ],
        );
        let row = self.run_returning_row(insert).await?;
        if let Some(row) = row {
            return Ok(Ingested {
                message_id,
                conversation_id: row.try_get("conversation_id")?,
                seq: row.try_get("seq")?,
                duplicate: false,
            });
        }
        // Nothing inserted: a redelivery, or the first message of a thread.
        if let Some(existing) = self
            .existing(&event.channel, &event.platform_message_id)
            .await?
        {
            return Ok(existing);
        }
        let mut tx = self.write.begin().await?;
        let conversation_id = self.open_conversation(&mut tx, event, now).await?;
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, author_id, \
             text, attachments, channel, platform_message_id, platform_sent_at, created_at) \
             VALUES ($1, $2, 1, 'in', 'customer', $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&message_id)
        .bind(&conversation_id)
        .bind(&event.sender.platform_user_id)
        .bind(&event.text)
        .bind(&attachments)
        .bind(&event.channel)
        .bind(&event.platform_message_id)
        .bind(event.sent_at_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ingested {
            message_id,
            conversation_id,
            seq: 1,
            duplicate: false,
        })
    }

    async fn existing(
        &self,
        channel: &str,
        platform_message_id: &str,
    ) -> StoreResult<Option<Ingested>> {
        let row = sqlx::query(
            "SELECT id, conversation_id, seq FROM messages \
             WHERE channel = $1 AND platform_message_id = $2",
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
        }))
    }

    /// Find or create the contact, then open a conversation owned by the bot.
    async fn open_conversation(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &InboundEvent,
        now: i64,
    ) -> StoreResult<String> {
        let sender = &event.sender;
        let existing = sqlx::query(
            "SELECT contact_id FROM contact_identities WHERE channel = $1 AND platform_user_id = $2",
        )
        .bind(&event.channel)
        .bind(&sender.platform_user_id)
        .fetch_optional(&mut **tx)
        .await?;
        let contact_id = match existing {
            Some(row) => row.try_get::<String, _>("contact_id")?,
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
                     (channel, platform_user_id, contact_id, verified, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&event.channel)
                .bind(&sender.platform_user_id)
                .bind(&contact_id)
                .bind(i64::from(sender.verified))
                .bind(now)
                .execute(&mut **tx)
                .await?;
                contact_id
            }
        };
        let conversation_id = new_id();
        sqlx::query(
            "INSERT INTO conversations \
             (id, contact_id, channel, thread, status, owner, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'bot', 'bot', $5, $5)",
        )
        .bind(&conversation_id)
        .bind(&contact_id)
        .bind(&event.channel)
        .bind(&event.thread)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        insert_event(
            tx,
            &conversation_id,
            "conversation.opened",
            "router",
            &serde_json::json!({"channel": event.channel, "owner": "bot"}),
            now,
        )
        .await?;
        Ok(conversation_id)
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

    pub async fn conversation(&self, id: &str) -> StoreResult<Conversation> {
        let row = sqlx::query(
            "SELECT c.id, c.contact_id, c.channel, c.thread, c.status, c.owner, c.language, \
             c.assistant_state, c.updated_at, \
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
            status: row.try_get("status")?,
            owner: row.try_get("owner")?,
            language: row.try_get("language")?,
            assistant_state: serde_json::from_str(state)
                .map_err(|error| StoreError::Corrupt(format!("assistant state: {error}")))?,
            verified: row.try_get::<Option<i64>, _>("verified")?.unwrap_or(0) == 1,
            updated_at_ms: row.try_get("updated_at")?,
        })
    }

    pub async fn conversation_events(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Vec<ConversationEvent>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, kind, actor, data, created_at FROM conversation_events \
             WHERE conversation_id = $1 ORDER BY id",
        )
        .bind(conversation_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let data: &str = row.try_get("data")?;
                Ok(ConversationEvent {
                    id: row.try_get("id")?,
                    conversation_id: row.try_get("conversation_id")?,
                    kind: row.try_get("kind")?,
                    actor: row.try_get("actor")?,
                    data: serde_json::from_str(data)
                        .map_err(|error| StoreError::Corrupt(format!("event data: {error}")))?,
                    created_at_ms: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Give a conversation to a new owner (an agent taking over, a hand-back to the bot), with
    /// the event that explains it. Turns in flight for the old owner then commit nothing.
    pub async fn transfer_conversation(
        &self,
        conversation_id: &str,
        transfer: &Transfer,
    ) -> StoreResult<()> {
        let now = now_ms();
        let current = self.conversation(conversation_id).await?;
        let mut data = transfer.data.clone();
        if let Some(object) = data.as_object_mut() {
            object.insert("from".into(), current.owner.clone().into());
            object.insert("to".into(), transfer.owner.clone().into());
        }
        self.run_script(vec![
            Statement::new(
                "INSERT INTO conversation_events (conversation_id, kind, actor, data, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                vec![
                    conversation_id.into(),
                    transfer.event_kind.into(),
                    (&transfer.actor).into(),
                    data.to_string().into(),
                    now.into(),
                ],
            ),
            Statement::new(
                "UPDATE conversations SET status = $1, owner = $2, updated_at = $3 WHERE id = $4",
                vec![
                    transfer.status.into(),
                    (&transfer.owner).into(),
                    now.into(),
                    conversation_id.into(),
                ],
            ),
        ])
        .await?;
        Ok(())
    }

    /// Inbound messages that no owner has taken yet, in conversation order.
    pub async fn unhandled_inbound(&self) -> StoreResult<Vec<PendingInbound>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, seq, text, platform_message_id FROM messages \
             WHERE direction = 'in' AND handled_at IS NULL ORDER BY conversation_id, seq",
        )
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PendingInbound {
                    message_id: row.try_get("id")?,
                    conversation_id: row.try_get("conversation_id")?,
                    seq: row.try_get("seq")?,
                    text: row.try_get("text")?,
                    platform_message_id: row.try_get("platform_message_id")?,
                })
            })
            .collect()
    }

    /// Commit one turn: replies (as messages and outbox rows), the assistant's state, an owner
    /// change, and the inbound message marked handled, all or nothing. Returns the outbox rows
    /// to deliver, already reserved for `instance`.
    pub async fn commit_turn(
        &self,
        conversation: &Conversation,
        turn: &TurnCommit,
        instance: &str,
        lease: Duration,
    ) -> StoreResult<Committed> {
        let mut attempt = 0;
        loop {
            match self
                .try_commit_turn(conversation, turn, instance, lease)
                .await
            {
                Err(error) if error.is_unique_violation() && attempt < 10 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_commit_turn(
        &self,
        conversation: &Conversation,
        turn: &TurnCommit,
        instance: &str,
        lease: Duration,
    ) -> StoreResult<Committed> {
        let now = now_ms();
        let lease_until = now + lease.as_millis() as i64;
        // Every statement is guarded by the conversation as the turn saw it (owner and
        // version): if an agent took the conversation meanwhile, or anything else changed it,
        // the script writes nothing and the turn is redone on the fresh row. So the bot never
        // answers a conversation it does not own.
        let owner = &conversation.owner;
        let version = conversation.updated_at_ms;
        let mut statements = Vec::new();
        let mut messages = Vec::with_capacity(turn.replies.len());
        for (position, reply) in turn.replies.iter().enumerate() {
            let message = OutboundMessage {
                id: new_id(),
                conversation_id: conversation.id.clone(),
                channel: conversation.channel.clone(),
                thread: conversation.thread.clone(),
                seq: 0,
                author: reply.author,
                text: reply.text.clone(),
                attachments: Vec::new(),
                in_reply_to: Some(turn.inbound_message_id.clone()),
                created_at_ms: now,
            };
            // The base is the conversation's last seq before this turn (this turn's replies
            // excluded), so the reply's seq is the same whether the statements of the script see
            // each other's rows (SQLite) or one snapshot (PostgreSQL).
            statements.push(
                Statement::new(
                    "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                     author_id, text, attachments, channel, in_reply_to, created_at) \
                     SELECT $1, $2, COALESCE((SELECT seq FROM messages \
                     WHERE conversation_id = $2 AND (in_reply_to IS NULL OR in_reply_to <> $7) \
                     ORDER BY seq DESC LIMIT 1), 0) + $9, \
                     'out', $3, $4, $5, '[]', $6, $7, $8 \
                     WHERE EXISTS (SELECT 1 FROM conversations \
                     WHERE id = $2 AND owner = $10 AND updated_at = $11) \
                     RETURNING seq",
                    vec![
                        (&message.id).into(),
                        (&message.conversation_id).into(),
                        reply.author.as_str().into(),
                        reply.author_id.clone().into(),
                        (&message.text).into(),
                        (&message.channel).into(),
                        (&turn.inbound_message_id).into(),
                        now.into(),
                        (position as i64 + 1).into(),
                        owner.into(),
                        version.into(),
                    ],
                )
                .returning("seq"),
            );
            statements.push(
                Statement::new(
                    "INSERT INTO outbox (kind, channel, message_id, lane, payload, \
                     next_attempt_at, locked_until, locked_by, created_at) \
                     SELECT 'message', $1, $2, $3, '{}', $4, $5, $6, $4 \
                     WHERE EXISTS (SELECT 1 FROM conversations \
                     WHERE id = $3 AND owner = $7 AND updated_at = $8) \
                     RETURNING id",
                    vec![
                        (&message.channel).into(),
                        (&message.id).into(),
                        (&message.conversation_id).into(),
                        now.into(),
                        lease_until.into(),
                        instance.into(),
                        owner.into(),
                        version.into(),
                    ],
                )
                .returning("id"),
            );
            messages.push(message);
        }
        if let Some(transfer) = &turn.transfer {
            let mut data = transfer.data.clone();
            if let Some(object) = data.as_object_mut() {
                object.insert("from".into(), conversation.owner.clone().into());
                object.insert("to".into(), transfer.owner.clone().into());
            }
            statements.push(Statement::new(
                "INSERT INTO conversation_events (conversation_id, kind, actor, data, created_at) \
                 SELECT $1, $2, $3, $4, $5 \
                 WHERE EXISTS (SELECT 1 FROM conversations \
                 WHERE id = $1 AND owner = $6 AND updated_at = $7)",
                vec![
                    (&conversation.id).into(),
                    transfer.event_kind.into(),
                    (&transfer.actor).into(),
                    data.to_string().into(),
                    now.into(),
                    owner.into(),
                    version.into(),
                ],
            ));
        }
        statements.push(
            Statement::new(
                "UPDATE messages SET handled_at = $1 WHERE id = $2 \
                 AND EXISTS (SELECT 1 FROM conversations \
                 WHERE id = $3 AND owner = $4 AND updated_at = $5) RETURNING handled_at",
                vec![
                    now.into(),
                    (&turn.inbound_message_id).into(),
                    (&conversation.id).into(),
                    owner.into(),
                    version.into(),
                ],
            )
            .returning("handled_at"),
        );
        // One UPDATE for every conversation change, and the last statement: on SQLite the
        // statements run in order and the guards above must still see the old owner.
        // (PostgreSQL runs the script as one statement, which may modify a row only once.)
        let changes_conversation =
            turn.assistant_state.is_some() || turn.language.is_some() || turn.transfer.is_some();
        if changes_conversation {
            statements.push(Statement::new(
                "UPDATE conversations SET assistant_state = COALESCE($1, assistant_state), \
                 language = COALESCE($2, language), status = COALESCE($3, status), \
                 owner = COALESCE($4, owner), updated_at = $5 \
                 WHERE id = $6 AND owner = $7 AND updated_at = $8",
                vec![
                    turn.assistant_state
                        .as_ref()
                        .map(|state| state.to_string())
                        .into(),
                    turn.language.clone().into(),
                    turn.transfer
                        .as_ref()
                        .map(|transfer| transfer.status.to_string())
                        .into(),
                    turn.transfer
                        .as_ref()
                        .map(|transfer| transfer.owner.clone())
                        .into(),
                    now.into(),
                    (&conversation.id).into(),
                    owner.into(),
                    version.into(),
                ],
            ));
        }
        let expected = messages.len() * 2 + 1;
        let values = self.run_script(statements).await?;
        if values.iter().all(Option::is_none) {
            // Nothing was written: the guard failed (an empty result on SQLite, NULLs on
            // PostgreSQL).
            return Err(StoreError::OwnerChanged(conversation.id.clone()));
        }
        let values: Vec<i64> = values.into_iter().flatten().collect();
        if values.len() != expected {
            return Err(StoreError::Corrupt(format!(
                "turn script returned {} values, expected {expected}",
                values.len()
            )));
        }
        // Returned values come in statement order: (seq, outbox id) per reply, then handled_at.
        let mut queued = Vec::with_capacity(messages.len());
        for (mut message, pair) in messages.into_iter().zip(values.chunks(2)) {
            let [seq, outbox_id] = pair else {
                return Err(StoreError::Corrupt(
                    "turn script returned too few values".into(),
                ));
            };
            message.seq = *seq;
            queued.push(OutboxRow {
                id: *outbox_id,
                kind: "message".into(),
                channel: Some(message.channel.clone()),
                lane: message.conversation_id.clone(),
                message_id: Some(message.id.clone()),
                payload: "{}".into(),
                attempts: 0,
                message: Some(message),
            });
        }
        Ok(Committed {
            outbox: queued,
            version: if changes_conversation { now } else { version },
        })
    }
}

async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    conversation_id: &str,
    kind: &str,
    actor: &str,
    data: &serde_json::Value,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO conversation_events (conversation_id, kind, actor, data, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(conversation_id)
    .bind(kind)
    .bind(actor)
    .bind(data.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The file path of a `sqlite://PATH?options` URL, if it names a file.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(path.to_string())
}
