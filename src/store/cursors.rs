//! Durable cursors of channel instances, moved with compare-and-set.
//!
//! A connector reads its cursor, ingests what lies past it, then moves it from the version it
//! read. If two runs of the same instance race (a restart overlapping a slow shutdown, or two
//! instances of the app), one of them loses the compare and reads again, so no position is
//! ever moved backwards or skipped.

use sqlx::Row;
use switchboard_connector::Cursor;

use super::script::Statement;
use super::{Store, StoreResult, now_ms};

/// What a compare-and-set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorWrite {
    Written(Cursor),
    /// The cursor is not at the expected version: it is at this one (None: it does not exist).
    Conflict(Option<i64>),
}

impl Store {
    pub async fn cursor(&self, channel: &str, key: &str) -> StoreResult<Option<Cursor>> {
        let row = sqlx::query(
            "SELECT value, version FROM channel_cursors WHERE channel = $1 AND key = $2",
        )
        .bind(channel)
        .bind(key)
        .fetch_optional(&self.write)
        .await?;
        row.map(|row| {
            Ok(Cursor {
                value: row.try_get("value")?,
                version: row.try_get("version")?,
            })
        })
        .transpose()
    }

    /// Set the cursor to `value` if it is at version `expected` (None: if it does not exist).
    pub async fn set_cursor(
        &self,
        channel: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> StoreResult<CursorWrite> {
        let now = now_ms();
        let statement = match expected {
            None => Statement::new(
                "INSERT INTO channel_cursors (channel, key, value, version, updated_at) \
                 VALUES ($1, $2, $3, 1, $4) ON CONFLICT (channel, key) DO NOTHING \
                 RETURNING version",
                vec![channel.into(), key.into(), value.into(), now.into()],
            ),
            Some(version) => Statement::new(
                "UPDATE channel_cursors SET value = $3, version = version + 1, updated_at = $4 \
                 WHERE channel = $1 AND key = $2 AND version = $5 RETURNING version",
                vec![
                    channel.into(),
                    key.into(),
                    value.into(),
                    now.into(),
                    version.into(),
                ],
            ),
        }
        .returning("version");
        match self.run_script(vec![statement]).await?.first() {
            Some(Some(version)) => Ok(CursorWrite::Written(Cursor {
                value: value.to_string(),
                version: *version,
            })),
            _ => {
                let current = self.cursor(channel, key).await?;
                Ok(CursorWrite::Conflict(current.map(|cursor| cursor.version)))
            }
        }
    }
}
