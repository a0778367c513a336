//! Tasks and their audit events: the one script a task change is ([`TaskCommit`]: task row,
//! events, customer notice, webhook rows, idempotency record, inbound id), the constraint a
//! failed commit hit ([`task_conflict`]), and the reads of tasks, events, idempotency records
//! and processed inbound webhooks.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use switchboard_connector::{AuthorKind, EventKind, LiveEvent, OutboundMessage};

use crate::store::events::{MessageFields, NewEvent, Place, live, with_message};
use crate::store::outbox::OutboxRow;
use crate::store::script::Statement;
use crate::store::{Store, StoreError, StoreResult, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub contact_id: String,
    pub conversation_id: Option<String>,
    pub order_id: Option<String>,
    pub queue: String,
    /// JSON.
    pub payload: String,
    pub approver_role: Option<String>,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEventRow {
    pub id: String,
    pub task_id: String,
    pub version: i64,
    pub kind: String,
    pub actor: String,
    pub reason: Option<String>,
    pub from_status: Option<String>,
    pub to_status: String,
    /// JSON snapshots of the task.
    pub before: Option<String>,
    pub after: String,
    pub created_at: i64,
}

/// A status change of an existing task, from `version - 1` to `version`.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub id: String,
    pub status: String,
    pub version: i64,
    pub updated_at: i64,
}

/// A message to a task's customer on their conversation, delivered through the outbox.
#[derive(Debug, Clone)]
pub struct CustomerNotice {
    pub message_id: String,
    pub conversation_id: String,
    pub channel: String,
    pub thread: String,
    pub text: String,
}

/// An outbox row of kind `webhook`.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// Rows of one lane are delivered in order (one lane per endpoint and task).
    pub lane: String,
    /// JSON: endpoint, webhook id, body.
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub task_id: String,
    /// The response to replay.
    pub response: String,
}

/// Everything one task change writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct TaskCommit {
    pub task_id: String,
    pub insert: Option<TaskRow>,
    pub update: Option<TaskUpdate>,
    pub events: Vec<TaskEventRow>,
    pub notice: Option<CustomerNotice>,
    pub webhooks: Vec<WebhookRow>,
    pub idempotency: Option<IdempotencyRecord>,
    /// The `webhook-id` of the inbound status update that caused this change.
    pub inbound_id: Option<String>,
}

/// Which rule a failed [`Store::commit_task`] ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskConflict {
    /// Somebody changed the task first.
    Version,
    /// The idempotency key was taken meanwhile.
    Idempotency,
    /// The order already has an open refund.
    OpenRefund,
    /// This inbound webhook was processed already.
    Inbound,
    /// A message took the notice's place in the conversation, or an event its number
    /// (retried inside the store).
    Sequence,
}

