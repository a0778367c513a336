//! What agents do to a conversation besides moving its owner (which is the router's
//! [`Store::transfer_conversation`]): replies and system messages, private notes, labels and
//! the customer's rating, each with its event; and the queue rows the console lists.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use switchboard_connector::{
    AuthorKind, Choice, EventKind, InboundEvent, LiveEvent, OutboundMessage,
};

use crate::store::events::{MessageFields, NewEvent, Place, live, with_message};
use crate::store::script::Statement;
use crate::store::{
    Conversation, Ingested, OutboxRow, Store, StoreError, StoreResult, json_text, new_id, now_ms,
};

/// A message to the customer that is not a bot turn's reply: an agent's answer, a notice.
#[derive(Debug, Clone)]
pub struct PostMessage {
    pub author: AuthorKind,
    /// The agent's user id.
    pub author_id: Option<String>,
    /// Who the event names: `agent:<id>`, `console`, `router`.
    pub actor: String,
    pub text: String,
    pub choices: Vec<Choice>,
}

/// A conversation as the console's queue shows it.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub id: String,
    pub contact_id: String,
    pub contact_name: Option<String>,
    pub channel: String,
    pub thread: String,
    pub status: String,
    pub owner: String,
    pub version: i64,
    pub language: Option<String>,
    /// JSON array.
    pub labels: String,
    pub rating: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seq: i64,
    pub last_event_at: i64,
    /// When the owner last changed (for a queued conversation: when it was queued).
    pub owner_changed_at: Option<i64>,
    pub first_agent_message_at: Option<i64>,
    pub last_message_author: Option<String>,
    pub last_message_text: Option<String>,
    pub last_message_at: Option<i64>,
}

/// Which conversations to list.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    /// Any of these statuses (empty: any).
    pub statuses: Vec<String>,
    /// Any of these owners (`queue:support`, `agent:<id>`); None: any.
    pub owners: Option<Vec<String>>,
    pub channel: Option<String>,
    pub language: Option<String>,
    pub ids: Option<Vec<String>>,
    /// Only conversations with an event at or after this time.
    pub changed_since: Option<i64>,
    pub limit: i64,
}

const QUEUE_SELECT: &str = "SELECT c.id, c.contact_id, k.display_name, c.channel, c.thread, \
     c.status, c.owner, c.version, c.language, c.labels, c.rating, c.created_at, c.updated_at, \
     (SELECT MAX(e.seq) FROM conversation_events e WHERE e.conversation_id = c.id) AS last_seq, \
     (SELECT MAX(e.created_at) FROM conversation_events e WHERE e.conversation_id = c.id) \
        AS last_event_at, \
     (SELECT MAX(e.created_at) FROM conversation_events e WHERE e.conversation_id = c.id \
        AND e.kind = 'owner.changed') AS owner_changed_at, \
     (SELECT MIN(m.created_at) FROM messages m WHERE m.conversation_id = c.id \
        AND m.author_kind = 'agent') AS first_agent_at, \
     lm.author_kind AS last_author, lm.text AS last_text, lm.created_at AS last_at \
     FROM conversations c JOIN contacts k ON k.id = c.contact_id \
     LEFT JOIN messages lm ON lm.conversation_id = c.id AND lm.seq = \
        (SELECT MAX(m2.seq) FROM messages m2 WHERE m2.conversation_id = c.id) \
     WHERE 1 = 1";

fn queue_row_of(row: &sqlx::any::AnyRow) -> StoreResult<QueueRow> {
    Ok(QueueRow {
        id: row.try_get("id")?,
        contact_id: row.try_get("contact_id")?,
        contact_name: row.try_get("display_name")?,
        channel: row.try_get("channel")?,
        thread: row.try_get("thread")?,
        status: row.try_get("status")?,
        owner: row.try_get("owner")?,
        version: row.try_get("version")?,
        language: row.try_get("language")?,
        labels: row.try_get("labels")?,
        rating: row.try_get("rating")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seq: row.try_get::<Option<i64>, _>("last_seq")?.unwrap_or(0),
        last_event_at: row.try_get::<Option<i64>, _>("last_event_at")?.unwrap_or(0),
        owner_changed_at: row.try_get("owner_changed_at")?,
        first_agent_message_at: row.try_get("first_agent_at")?,
        last_message_author: row.try_get("last_author")?,
        last_message_text: row.try_get("last_text")?,
        last_message_at: row.try_get("last_at")?,
    })
}

