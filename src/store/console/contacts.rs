//! Contacts as the console shows them: search, one contact with its identities and
//! conversations, the history of all their conversations across channels, and merging two
//! contacts into one.

use sqlx::Row;

use crate::store::{Store, StoreError, StoreResult, attachments_of, author_of};
use switchboard_connector::{Attachment, AuthorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRow {
    pub id: String,
    pub display_name: Option<String>,
    pub created_at: i64,
    pub merged_into: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactIdentityRow {
    pub channel: String,
    pub platform_user_id: String,
    /// The person's handle on the platform, if it has one.
    pub username: Option<String>,
    pub verified: bool,
}

/// A conversation of a contact, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSummary {
    pub conversation_id: String,
    pub channel: String,
    pub status: String,
    pub owner: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub rating: Option<i64>,
}

/// One message of a contact's history, with the conversation and channel it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    pub id: String,
    pub conversation_id: String,
    pub channel: String,
    pub seq: i64,
    pub author: AuthorKind,
    pub author_id: Option<String>,
    pub text: String,
    pub created_at: i64,
    /// Files that came with the message (for email, the raw mail first).
    pub attachments: Vec<Attachment>,
}

impl Store {
    pub async fn contact(&self, id: &str) -> StoreResult<Option<ContactRow>> {
        let row = sqlx::query(
            "SELECT id, display_name, created_at, merged_into FROM contacts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ContactRow {
            id: row.try_get("id")?,
            display_name: row.try_get("display_name")?,
            created_at: row.try_get("created_at")?,
            merged_into: row.try_get("merged_into")?,
        }))
    }

    /// Contacts (not merged away) whose name, channel identity or linked email contains
    /// `query`, case-insensitively; newest first.
    pub async fn search_contacts(&self, query: &str, limit: i64) -> StoreResult<Vec<ContactRow>> {
        let pattern = format!(
            "%{}%",
            query
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = sqlx::query(
            "SELECT c.id, c.display_name, c.created_at, c.merged_into FROM contacts c \
             WHERE c.merged_into IS NULL AND (LOWER(COALESCE(c.display_name, '')) LIKE $1 \
             ESCAPE '\\' OR c.id = $2 \
             OR EXISTS (SELECT 1 FROM contact_identities i WHERE i.contact_id = c.id \
                AND (LOWER(i.platform_user_id) LIKE $1 ESCAPE '\\' \
                OR LOWER(COALESCE(i.username, '')) LIKE $1 ESCAPE '\\')) \
             OR EXISTS (SELECT 1 FROM contact_emails m WHERE m.contact_id = c.id \
                AND m.email LIKE $1 ESCAPE '\\')) \
             ORDER BY c.created_at DESC, c.id DESC LIMIT $3",
        )
        .bind(&pattern)
        .bind(query.trim())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ContactRow {
                    id: row.try_get("id")?,
                    display_name: row.try_get("display_name")?,
                    created_at: row.try_get("created_at")?,
                    merged_into: row.try_get("merged_into")?,
                })
            })
            .collect()
    }

    pub async fn contact_identities(
        &self,
        contact_id: &str,
    ) -> StoreResult<Vec<ContactIdentityRow>> {
        let rows = sqlx::query(
            "SELECT channel, platform_user_id, username, verified FROM contact_identities \
             WHERE contact_id = $1 ORDER BY created_at, channel",
        )
        .bind(contact_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ContactIdentityRow {
                    channel: row.try_get("channel")?,
                    platform_user_id: row.try_get("platform_user_id")?,
                    username: row.try_get("username")?,
                    verified: row.try_get::<i64, _>("verified")? != 0,
                })
            })
            .collect()
    }

    /// A contact's conversations, newest first.
    pub async fn contact_conversations(
        &self,
        contact_id: &str,
    ) -> StoreResult<Vec<ContactSummary>> {
        let rows = sqlx::query(
            "SELECT id, channel, status, owner, created_at, updated_at, rating FROM conversations \
             WHERE contact_id = $1 ORDER BY created_at DESC, id DESC LIMIT 200",
        )
        .bind(contact_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ContactSummary {
                    conversation_id: row.try_get("id")?,
                    channel: row.try_get("channel")?,
                    status: row.try_get("status")?,
                    owner: row.try_get("owner")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    rating: row.try_get("rating")?,
                })
            })
            .collect()
    }

    /// The latest `limit` messages of every conversation of a contact, on every channel,
    /// oldest first.
    pub async fn contact_history(
        &self,
        contact_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<HistoryMessage>> {
        let rows = sqlx::query(
            "SELECT m.id, m.conversation_id, c.channel, m.seq, m.author_kind, m.author_id, \
             m.text, m.created_at, m.attachments \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE c.contact_id = $1 ORDER BY m.created_at DESC, m.seq DESC LIMIT $2",
        )
        .bind(contact_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut messages = rows
            .iter()
            .map(|row| {
                Ok(HistoryMessage {
                    id: row.try_get("id")?,
                    conversation_id: row.try_get("conversation_id")?,
                    channel: row.try_get("channel")?,
                    seq: row.try_get("seq")?,
                    author: author_of(row.try_get::<&str, _>("author_kind")?)?,
                    author_id: row.try_get("author_id")?,
                    text: row.try_get("text")?,
                    created_at: row.try_get("created_at")?,
                    attachments: attachments_of(row.try_get("attachments")?)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// Merge contact `from` into `into`: its channel identities, linked emails,
    /// conversations and tasks move over, and `from` is marked as merged. Returns false when
    /// `from` was merged already (nothing changes).
    pub async fn merge_contacts(&self, into: &str, from: &str, now: i64) -> StoreResult<bool> {
        if into == from {
            return Err(StoreError::Corrupt(
                "a contact cannot merge into itself".into(),
            ));
        }
        // Plain statements in one transaction: the later ones depend on the first having
        // marked the contact (a PostgreSQL script would run them all on one snapshot).
        let mut tx = self.write.begin().await?;
        let marked = sqlx::query(
            "UPDATE contacts SET merged_into = $1 WHERE id = $2 AND merged_into IS NULL \
             AND EXISTS (SELECT 1 FROM contacts WHERE id = $1 AND merged_into IS NULL)",
        )
        .bind(into)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let moves = [
            "UPDATE contact_identities SET contact_id = $1 WHERE contact_id = $2",
            "UPDATE conversations SET contact_id = $1 WHERE contact_id = $2",
            "UPDATE tasks SET contact_id = $1 WHERE contact_id = $2",
        ];
        for statement in moves {
            sqlx::query(statement)
                .bind(into)
                .bind(from)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO contact_emails (contact_id, email, source, created_at) \
             SELECT $1, email, $3, $4 FROM contact_emails WHERE contact_id = $2 \
             ON CONFLICT (contact_id, email) DO NOTHING",
        )
        .bind(into)
        .bind(from)
        .bind(format!("merge:{from}"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
