//! The outbox as the workflow API shows it: the notices and webhooks a task caused, webhook
//! deliveries by status, and reviving a dead letter.

use sqlx::{AssertSqlSafe, Row};

use crate::store::{Store, StoreResult, now_ms};

/// One outbox row as the API shows deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub kind: String,
    pub lane: String,
    pub task_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub done_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, kind, lane, task_id, payload, status, attempts, last_error, \
                                next_attempt_at, created_at, done_at";

fn delivery_of(row: &sqlx::any::AnyRow) -> StoreResult<DeliveryRow> {
    Ok(DeliveryRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        lane: row.try_get("lane")?,
        task_id: row.try_get("task_id")?,
        payload: row.try_get("payload")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        done_at: row.try_get("done_at")?,
    })
}

impl Store {
    /// The outbox rows a task caused (customer notices and webhooks), oldest first.
    pub async fn task_deliveries(&self, task_id: &str) -> StoreResult<Vec<DeliveryRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE task_id = $1 ORDER BY id"
        )))
        .bind(task_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(delivery_of).collect()
    }

    /// Outbox rows of `kind`, optionally in one `status`, oldest first after the cursor.
    pub async fn deliveries(
        &self,
        kind: &str,
        status: Option<&str>,
        after_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE kind = $1 \
             AND ($2 IS NULL OR status = $2) AND id > $3 ORDER BY id LIMIT $4"
        )))
        .bind(kind)
        .bind(status)
        .bind(after_id.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(delivery_of).collect()
    }

    /// Give a dead-lettered row of `kind` a fresh set of attempts. `None` if there is no row of
    /// that kind with this id; `Some(false)` if it is not dead.
    pub async fn revive_delivery(&self, kind: &str, id: i64) -> StoreResult<Option<bool>> {
        let result = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             done_at = NULL, locked_until = NULL, locked_by = NULL \
             WHERE id = $2 AND kind = $3 AND status = 'dead'",
        )
        .bind(now_ms())
        .bind(id)
        .bind(kind)
        .execute(&self.write)
        .await?;
        if result.rows_affected() == 1 {
            return Ok(Some(true));
        }
        let exists = sqlx::query("SELECT 1 FROM outbox WHERE id = $1 AND kind = $2")
            .bind(id)
            .bind(kind)
            .fetch_optional(&self.write)
            .await?;
        Ok(exists.map(|_| false))
    }
}
