//! Conversation events: every change of a conversation is a row with the next number of its
//! conversation, written in the same script as the change itself.
//!
//! The number is the conversation's last one plus the event's place among the events the
//! script writes. SQLite runs a script's statements one after another, so each insert sees
//! the one before it and adds one; PostgreSQL runs a script as one statement on one
//! snapshot, so each insert adds its place in the script. Two writers racing for a number
//! collide on the unique index, and the loser's whole script is retried.

use serde_json::{Value, json};
use sqlx::Row;
use switchboard_connector::{EventKind, LiveEvent};

use super::script::{Bind, Statement};
use super::{Backend, Store, StoreError, StoreResult, author_of};

/// The columns [`event_of`] reads, for a query of `conversation_events e`, its conversation
/// `c` and the message `m` it is about (`LEFT JOIN`), then `$from` (the FROM clause onwards).
macro_rules! concat_event_query {
    ($from:literal) => {
        concat!(
            "SELECT e.conversation_id, c.channel, c.thread, e.seq, e.kind, e.actor, e.data, \
             e.created_at, e.message_id, m.seq AS message_seq, m.author_kind, m.text, \
             m.platform_message_id ",
            $from
        )
    };
}
pub(super) use concat_event_query;

/// An event to write.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub actor: String,
    pub data: Value,
    /// The message a message event is about.
    pub message_id: Option<String>,
}

/// What a live event says about its message, the same whether it is built at write time or
/// read back from the rows.
pub(super) struct MessageFields<'a> {
    pub id: &'a str,
    pub seq: i64,
    pub author: &'a str,
    pub text: &'a str,
    pub platform_message_id: Option<&'a str>,
}

/// `data` of a message event: its own fields plus the message's.
pub(super) fn with_message(data: &Value, message: &MessageFields<'_>) -> Value {
    let mut merged = match data {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    merged.insert("message_id".into(), message.id.into());
    merged.insert("seq".into(), message.seq.into());
    merged.insert("author".into(), message.author.into());
    merged.insert("text".into(), message.text.into());
    merged.insert(
        "platform_message_id".into(),
        message
            .platform_message_id
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    Value::Object(merged)
}

/// Where an event belongs, for building [`LiveEvent`]s.
#[derive(Debug, Clone)]
pub(super) struct Place<'a> {
    pub conversation_id: &'a str,
    pub channel: &'a str,
    pub thread: &'a str,
}

pub(super) fn live(
    place: &Place<'_>,
    seq: i64,
    event: &NewEvent,
    data: Value,
    now: i64,
) -> LiveEvent {
    LiveEvent {
        conversation_id: place.conversation_id.to_string(),
        channel: place.channel.to_string(),
        thread: place.thread.to_string(),
        seq,
        kind: event.kind,
        actor: event.actor.clone(),
        data,
        created_at_ms: now,
    }
}

impl Store {
    /// How much an event adds to the conversation's last number, given its place (from 1)
    /// among the events its script writes for that conversation.
    pub(super) fn event_offset(&self, place_in_script: i64) -> i64 {
        match self.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => place_in_script,
        }
    }

    /// Insert `event` as the next event of `conversation_id`; with `version`, only while the
    /// conversation is still at that version (a turn's guard). Returns its number.
    pub(super) fn event_statement(
        &self,
        conversation_id: &str,
        place_in_script: i64,
        event: &NewEvent,
        now: i64,
        version: Option<i64>,
    ) -> Statement {
        let mut binds: Vec<Bind> = vec![
            conversation_id.into(),
            self.event_offset(place_in_script).into(),
            event.kind.as_str().into(),
            (&event.actor).into(),
            event.data.to_string().into(),
            event.message_id.clone().into(),
            now.into(),
        ];
        match version {
            None => Statement::new(
                "INSERT INTO conversation_events \
                 (conversation_id, seq, kind, actor, data, message_id, created_at) \
                 VALUES ($1, COALESCE((SELECT e.seq FROM conversation_events e \
                 WHERE e.conversation_id = $1 ORDER BY e.seq DESC LIMIT 1), 0) + $2, \
                 $3, $4, $5, $6, $7) RETURNING seq",
                binds,
            )
            .returning("seq"),
            Some(version) => {
                binds.push(version.into());
                Statement::new(
                    "INSERT INTO conversation_events \
                     (conversation_id, seq, kind, actor, data, message_id, created_at) \
                     VALUES ((SELECT id FROM conversations WHERE id = $1 AND version = $8), \
                     COALESCE((SELECT e.seq FROM conversation_events e \
                     WHERE e.conversation_id = $1 ORDER BY e.seq DESC LIMIT 1), 0) + $2, \
                     $3, $4, $5, $6, $7) RETURNING seq",
                    binds,
                )
                .returning("seq")
                .guarded()
            }
        }
    }

    /// The events of a conversation after number `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        conversation_id: &str,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<LiveEvent>> {
        let rows = sqlx::query(concat_event_query!(
            "FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id \
             LEFT JOIN messages m ON m.id = e.message_id \
             WHERE e.conversation_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3"
        ))
        .bind(conversation_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_of).collect()
    }

    /// The number of a conversation's latest event (0: none yet).
    pub async fn last_event_seq(&self, conversation_id: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM conversation_events \
             WHERE conversation_id = $1",
        )
        .bind(conversation_id)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("seq")?)
    }
}

pub(super) fn event_of(row: &sqlx::any::AnyRow) -> StoreResult<LiveEvent> {
    let kind: &str = row.try_get("kind")?;
    let kind =
        EventKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("event kind {kind}")))?;
    let data: &str = row.try_get("data")?;
    let data: Value = serde_json::from_str(data)
        .map_err(|error| StoreError::Corrupt(format!("event data: {error}")))?;
    let message_id: Option<String> = row.try_get("message_id")?;
    let data = match &message_id {
        Some(id) => {
            let author: Option<String> = row.try_get("author_kind")?;
            let author = author.unwrap_or_else(|| "system".into());
            author_of(&author)?;
            let text: Option<String> = row.try_get("text")?;
            let platform: Option<String> = row.try_get("platform_message_id")?;
            with_message(
                &data,
                &MessageFields {
                    id,
                    seq: row.try_get::<Option<i64>, _>("message_seq")?.unwrap_or(0),
                    author: &author,
                    text: text.as_deref().unwrap_or_default(),
                    platform_message_id: platform.as_deref(),
                },
            )
        }
        None => data,
    };
    Ok(LiveEvent {
        conversation_id: row.try_get("conversation_id")?,
        channel: row.try_get("channel")?,
        thread: row.try_get("thread")?,
        seq: row.try_get("seq")?,
        kind,
        actor: row.try_get("actor")?,
        data,
        created_at_ms: row.try_get("created_at")?,
    })
}

/// `{}` as event data, the common case.
pub(super) fn no_data() -> Value {
    json!({})
}
