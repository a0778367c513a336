//! Threads a platform said can no longer be reached (Telegram's 403: the person blocked the
//! bot). The outbox gives up deliveries to a marked thread at once, without calling the
//! platform, until the customer writes on the thread again; agents see the mark on the
//! contact. The mark is lifted lazily, by the first delivery after such a message, so that
//! taking in a message costs nothing more. The outbox reads the marked threads once and keeps
//! them in memory, so a delivery to an unmarked thread costs no read at all.

use sqlx::Row;

use super::{Store, StoreResult, now_ms};

/// A thread's unreachable mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// What the platform said.
    pub reason: String,
    pub since_ms: i64,
}

/// A marked thread of a contact, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachableThread {
    pub channel: String,
    pub thread: String,
    pub mark: Unreachable,
}

impl Store {
    /// The mark of a thread, if it has one.
    pub async fn unreachable(
        &self,
        channel: &str,
        thread: &str,
    ) -> StoreResult<Option<Unreachable>> {
        let row = sqlx::query(
            "SELECT reason, since FROM unreachable_threads WHERE channel = $1 AND thread = $2",
        )
        .bind(channel)
        .bind(thread)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            Ok(Unreachable {
                reason: row.try_get("reason")?,
                since_ms: row.try_get("since")?,
            })
        })
        .transpose()
    }

    /// Every marked thread, `(channel, thread)`.
    pub async fn unreachable_threads(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT channel, thread FROM unreachable_threads")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("channel")?, row.try_get("thread")?)))
            .collect()
    }

    /// Mark a thread unreachable; a thread already marked keeps its first `since`.
    pub async fn mark_unreachable(
        &self,
        channel: &str,
        thread: &str,
        reason: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO unreachable_threads (channel, thread, reason, since) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (channel, thread) DO UPDATE SET reason = excluded.reason",
        )
        .bind(channel)
        .bind(thread)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Lift the mark of a thread if the customer wrote on it after it was set, and say
    /// whether it was lifted (true: the thread is reachable again).
    pub async fn lift_unreachable_if_written(
        &self,
        channel: &str,
        thread: &str,
        mark: &Unreachable,
    ) -> StoreResult<bool> {
        let written = sqlx::query(
            "SELECT 1 FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE c.channel = $1 AND c.thread = $2 AND m.direction = 'in' \
             AND m.created_at > $3 LIMIT 1",
        )
        .bind(channel)
        .bind(thread)
        .bind(mark.since_ms)
        .fetch_optional(&self.read)
        .await?
        .is_some();
        if written {
            // Only this mark: one set again meanwhile (another 403) stays.
            sqlx::query(
                "DELETE FROM unreachable_threads \
                 WHERE channel = $1 AND thread = $2 AND since = $3",
            )
            .bind(channel)
            .bind(thread)
            .bind(mark.since_ms)
            .execute(&self.write)
            .await?;
        }
        Ok(written)
    }

    /// The marked threads of a contact's conversations.
    pub async fn contact_unreachable(
        &self,
        contact_id: &str,
    ) -> StoreResult<Vec<UnreachableThread>> {
        let rows = sqlx::query(
            "SELECT u.channel, u.thread, u.reason, u.since FROM unreachable_threads u \
             WHERE EXISTS (SELECT 1 FROM conversations c WHERE c.contact_id = $1 \
             AND c.channel = u.channel AND c.thread = u.thread) \
             ORDER BY u.since, u.channel, u.thread",
        )
        .bind(contact_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UnreachableThread {
                    channel: row.try_get("channel")?,
                    thread: row.try_get("thread")?,
                    mark: Unreachable {
                        reason: row.try_get("reason")?,
                        since_ms: row.try_get("since")?,
                    },
                })
            })
            .collect()
    }
}
