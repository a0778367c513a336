//! The rows reports are computed from: conversations opened in a period with the events that
//! tell their story (opened, owner changes, agents' messages, ratings), and tasks created in
//! the period with their audit trail. Reports read the same events as the live view.

use sqlx::{AssertSqlSafe, Row};

use crate::store::{Backend, Store, StoreResult};

#[derive(Debug, Clone)]
pub struct ReportConversation {
    pub id: String,
    pub channel: String,
    pub language: Option<String>,
    pub status: String,
    pub created_at: i64,
    /// Tokens the language model used in it (LLM mode), as the provider counted them.
    pub llm_usage: LlmUsage,
}

/// A conversation's language model usage, from its assistant state (zero without LLM mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub requests: i64,
}

#[derive(Debug, Clone)]
pub struct ReportEvent {
    pub conversation_id: String,
    pub kind: String,
    pub actor: String,
    /// JSON.
    pub data: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct ReportTask {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub queue: String,
    pub created_at: i64,
    /// When a person (not a policy) approved it, if they did.
    pub approved_at: Option<i64>,
    /// When it began waiting for approval, if it did.
    pub awaiting_at: Option<i64>,
}

impl Store {
    /// Conversations opened in `[from, to)`, optionally on one channel instance.
    pub async fn report_conversations(
        &self,
        from: i64,
        to: i64,
        channel: Option<&str>,
    ) -> StoreResult<Vec<ReportConversation>> {
        // The usage is read where the LLM assistant keeps it (`llm.usage` in the state), in
        // the database: the rest of the state (the dialogue's history) stays there.
        let usage = |field: &str| match self.backend() {
            Backend::Sqlite => format!(
                "COALESCE(json_extract(assistant_state, '$.llm.usage.{field}'), 0) AS {field}"
            ),
            Backend::Postgres => format!(
                "COALESCE((assistant_state::jsonb #>> '{{llm,usage,{field}}}')::bigint, 0) AS {field}"
            ),
        };
        let sql = format!(
            "SELECT id, channel, language, status, created_at, {}, {}, {} FROM conversations \
             WHERE created_at >= $1 AND created_at < $2 AND ($3 = '' OR channel = $3) \
             ORDER BY created_at",
            usage("prompt_tokens"),
            usage("completion_tokens"),
            usage("requests"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .bind(channel.unwrap_or(""))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ReportConversation {
                    id: row.try_get("id")?,
                    channel: row.try_get("channel")?,
                    language: row.try_get("language")?,
                    status: row.try_get("status")?,
                    created_at: row.try_get("created_at")?,
                    llm_usage: LlmUsage {
                        prompt_tokens: row.try_get("prompt_tokens")?,
                        completion_tokens: row.try_get("completion_tokens")?,
                        requests: row.try_get("requests")?,
                    },
                })
            })
            .collect()
    }

    /// The events reports need of the conversations opened in `[from, to)`: owner changes,
    /// agents' messages and ratings, in order.
    pub async fn report_events(&self, from: i64, to: i64) -> StoreResult<Vec<ReportEvent>> {
        let rows = sqlx::query(
            "SELECT e.conversation_id, e.kind, e.actor, e.data, e.created_at \
             FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id \
             WHERE c.created_at >= $1 AND c.created_at < $2 \
             AND (e.kind IN ('owner.changed', 'conversation.rated') \
                  OR (e.kind = 'message.stored' AND e.actor LIKE 'agent%')) \
             ORDER BY e.conversation_id, e.seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReportEvent {
                    conversation_id: row.try_get("conversation_id")?,
                    kind: row.try_get("kind")?,
                    actor: row.try_get("actor")?,
                    data: row.try_get("data")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Tasks created in `[from, to)`, with when they awaited and got a person's approval.
    pub async fn report_tasks(&self, from: i64, to: i64) -> StoreResult<Vec<ReportTask>> {
        let rows = sqlx::query(
            "SELECT t.id, t.kind, t.status, t.queue, t.created_at, \
             (SELECT MIN(e.created_at) FROM task_events e WHERE e.task_id = t.id \
                AND e.to_status = 'awaiting_approval') AS awaiting_at, \
             (SELECT MIN(e.created_at) FROM task_events e WHERE e.task_id = t.id \
                AND e.to_status = 'approved' AND e.from_status = 'awaiting_approval') \
                AS approved_at \
             FROM tasks t WHERE t.created_at >= $1 AND t.created_at < $2 ORDER BY t.created_at",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReportTask {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    status: row.try_get("status")?,
                    queue: row.try_get("queue")?,
                    created_at: row.try_get("created_at")?,
                    awaiting_at: row.try_get("awaiting_at")?,
                    approved_at: row.try_get("approved_at")?,
                })
            })
            .collect()
    }
}