/// Placeholders `$from..` for `count` binds, comma-separated.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|index| format!("${index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Conversations matching `filter`, most recently changed first.
    pub async fn queue(&self, filter: &QueueFilter) -> StoreResult<Vec<QueueRow>> {
        let mut sql = QUEUE_SELECT.to_string();
        let mut texts: Vec<String> = Vec::new();
        // Only fixed column names and numbered placeholders are spliced in.
        let mut list = |sql: &mut String, column: &str, values: &[String]| {
            if values.is_empty() {
                sql.push_str(" AND 1 = 0");
                return;
            }
            let from = texts.len() + 1;
            texts.extend(values.iter().cloned());
            sql.push_str(&format!(
                " AND {column} IN ({})",
                placeholders(from, values.len())
            ));
        };
        if !filter.statuses.is_empty() {
            list(&mut sql, "c.status", &filter.statuses);
        }
        if let Some(owners) = &filter.owners {
            list(&mut sql, "c.owner", owners);
        }
        if let Some(ids) = &filter.ids {
            list(&mut sql, "c.id", ids);
        }
        for (column, value) in [
            ("c.channel", &filter.channel),
            ("c.language", &filter.language),
        ] {
            if let Some(value) = value {
                texts.push(value.clone());
                sql.push_str(&format!(" AND {column} = ${}", texts.len()));
            }
        }
        let mut next = texts.len() + 1;
        if filter.changed_since.is_some() {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM conversation_events e WHERE \
                 e.conversation_id = c.id AND e.created_at >= ${next})"
            ));
            next += 1;
        }
        sql.push_str(&format!(
            " ORDER BY c.updated_at DESC, c.id DESC LIMIT ${next}"
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for text in texts {
            query = query.bind(text);
        }
        if let Some(since) = filter.changed_since {
            query = query.bind(since);
        }
        let rows = query
            .bind(filter.limit.max(1))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(queue_row_of).collect()
    }

    /// Store a message to the customer with its outbox row (reserved for `instance`) and its
    /// event, if the conversation is still at the version `conversation` was read at: an
    /// agent's reply never lands after the conversation was taken from them.
    pub async fn post_message(
        &self,
        conversation: &Conversation,
        post: &PostMessage,
        instance: &str,
        lease: Duration,
    ) -> StoreResult<(OutboxRow, LiveEvent)> {
        self.retrying(StoreError::is_unique_violation, || {
            self.try_post_message(conversation, post, instance, lease)
        })
        .await
    }

    async fn try_post_message(
        &self,
        conversation: &Conversation,
        post: &PostMessage,
        instance: &str,
        lease: Duration,
    ) -> StoreResult<(OutboxRow, LiveEvent)> {
        let now = now_ms();
        let version = conversation.state.version;
        let message_id = new_id();
        let choices = json_text(&post.choices)?;
        let event = NewEvent {
            kind: EventKind::MessageStored,
            actor: post.actor.clone(),
            data: serde_json::json!({}),
            message_id: Some(message_id.clone()),
        };
        let statements = vec![
            Statement::new(
                "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                 author_id, text, attachments, channel, created_at, choices) \
                 VALUES ($1, (SELECT id FROM conversations WHERE id = $2 AND version = $9), \
                 COALESCE((SELECT seq FROM messages WHERE conversation_id = $2 \
                 ORDER BY seq DESC LIMIT 1), 0) + 1, 'out', $3, $4, $5, '[]', $6, $7, $8) \
                 RETURNING seq",
                vec![
                    (&message_id).into(),
                    (&conversation.id).into(),
                    post.author.as_str().into(),
                    post.author_id.clone().into(),
                    (&post.text).into(),
                    (&conversation.channel).into(),
                    now.into(),
                    choices.into(),
                    version.into(),
                ],
            )
            .returning("seq")
            .guarded(),
            Store::message_outbox_statement(
                &conversation.channel,
                &message_id,
                &conversation.id,
                now,
                now + lease.as_millis() as i64,
                instance,
                version,
            ),
            self.event_statement(&conversation.id, 1, &event, now, Some(version)),
        ];
        let values = self.run_script(statements).await?;
        let [Some(seq), Some(outbox_id), Some(event_seq)] = values.as_slice() else {
            return Err(StoreError::OwnerChanged(conversation.id.clone()));
        };
        let message = OutboundMessage {
            id: message_id.clone(),
            conversation_id: conversation.id.clone(),
            channel: conversation.channel.clone(),
            thread: conversation.thread.clone(),
            seq: *seq,
            author: post.author,
            text: post.text.clone(),
            attachments: Vec::new(),
            choices: post.choices.clone(),
            in_reply_to: None,
            references: Vec::new(),
            extensions: Default::default(),
            created_at_ms: now,
        };
        let place = Place {
            conversation_id: &conversation.id,
            channel: &conversation.channel,
            thread: &conversation.thread,
        };
        let data = with_message(
            &event.data,
            &MessageFields {
                id: &message_id,
                seq: *seq,
                author: post.author.as_str(),
                text: &post.text,
                platform_message_id: None,
            },
        );
        let live_event = live(&place, *event_seq, &event, data, now);
        let row = OutboxRow {
            id: *outbox_id,
            kind: "message".into(),
            channel: Some(conversation.channel.clone()),
            lane: conversation.id.clone(),
            message_id: Some(message_id),
            payload: "{}".into(),
            attempts: 0,
            message: Some(message),
        };
        Ok((row, live_event))
    }

    /// Record an event of a conversation that changes nothing else (a private note).
    pub async fn add_event(
        &self,
        conversation: &Conversation,
        event: &NewEvent,
    ) -> StoreResult<LiveEvent> {
        self.add_event_with(conversation, event, None).await
    }

    /// Replace a conversation's labels, with their event.
    pub async fn set_labels(
        &self,
        conversation: &Conversation,
        labels: &[String],
        actor: &str,
    ) -> StoreResult<LiveEvent> {
        let event = NewEvent {
            kind: EventKind::LabelsChanged,
            actor: actor.to_string(),
            data: serde_json::json!({ "labels": labels }),
            message_id: None,
        };
        let text = json_text(labels)?;
        let update = Statement::new(
            "UPDATE conversations SET labels = $1 WHERE id = $2",
            vec![text.into(), (&conversation.id).into()],
        );
        self.add_event_with(conversation, &event, Some(update))
            .await
    }

    async fn add_event_with(
        &self,
        conversation: &Conversation,
        event: &NewEvent,
        also: Option<Statement>,
    ) -> StoreResult<LiveEvent> {
        self.retrying(StoreError::is_unique_violation, || async {
            let now = now_ms();
            let mut statements = vec![self.event_statement(&conversation.id, 1, event, now, None)];
            statements.extend(also.clone());
            let values = self.run_script(statements).await?;
            let Some(Some(seq)) = values.first() else {
                return Err(StoreError::Corrupt("event not written".into()));
            };
            let place = Place {
                conversation_id: &conversation.id,
                channel: &conversation.channel,
                thread: &conversation.thread,
            };
            Ok(live(&place, *seq, event, event.data.clone(), now))
        })
        .await
    }

    /// Remember that the customer was asked to rate a resolved conversation.
    pub async fn mark_rating_asked(&self, conversation_id: &str, now: i64) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "UPDATE conversations SET rating_asked_at = $1 WHERE id = $2",
            vec![now.into(), conversation_id.into()],
        )])
        .await?;
        Ok(())
    }

    /// The latest resolved conversation of a channel thread whose customer was asked for a
    /// rating at or after `asked_after`.
    pub async fn rating_target(
        &self,
        channel: &str,
        thread: &str,
        asked_after: i64,
    ) -> StoreResult<Option<(String, Option<i64>)>> {
        let row = sqlx::query(
            "SELECT id, rating FROM conversations WHERE channel = $1 AND thread = $2 \
             AND status = 'resolved' AND rating_asked_at >= $3 \
             ORDER BY rating_asked_at DESC LIMIT 1",
        )
        .bind(channel)
        .bind(thread)
        .bind(asked_after)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((row.try_get("id")?, row.try_get("rating")?)))
    }

    /// Store the customer's rating message (or comment) in the resolved conversation it rates,
    /// deduplicated like any inbound message, with the rating and its event.
    pub async fn record_rating(
        &self,
        conversation: &Conversation,
        event: &InboundEvent,
        score: Option<i64>,
        comment: Option<&str>,
    ) -> StoreResult<Ingested> {
        self.retrying(StoreError::is_unique_violation, || async {
            if let Some(existing) = self
                .existing(&event.channel, &event.thread, &event.platform_message_id)
                .await?
            {
                return Ok(existing);
            }
            self.try_record_rating(conversation, event, score, comment)
                .await
        })
        .await
    }

    async fn try_record_rating(
        &self,
        conversation: &Conversation,
        event: &InboundEvent,
        score: Option<i64>,
        comment: Option<&str>,
    ) -> StoreResult<Ingested> {
        let now = now_ms();
        let message_id = new_id();
        let stored = NewEvent {
            kind: EventKind::MessageStored,
            actor: "customer".into(),
            data: serde_json::json!({}),
            message_id: Some(message_id.clone()),
        };
        let rated = NewEvent {
            kind: EventKind::ConversationRated,
            actor: "customer".into(),
            data: serde_json::json!({"score": score, "comment": comment}),
            message_id: None,
        };
        let statements = vec![
            Statement::new(
                "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                 author_id, text, attachments, channel, platform_message_id, created_at, \
                 handled_at) SELECT $1, $2, COALESCE((SELECT seq FROM messages \
                 WHERE conversation_id = $2 ORDER BY seq DESC LIMIT 1), 0) + 1, 'in', \
                 'customer', $3, $4, '[]', $5, $6, $7, $7 RETURNING seq",
                vec![
                    (&message_id).into(),
                    (&conversation.id).into(),
                    (&event.sender.platform_user_id).into(),
                    (&event.text).into(),
                    (&event.channel).into(),
                    (&event.platform_message_id).into(),
                    now.into(),
                ],
            )
            .returning("seq"),
            self.event_statement(&conversation.id, 1, &stored, now, None),
            self.event_statement(&conversation.id, 2, &rated, now, None),
            Statement::new(
                "UPDATE conversations SET rating = COALESCE($1, rating), \
                 rating_comment = COALESCE($2, rating_comment) WHERE id = $3",
                vec![
                    score.into(),
                    comment.map(str::to_string).into(),
                    (&conversation.id).into(),
                ],
            ),
        ];
        let values = self.run_script(statements).await?;
        let [Some(seq), Some(stored_seq), Some(rated_seq)] = values.as_slice() else {
            return Err(StoreError::Corrupt("rating not written".into()));
        };
        let place = Place {
            conversation_id: &conversation.id,
            channel: &conversation.channel,
            thread: &conversation.thread,
        };
        let data = with_message(
            &stored.data,
            &MessageFields {
                id: &message_id,
                seq: *seq,
                author: AuthorKind::Customer.as_str(),
                text: &event.text,
                platform_message_id: Some(&event.platform_message_id),
            },
        );
        Ok(Ingested {
            message_id,
            conversation_id: conversation.id.clone(),
            seq: *seq,
            duplicate: false,
            other_thread: false,
            handled: true,
            reopened: false,
            events: vec![
                live(&place, *stored_seq, &stored, data, now),
                live(&place, *rated_seq, &rated, rated.data.clone(), now),
            ],
        })
    }
}