/// Classify a unique violation of a task commit.
pub fn task_conflict(error: &StoreError) -> Option<TaskConflict> {
    let StoreError::Database(sqlx::Error::Database(database)) = error else {
        return None;
    };
    if !database.is_unique_violation() {
        return None;
    }
    // PostgreSQL names the constraint; SQLite names the table and columns in the message.
    let text = format!(
        "{} {}",
        database.constraint().unwrap_or_default(),
        database.message()
    );
    if text.contains("task_events") {
        Some(TaskConflict::Version)
    } else if text.contains("idempotency_keys") {
        Some(TaskConflict::Idempotency)
    } else if text.contains("tasks_one_open_refund") || text.contains("tasks.order_id") {
        Some(TaskConflict::OpenRefund)
    } else if text.contains("inbound_webhooks") {
        Some(TaskConflict::Inbound)
    } else if text.contains("messages") || text.contains("conversation_events") {
        Some(TaskConflict::Sequence)
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyHit {
    pub request_hash: String,
    pub task_id: String,
    pub response: String,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub contact_id: Option<String>,
    pub order_id: Option<String>,
    /// Only tasks in one of these queues (a back-office person's queues).
    pub queues: Option<Vec<String>>,
}

const TASK_COLUMNS: &str = "id, kind, status, contact_id, conversation_id, order_id, queue, \
                            payload, approver_role, version, created_by, created_at, updated_at";

fn task_of(row: &sqlx::any::AnyRow) -> StoreResult<TaskRow> {
    Ok(TaskRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        contact_id: row.try_get("contact_id")?,
        conversation_id: row.try_get("conversation_id")?,
        order_id: row.try_get("order_id")?,
        queue: row.try_get("queue")?,
        payload: row.try_get("payload")?,
        approver_role: row.try_get("approver_role")?,
        version: row.try_get("version")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Commit one task change (see [`TaskCommit`]). With `reserve`, the outbox rows are written
    /// already reserved for that instance and returned for it to deliver at once; without,
    /// the outbox worker's poll finds them. Conflicts come back as unique violations that
    /// [`task_conflict`] classifies.
    pub async fn commit_task(
        &self,
        commit: &TaskCommit,
        reserve: Option<(&str, Duration)>,
    ) -> StoreResult<(Vec<OutboxRow>, Vec<LiveEvent>)> {
        let mut attempt = 0;
        loop {
            match self.try_commit_task(commit, reserve).await {
                Err(error)
                    if task_conflict(&error) == Some(TaskConflict::Sequence) && attempt < 10 =>
                {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn try_commit_task(
        &self,
        commit: &TaskCommit,
        reserve: Option<(&str, Duration)>,
    ) -> StoreResult<(Vec<OutboxRow>, Vec<LiveEvent>)> {
        let now = now_ms();
        let (locked_until, locked_by) = match reserve {
            Some((instance, lease)) => (
                Some(now + lease.as_millis() as i64),
                Some(instance.to_string()),
            ),
            None => (None, None),
        };
        let mut statements = Vec::new();
        if let Some(task) = &commit.insert {
            statements.push(Statement::new(
                "INSERT INTO tasks (id, kind, status, contact_id, conversation_id, order_id, \
                 queue, payload, approver_role, version, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                vec![
                    (&task.id).into(),
                    (&task.kind).into(),
                    (&task.status).into(),
                    (&task.contact_id).into(),
                    task.conversation_id.clone().into(),
                    task.order_id.clone().into(),
                    (&task.queue).into(),
                    (&task.payload).into(),
                    task.approver_role.clone().into(),
                    task.version.into(),
                    (&task.created_by).into(),
                    task.created_at.into(),
                    task.updated_at.into(),
                ],
            ));
        }
        if let Some(update) = &commit.update {
            statements.push(Statement::new(
                "UPDATE tasks SET status = $1, version = $2, updated_at = $3 \
                 WHERE id = $4 AND version = $5",
                vec![
                    (&update.status).into(),
                    update.version.into(),
                    update.updated_at.into(),
                    (&update.id).into(),
                    (update.version - 1).into(),
                ],
            ));
        }
        for event in &commit.events {
            statements.push(Statement::new(
                "INSERT INTO task_events (id, task_id, version, kind, actor, reason, \
                 from_status, to_status, before_state, after_state, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                vec![
                    (&event.id).into(),
                    (&event.task_id).into(),
                    event.version.into(),
                    (&event.kind).into(),
                    (&event.actor).into(),
                    event.reason.clone().into(),
                    event.from_status.clone().into(),
                    (&event.to_status).into(),
                    event.before.clone().into(),
                    (&event.after).into(),
                    event.created_at.into(),
                ],
            ));
        }
        if let Some(record) = &commit.idempotency {
            statements.push(Statement::new(
                "INSERT INTO idempotency_keys (scope, idem_key, request_hash, task_id, response, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    (&record.scope).into(),
                    (&record.key).into(),
                    (&record.request_hash).into(),
                    (&record.task_id).into(),
                    (&record.response).into(),
                    now.into(),
                ],
            ));
        }
        if let Some(inbound_id) = &commit.inbound_id {
            statements.push(Statement::new(
                "INSERT INTO inbound_webhooks (id, task_id, received_at) VALUES ($1, $2, $3)",
                vec![inbound_id.into(), (&commit.task_id).into(), now.into()],
            ));
        }
        if let Some(notice) = &commit.notice {
            // The notice goes after the conversation's last message, even if the conversation
            // is resolved: the customer hears about their task wherever they wrote from.
            statements.push(
                Statement::new(
                    "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                     text, attachments, channel, created_at) \
                     SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, 'out', $3, $4, '[]', $5, $6 \
                     FROM messages WHERE conversation_id = $2 RETURNING seq",
                    vec![
                        (&notice.message_id).into(),
                        (&notice.conversation_id).into(),
                        AuthorKind::System.as_str().into(),
                        (&notice.text).into(),
                        (&notice.channel).into(),
                        now.into(),
                    ],
                )
                .returning("seq"),
            );
            statements.push(
                Statement::new(
                    "INSERT INTO outbox (kind, channel, message_id, lane, payload, \
                     next_attempt_at, locked_until, locked_by, created_at, task_id) \
                     VALUES ('message', $1, $2, $3, '{}', $4, $5, $6, $4, $7) RETURNING id",
                    vec![
                        (&notice.channel).into(),
                        (&notice.message_id).into(),
                        (&notice.conversation_id).into(),
                        now.into(),
                        locked_until.into(),
                        locked_by.clone().into(),
                        (&commit.task_id).into(),
                    ],
                )
                .returning("id"),
            );
        }
        for webhook in &commit.webhooks {
            statements.push(
                Statement::new(
                    "INSERT INTO outbox (kind, channel, message_id, lane, payload, \
                     next_attempt_at, locked_until, locked_by, created_at, task_id) \
                     VALUES ('webhook', 'webhook', NULL, $1, $2, $3, $4, $5, $3, $6) \
                     RETURNING id",
                    vec![
                        (&webhook.lane).into(),
                        (&webhook.payload).into(),
                        now.into(),
                        locked_until.into(),
                        locked_by.clone().into(),
                        (&commit.task_id).into(),
                    ],
                )
                .returning("id"),
            );
        }
        // The conversation hears of it: the notice is a message like any other, and the task's
        // change is an event of its own.
        let place = self.task_place(commit).await?;
        let mut events = Vec::new();
        if let Some((conversation_id, _, _)) = &place {
            if let Some(notice) = &commit.notice {
                events.push(NewEvent {
                    kind: EventKind::MessageStored,
                    actor: "workflow".into(),
                    data: serde_json::json!({}),
                    message_id: Some(notice.message_id.clone()),
                });
            }
            let (kind, status) = match (&commit.insert, &commit.update) {
                (Some(task), _) => (Some(task.kind.clone()), task.status.clone()),
                (None, Some(update)) => (None, update.status.clone()),
                (None, None) => (None, String::new()),
            };
            if !status.is_empty() {
                let mut data = serde_json::json!({"task_id": commit.task_id, "status": status});
                if let Some(kind) = kind {
                    data["kind"] = kind.into();
                }
                events.push(NewEvent {
                    kind: EventKind::TaskChanged,
                    actor: "workflow".into(),
                    data,
                    message_id: None,
                });
            }
            for (index, event) in events.iter().enumerate() {
                statements.push(self.event_statement(
                    conversation_id,
                    index as i64 + 1,
                    event,
                    now,
                    None,
                ));
            }
        }
        let expected =
            usize::from(commit.notice.is_some()) * 2 + commit.webhooks.len() + events.len();
        // No statement here is guarded, so every RETURNING yields its row.
        let values: Vec<i64> = self
            .run_script(statements)
            .await?
            .into_iter()
            .flatten()
            .collect();
        if values.len() != expected {
            return Err(StoreError::Corrupt(format!(
                "task script returned {} values, expected {expected}",
                values.len()
            )));
        }
        let mut values = values.into_iter();
        let mut rows = Vec::new();
        if let Some(notice) = &commit.notice {
            let (Some(seq), Some(outbox_id)) = (values.next(), values.next()) else {
                return Err(StoreError::Corrupt(
                    "task script returned too few values".into(),
                ));
            };
            rows.push(OutboxRow {
                id: outbox_id,
                kind: "message".into(),
                channel: Some(notice.channel.clone()),
                lane: notice.conversation_id.clone(),
                message_id: Some(notice.message_id.clone()),
                payload: "{}".into(),
                attempts: 0,
                message: Some(OutboundMessage {
                    id: notice.message_id.clone(),
                    conversation_id: notice.conversation_id.clone(),
                    channel: notice.channel.clone(),
                    thread: notice.thread.clone(),
                    seq,
                    author: AuthorKind::System,
                    text: notice.text.clone(),
                    attachments: Vec::new(),
                    choices: Vec::new(),
                    in_reply_to: None,
                    references: Vec::new(),
                    extensions: Default::default(),
                    created_at_ms: now,
                }),
            });
        }
        for (webhook, outbox_id) in commit.webhooks.iter().zip(values.by_ref()) {
            rows.push(OutboxRow {
                id: outbox_id,
                kind: "webhook".into(),
                channel: Some("webhook".into()),
                lane: webhook.lane.clone(),
                message_id: None,
                payload: webhook.payload.clone(),
                attempts: 0,
                message: None,
            });
        }
        let mut live_events = Vec::with_capacity(events.len());
        if let Some((conversation_id, channel, thread)) = &place {
            let place = Place {
                conversation_id,
                channel,
                thread,
            };
            for (event, seq) in events.iter().zip(values) {
                let data = match (&commit.notice, &event.message_id) {
                    (Some(notice), Some(_)) => with_message(
                        &event.data,
                        &MessageFields {
                            id: &notice.message_id,
                            seq: rows
                                .first()
                                .and_then(|row| row.message.as_ref())
                                .map_or(0, |message| message.seq),
                            author: AuthorKind::System.as_str(),
                            text: &notice.text,
                            platform_message_id: None,
                        },
                    ),
                    _ => event.data.clone(),
                };
                live_events.push(live(&place, seq, event, data, now));
            }
        }
        if reserve.is_none() {
            // Nobody holds them: the worker's poll delivers them.
            return Ok((Vec::new(), live_events));
        }
        Ok((rows, live_events))
    }

    /// The conversation a task commit concerns: (id, channel, thread), if it has one.
    async fn task_place(
        &self,
        commit: &TaskCommit,
    ) -> StoreResult<Option<(String, String, String)>> {
        let row = match &commit.insert {
            Some(task) => {
                let Some(conversation_id) = &task.conversation_id else {
                    return Ok(None);
                };
                sqlx::query("SELECT id, channel, thread FROM conversations WHERE id = $1")
                    .bind(conversation_id)
                    .fetch_optional(&self.write)
                    .await?
            }
            None => {
                sqlx::query(
                    "SELECT c.id, c.channel, c.thread FROM tasks t \
                     JOIN conversations c ON c.id = t.conversation_id WHERE t.id = $1",
                )
                .bind(&commit.task_id)
                .fetch_optional(&self.write)
                .await?
            }
        };
        row.map(|row| {
            Ok((
                row.try_get("id")?,
                row.try_get("channel")?,
                row.try_get("thread")?,
            ))
        })
        .transpose()
    }

    pub async fn task(&self, id: &str) -> StoreResult<Option<TaskRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(task_of).transpose()
    }

    /// Tasks matching `filter`, newest first, after the cursor `before_id` (ids are UUID v7,
    /// so their order is creation order).
    pub async fn tasks(
        &self,
        filter: &TaskFilter,
        before_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<TaskRow>> {
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let conditions = [
            ("status", &filter.status),
            ("kind", &filter.kind),
            ("queue", &filter.queue),
            ("contact_id", &filter.contact_id),
            ("order_id", &filter.order_id),
        ];
        // Only fixed column names and numbered placeholders are spliced in.
        for (column, value) in conditions {
            if let Some(value) = value {
                binds.push(value.clone());
                sql.push_str(&format!(" AND {column} = ${}", binds.len()));
            }
        }
        if let Some(queues) = &filter.queues {
            if queues.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let first = binds.len() + 1;
                binds.extend(queues.iter().cloned());
                let list: Vec<String> = (first..first + queues.len())
                    .map(|index| format!("${index}"))
                    .collect();
                sql.push_str(&format!(" AND queue IN ({})", list.join(", ")));
            }
        }
        if let Some(before_id) = before_id {
            binds.push(before_id.to_string());
            sql.push_str(&format!(" AND id < ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(bind);
        }
        let rows = query.bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(task_of).collect()
    }

    /// The audit trail of a task, oldest first.
    pub async fn task_events(&self, task_id: &str) -> StoreResult<Vec<TaskEventRow>> {
        let rows = sqlx::query(
            "SELECT id, task_id, version, kind, actor, reason, from_status, to_status, \
             before_state, after_state, created_at FROM task_events WHERE task_id = $1 ORDER BY version",
        )
        .bind(task_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TaskEventRow {
                    id: row.try_get("id")?,
                    task_id: row.try_get("task_id")?,
                    version: row.try_get("version")?,
                    kind: row.try_get("kind")?,
                    actor: row.try_get("actor")?,
                    reason: row.try_get("reason")?,
                    from_status: row.try_get("from_status")?,
                    to_status: row.try_get("to_status")?,
                    before: row.try_get("before_state")?,
                    after: row.try_get("after_state")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyHit>> {
        let row = sqlx::query(
            "SELECT request_hash, task_id, response FROM idempotency_keys \
             WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(IdempotencyHit {
            request_hash: row.try_get("request_hash")?,
            task_id: row.try_get("task_id")?,
            response: row.try_get("response")?,
        }))
    }

    pub async fn inbound_seen(&self, id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT id FROM inbound_webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }
}
