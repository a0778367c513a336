//! The outbox table: durable work waiting to leave Switchboard.
//!
//! Rows are written in the same transaction as the decision that produced them, reserved
//! (`locked_by`, `locked_until`) by the instance that delivers them, and finished as `sent` or
//! `dead`. On PostgreSQL, claims skip rows other instances hold (`FOR UPDATE SKIP LOCKED`).

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use switchboard_connector::OutboundMessage;

use super::script::{Bind, Statement};
use super::{Backend, Store, StoreResult, now_ms};

/// A row to deliver.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub channel: Option<String>,
    /// Rows of one lane (a conversation) go out one after another.
    pub lane: String,
    pub message_id: Option<String>,
    pub payload: String,
    pub attempts: i64,
    /// For `message` rows: the message itself, read from the messages table.
    pub message: Option<OutboundMessage>,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent,
    Retry {
        at_ms: i64,
        error: String,
    },
    Dead {
        error: String,
    },
    /// Not attempted: an older row of its lane waits for a retry, so this one waits too.
    Deferred {
        until_ms: i64,
    },
}

fn row_of(row: &sqlx::any::AnyRow) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        channel: row.try_get("channel")?,
        lane: row.try_get("lane")?,
        message_id: row.try_get("message_id")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        message: None,
    })
}

impl Store {
    /// Reserve up to `limit` due rows for `instance`, oldest first.
    pub async fn claim_outbox(
        &self,
        instance: &str,
        lease: Duration,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let now = now_ms();
        let skip_locked = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // Only the backend's fixed locking clause is spliced in.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE outbox SET locked_by = $1, locked_until = $2 WHERE id IN ( \
             SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
             AND (locked_until IS NULL OR locked_until < $3) ORDER BY id LIMIT $4 {skip_locked}) \
             RETURNING id, kind, channel, lane, message_id, payload, attempts"
        )))
        .bind(instance)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.write)
        .await?;
        let mut claimed = rows.iter().map(row_of).collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|row| row.id);
        for row in &mut claimed {
            if let Some(message_id) = &row.message_id {
                row.message = self.outbound_message(message_id).await?;
            }
        }
        Ok(claimed)
    }

    /// A stored outbound message, addressed to its conversation's thread.
    pub async fn outbound_message(&self, message_id: &str) -> StoreResult<Option<OutboundMessage>> {
        let row = sqlx::query(
            "SELECT m.id, m.conversation_id, m.channel, c.thread, m.seq, m.author_kind, m.text, \
             m.attachments, m.in_reply_to, m.created_at \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.write)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let author: &str = row.try_get("author_kind")?;
        let attachments: &str = row.try_get("attachments")?;
        Ok(Some(OutboundMessage {
            id: row.try_get("id")?,
            conversation_id: row.try_get("conversation_id")?,
            channel: row.try_get("channel")?,
            thread: row.try_get("thread")?,
            seq: row.try_get("seq")?,
            author: super::author_of(author)?,
            text: row.try_get("text")?,
            attachments: super::attachments_of(attachments)?,
            in_reply_to: row.try_get("in_reply_to")?,
            created_at_ms: row.try_get("created_at")?,
        }))
    }

    /// Record delivery outcomes, many rows in one script.
    pub async fn finish_outbox(&self, outcomes: &[(i64, Outcome)]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut statements = Vec::new();
        let sent: Vec<i64> = outcomes
            .iter()
            .filter(|(_, outcome)| matches!(outcome, Outcome::Sent))
            .map(|(id, _)| *id)
            .collect();
        for chunk in sent.chunks(200) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let mut binds: Vec<Bind> = vec![now.into()];
            binds.extend(chunk.iter().map(|id| Bind::Int(*id)));
            statements.push(Statement {
                // Only numbered placeholders are spliced in; the ids are bound.
                sql: format!(
                    "UPDATE outbox SET status = 'sent', attempts = attempts + 1, done_at = $1, \
                     locked_until = NULL, locked_by = NULL WHERE id IN ({})",
                    placeholders.join(", ")
                )
                .into(),
                binds,
                returning: None,
            });
        }
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Sent => {}
                Outcome::Retry { at_ms, error } => statements.push(Statement::new(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, \
                     last_error = $2, locked_until = NULL, locked_by = NULL WHERE id = $3",
                    vec![(*at_ms).into(), error.into(), (*id).into()],
                )),
                Outcome::Deferred { until_ms } => statements.push(Statement::new(
                    "UPDATE outbox SET next_attempt_at = $1, locked_until = NULL, \
                     locked_by = NULL WHERE id = $2",
                    vec![(*until_ms).into(), (*id).into()],
                )),
                Outcome::Dead { error } => statements.push(Statement::new(
                    "UPDATE outbox SET status = 'dead', attempts = attempts + 1, \
                     last_error = $1, done_at = $2, locked_until = NULL, locked_by = NULL \
                     WHERE id = $3",
                    vec![error.into(), now.into(), (*id).into()],
                )),
            }
        }
        self.run_script(statements).await?;
        Ok(())
    }

    /// Free every reservation. Only safe when no other instance shares the database (SQLite).
    pub async fn release_outbox_locks(&self) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE outbox SET locked_until = NULL, locked_by = NULL \
             WHERE status = 'pending' AND locked_until IS NOT NULL",
        )
        .execute(&self.write)
        .await?;
        Ok(result.rows_affected())
    }

    /// Rows still to deliver.
    pub async fn outbox_depth(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS depth FROM outbox WHERE status = 'pending'")
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("depth")?)
    }

    /// Delivery state of the rows of one message: (status, attempts, last_error).
    pub async fn outbox_state(
        &self,
        message_id: &str,
    ) -> StoreResult<Vec<(String, i64, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT status, attempts, last_error FROM outbox WHERE message_id = $1 ORDER BY id",
        )
        .bind(message_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("status")?,
                    row.try_get("attempts")?,
                    row.try_get("last_error")?,
                ))
            })
            .collect()
    }
}
