//! The outbox table: durable work waiting to leave Switchboard.
//!
//! Rows are written in the same transaction as the decision that produced them, reserved
//! (`locked_by`, `locked_until`) by the instance that delivers them, and finished as `sent` or
//! `dead`. On PostgreSQL, claims skip rows other instances hold (`FOR UPDATE SKIP LOCKED`).

use std::time::Duration;

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};
use switchboard_connector::{EventKind, LiveEvent, OutboundMessage};

use super::events::concat_event_query;
use super::script::{Bind, Returns, Statement};
use super::{Backend, NewEvent, Store, StoreError, StoreResult, json_text, now_ms};

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
    Sent {
        /// The platform's own id of the delivered message, from its receipt.
        platform_message_id: Option<String>,
    },
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

/// A delivery attempt's outcome, with what its events need to know of the row.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outbox_id: i64,
    /// The row's lane: for a message, its conversation.
    pub lane: String,
    pub message_id: Option<String>,
    pub outcome: Outcome,
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
        let skip_locked = match self.backend() {
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
        // A reply answers our inbound message; the platform knows it by its own id.
        let row = sqlx::query(
            "SELECT m.id, m.conversation_id, m.channel, c.thread, m.seq, m.author_kind, m.text, \
             m.attachments, m.choices, m.extensions, r.platform_message_id AS in_reply_to, \
             m.created_at \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             LEFT JOIN messages r ON r.id = m.in_reply_to WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.write)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let author: &str = row.try_get("author_kind")?;
        let attachments: &str = row.try_get("attachments")?;
        let choices: &str = row.try_get("choices")?;
        let extensions: &str = row.try_get("extensions")?;
        Ok(Some(OutboundMessage {
            id: row.try_get("id")?,
            conversation_id: row.try_get("conversation_id")?,
            channel: row.try_get("channel")?,
            thread: row.try_get("thread")?,
            seq: row.try_get("seq")?,
            author: super::author_of(author)?,
            text: row.try_get("text")?,
            attachments: super::attachments_of(attachments)?,
            choices: super::choices_of(choices)?,
            in_reply_to: row.try_get("in_reply_to")?,
            references: Vec::new(),
            extensions: serde_json::from_str(extensions)
                .map_err(|error| super::StoreError::Corrupt(format!("extensions: {error}")))?,
            created_at_ms: row.try_get("created_at")?,
        }))
    }

    /// The platform ids of a conversation's messages before `seq`, oldest first, at most the
    /// latest `limit`: what email threads a reply by. Also the latest customer message's id,
    /// which a reply that answers nothing in particular (a task notice) replies to.
    pub async fn thread_references(
        &self,
        conversation_id: &str,
        before_seq: i64,
        limit: i64,
    ) -> StoreResult<(Vec<String>, Option<String>)> {
        let rows = sqlx::query(
            "SELECT platform_message_id, direction FROM messages \
             WHERE conversation_id = $1 AND seq < $2 AND platform_message_id IS NOT NULL \
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(conversation_id)
        .bind(before_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut references = Vec::with_capacity(rows.len());
        let mut last_inbound = None;
        for row in &rows {
            let id: String = row.try_get("platform_message_id")?;
            let direction: &str = row.try_get("direction")?;
            if last_inbound.is_none() && direction == "in" {
                last_inbound = Some(id.clone());
            }
            references.push(id);
        }
        references.reverse();
        Ok((references, last_inbound))
    }

    /// The outbox row of an outbound message, reserved for `instance` until `lease_until`,
    /// written only while the conversation is at `version` ([`Statement::guarded`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn message_outbox_statement(
        channel: &str,
        message_id: &str,
        conversation_id: &str,
        now: i64,
        lease_until: i64,
        instance: &str,
        version: i64,
    ) -> Statement {
        Statement::new(
            "INSERT INTO outbox (kind, channel, message_id, lane, payload, next_attempt_at, \
             locked_until, locked_by, created_at) \
             VALUES ('message', $1, $2, \
             (SELECT id FROM conversations WHERE id = $3 AND version = $7), \
             '{}', $4, $5, $6, $4) RETURNING id",
            vec![
                channel.into(),
                message_id.into(),
                conversation_id.into(),
                now.into(),
                lease_until.into(),
                instance.into(),
                version.into(),
            ],
        )
        .returning("id")
        .guarded()
    }

    /// Record delivery outcomes, many rows in one script, with the conversation events
    /// they make (a message delivered, or failed for good). Returns those events.
    /// Another writer taking an event number of one of these conversations first is settled
    /// by writing them again.
    pub async fn finish_outbox(&self, finished: &[Finished]) -> StoreResult<Vec<LiveEvent>> {
        self.retrying(StoreError::is_unique_violation, || {
            self.try_finish_outbox(finished)
        })
        .await
    }

    async fn try_finish_outbox(&self, finished: &[Finished]) -> StoreResult<Vec<LiveEvent>> {
        if finished.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut statements = Vec::new();
        let sent: Vec<i64> = finished
            .iter()
            .filter(|row| {
                matches!(
                    row.outcome,
                    Outcome::Sent {
                        platform_message_id: None
                    }
                )
            })
            .map(|row| row.outbox_id)
            .collect();
        // One statement text whatever the batch, so that it is prepared once: on SQLite a
        // statement for each row (the group writer runs each without a hand-off; SQLite
        // resolves `$n` by a linear search, so a statement of N placeholders would be parsed
        // in time quadratic in N), on PostgreSQL one statement with the ids as a JSON list.
        match self.backend() {
            Backend::Sqlite => statements.extend(sent.iter().map(|id| {
                Statement::new(
                    "UPDATE outbox SET status = 'sent', attempts = attempts + 1, done_at = $1, \
                     locked_until = NULL, locked_by = NULL WHERE id = $2",
                    vec![now.into(), Bind::Int(*id)],
                )
            })),
            // The bounds of the ids too, so that the plan is a scan of the primary key's range
            // whatever the table's size when it was cached: with the list alone, the plan
            // PostgreSQL cached while the table was small scanned all of it for every batch
            // until the next ANALYZE (docs/performance.md).
            Backend::Postgres if !sent.is_empty() => statements.push(Statement::new(
                "UPDATE outbox SET status = 'sent', attempts = attempts + 1, done_at = $1, \
                 locked_until = NULL, locked_by = NULL WHERE id >= $3 AND id <= $4 \
                 AND id IN (SELECT value::bigint FROM json_array_elements_text($2::json))",
                vec![
                    now.into(),
                    json_text(&sent)?.into(),
                    sent.iter().min().copied().into(),
                    sent.iter().max().copied().into(),
                ],
            )),
            Backend::Postgres => {}
        }
        for row in finished {
            let id = row.outbox_id;
            match &row.outcome {
                Outcome::Sent {
                    platform_message_id: None,
                } => {}
                Outcome::Sent {
                    platform_message_id: Some(platform_id),
                } => {
                    statements.push(Statement::new(
                        "UPDATE outbox SET status = 'sent', attempts = attempts + 1, \
                         done_at = $1, platform_message_id = $2, locked_until = NULL, \
                         locked_by = NULL WHERE id = $3",
                        vec![now.into(), platform_id.into(), id.into()],
                    ));
                    if let Some(message_id) = &row.message_id {
                        // The receipt makes the platform id lead back to the message; a
                        // platform id some other message holds already is left alone rather
                        // than fail the whole batch.
                        statements.push(Statement::new(
                            "UPDATE messages SET platform_message_id = $1 WHERE id = $2 \
                             AND platform_message_id IS NULL AND NOT EXISTS (SELECT 1 FROM \
                             messages x WHERE x.channel = messages.channel \
                             AND x.platform_message_id = $1)",
                            vec![platform_id.into(), message_id.into()],
                        ));
                    }
                }
                Outcome::Retry { at_ms, error } => statements.push(Statement::new(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, \
                     last_error = $2, locked_until = NULL, locked_by = NULL WHERE id = $3",
                    vec![(*at_ms).into(), error.into(), id.into()],
                )),
                Outcome::Deferred { until_ms } => statements.push(Statement::new(
                    "UPDATE outbox SET next_attempt_at = $1, locked_until = NULL, \
                     locked_by = NULL WHERE id = $2",
                    vec![(*until_ms).into(), id.into()],
                )),
                Outcome::Dead { error } => statements.push(Statement::new(
                    "UPDATE outbox SET status = 'dead', attempts = attempts + 1, \
                     last_error = $1, done_at = $2, locked_until = NULL, locked_by = NULL \
                     WHERE id = $3",
                    vec![error.into(), now.into(), id.into()],
                )),
            }
        }
        let events = self.delivery_events(finished);
        // Each event's (conversation, number), given out by the database, as a JSON list.
        let keys = match self.backend() {
            Backend::Sqlite => {
                statements.extend(events.iter().map(|(conversation_id, _, event)| {
                    self.event_statement(conversation_id, 1, event, now, None)
                }));
                let numbers = self.run_script(statements).await?;
                numbered_keys(&events, &numbers)
            }
            Backend::Postgres => {
                statements.extend(delivery_events_statement(&events, now)?);
                let rows = self.run_script_rows(statements).await?;
                match rows.last() {
                    Some(Some(row)) => row.text(0),
                    // Read only when there are events, which the statement then returns.
                    _ => Err(StoreError::Corrupt(
                        "delivery events written, their numbers not returned".into(),
                    )),
                }
            }
        };
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Read the events back (one query for the batch). The outcomes are committed by now,
        // so a failed read-back is not an error for the caller to retry (that would record
        // them twice): the events are in the log, and a live follower fills the gap from it
        // at the next event.
        let written = match keys {
            Ok(keys) => self.events_numbered(&keys, events.len()).await,
            Err(error) => Err(error),
        };
        Ok(written.unwrap_or_else(|error| {
            tracing::warn!(error = %error, events = events.len(), "delivery events stored but not read back for publishing");
            Vec::new()
        }))
    }

    /// The `count` events at `keys` (a JSON list of `[conversation id, number]`), read back
    /// with the message each is about. One statement text for any number of events, so that
    /// it is prepared once.
    async fn events_numbered(&self, keys: &str, count: usize) -> StoreResult<Vec<LiveEvent>> {
        let sql = match self.backend() {
            Backend::Sqlite => concat_event_query!(
                "FROM json_each($1) AS k \
                 JOIN conversation_events e ON e.conversation_id = json_extract(k.value, '$[0]') \
                 AND e.seq = json_extract(k.value, '$[1]') \
                 JOIN conversations c ON c.id = e.conversation_id \
                 LEFT JOIN messages m ON m.id = e.message_id \
                 ORDER BY e.conversation_id, e.seq"
            ),
            // Each key looked up on its own (LATERAL), so that the plan is index lookups
            // whatever the tables' size when it was cached: as a join, the plan PostgreSQL
            // cached while the tables were small scanned the whole event log for every batch
            // until the next ANALYZE (docs/performance.md).
            Backend::Postgres => concat!(
                "SELECT e.* FROM json_array_elements($1::json) AS k CROSS JOIN LATERAL (",
                concat_event_query!(
                    "FROM conversation_events e \
                     JOIN conversations c ON c.id = e.conversation_id \
                     LEFT JOIN messages m ON m.id = e.message_id \
                     WHERE e.conversation_id = k.value->>0 AND e.seq = (k.value->>1)::bigint \
                     LIMIT 1"
                ),
                ") AS e ORDER BY e.conversation_id, e.seq"
            ),
        };
        // The read pool: on SQLite the write connection belongs to the group writer.
        let rows = sqlx::query(sql).bind(keys).fetch_all(&self.read).await?;
        let written = rows
            .iter()
            .map(super::events::event_of)
            .collect::<StoreResult<Vec<LiveEvent>>>()?;
        if written.len() != count {
            return Err(StoreError::Corrupt(format!(
                "{count} delivery events written, {} read back",
                written.len()
            )));
        }
        Ok(written)
    }

    /// The events a batch of outcomes makes: for message rows, delivered or failed for good.
    fn delivery_events(&self, finished: &[Finished]) -> Vec<(String, String, NewEvent)> {
        finished
            .iter()
            .filter_map(|row| {
                let message_id = row.message_id.clone()?;
                let (kind, data) = match &row.outcome {
                    Outcome::Sent { .. } => (EventKind::MessageDelivered, serde_json::json!({})),
                    Outcome::Dead { error } => (
                        EventKind::MessageFailed,
                        serde_json::json!({"error": error}),
                    ),
                    Outcome::Retry { .. } | Outcome::Deferred { .. } => return None,
                };
                let event = NewEvent {
                    kind,
                    actor: "outbox".into(),
                    data,
                    message_id: Some(message_id.clone()),
                };
                Some((row.lane.clone(), message_id, event))
            })
            .collect()
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

/// The keys of `events` numbered `numbers` by the script that wrote them (SQLite: an INSERT
/// each, in order).
fn numbered_keys(
    events: &[(String, String, NewEvent)],
    numbers: &[Option<i64>],
) -> StoreResult<String> {
    let returned = numbers.iter().flatten().count();
    if numbers.len() != events.len() || returned != events.len() {
        return Err(StoreError::Corrupt(format!(
            "{} delivery events written, {returned} numbers returned",
            events.len()
        )));
    }
    let keys: Vec<(&str, i64)> = events
        .iter()
        .zip(numbers)
        .map(|((conversation_id, _, _), seq)| (conversation_id.as_str(), seq.unwrap_or(0)))
        .collect();
    json_text(&keys)
}

/// PostgreSQL: one INSERT for every event of a batch, of one statement text whatever the
/// batch (the rows go as one JSON parameter). Each row adds its place among the batch's events
/// of the same conversation to the conversation's last number, read before the insert. The
/// statement returns the events' keys as one JSON list (`[[conversation id, number], ...]`):
/// the script's collecting SELECT aggregates its rows. PostgreSQL only: SQLite writes an
/// INSERT per event.
fn delivery_events_statement(
    events: &[(String, String, NewEvent)],
    now: i64,
) -> StoreResult<Option<Statement>> {
    if events.is_empty() {
        return Ok(None);
    }
    let mut places: HashMap<&str, i64> = HashMap::new();
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|(conversation_id, message_id, event)| {
            let place = places.entry(conversation_id.as_str()).or_default();
            *place += 1;
            serde_json::json!({
                "c": conversation_id,
                "p": *place,
                "k": event.kind.as_str(),
                "d": event.data.to_string(),
                "m": message_id,
            })
        })
        .collect();
    Ok(Some(
        Statement::new(
            "INSERT INTO conversation_events \
             (conversation_id, seq, kind, actor, data, message_id, created_at) \
             SELECT v.c, COALESCE((SELECT e.seq FROM conversation_events e \
             WHERE e.conversation_id = v.c ORDER BY e.seq DESC LIMIT 1), 0) + v.p, \
             v.k, 'outbox', v.d, v.m, $1 \
             FROM json_to_recordset($2::json) AS v(c text, p bigint, k text, d text, m text) \
             RETURNING conversation_id, seq",
            vec![now.into(), json_text(&rows)?.into()],
        )
        .returning_as(
            "json_agg(json_build_array(conversation_id, seq))::text",
            Returns::Text,
        ),
    ))
}
