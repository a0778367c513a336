//! API keys: only their hash is stored; revoked keys stay, marked, for the audit trail.

use sqlx::Row;

use crate::store::script::Statement;
use crate::store::{Store, StoreResult, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the key; the key itself is never stored.
    pub key_hash: String,
    /// Space-separated.
    pub scopes: String,
    pub roles: String,
    pub created_at: i64,
}

impl Store {
    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO api_keys (id, name, key_hash, scopes, roles, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                (&key.id).into(),
                (&key.name).into(),
                (&key.key_hash).into(),
                (&key.scopes).into(),
                (&key.roles).into(),
                key.created_at.into(),
            ],
        )])
        .await?;
        Ok(())
    }

    pub async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRow>> {
        let row = sqlx::query(
            "SELECT id, name, key_hash, scopes, roles, created_at FROM api_keys \
             WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ApiKeyRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            key_hash: row.try_get("key_hash")?,
            scopes: row.try_get("scopes")?,
            roles: row.try_get("roles")?,
            created_at: row.try_get("created_at")?,
        }))
    }

    /// Every API key (never the keys themselves), newest first, with when it was revoked.
    pub async fn api_keys(&self) -> StoreResult<Vec<(ApiKeyRow, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT id, name, key_hash, scopes, roles, created_at, revoked_at FROM api_keys \
             ORDER BY created_at DESC, id DESC",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    ApiKeyRow {
                        id: row.try_get("id")?,
                        name: row.try_get("name")?,
                        key_hash: row.try_get("key_hash")?,
                        scopes: row.try_get("scopes")?,
                        roles: row.try_get("roles")?,
                        created_at: row.try_get("created_at")?,
                    },
                    row.try_get("revoked_at")?,
                ))
            })
            .collect()
    }

    /// Revoke an API key; false when no key has that id or it was revoked already.
    pub async fn revoke_api_key(&self, id: &str) -> StoreResult<bool> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.write)
                .await?;
        Ok(result.rows_affected() == 1)
    }
}
