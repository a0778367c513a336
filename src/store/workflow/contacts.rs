//! Contacts as the workflow sees them: whether one exists, who is behind a channel identity,
//! the emails linked to them (which make shop orders theirs), and their latest conversation.

use sqlx::Row;

use crate::store::script::Statement;
use crate::store::{Store, StoreResult, now_ms};

impl Store {
    pub async fn contact_exists(&self, contact_id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT id FROM contacts WHERE id = $1")
            .bind(contact_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }

    /// The contact a channel identity belongs to.
    pub async fn contact_by_identity(
        &self,
        channel: &str,
        platform_user_id: &str,
    ) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT contact_id FROM contact_identities \
             WHERE channel = $1 AND platform_user_id = $2",
        )
        .bind(channel)
        .bind(platform_user_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| row.try_get("contact_id"))
            .transpose()
            .map_err(Into::into)
    }

    /// The emails a trusted party linked to a contact (normalised, lower case).
    pub async fn contact_emails(&self, contact_id: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT email FROM contact_emails WHERE contact_id = $1 ORDER BY created_at, email",
        )
        .bind(contact_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| row.try_get("email").map_err(Into::into))
            .collect()
    }

    /// Link an email to a contact; `source` records who vouched for it. Idempotent.
    pub async fn link_contact_email(
        &self,
        contact_id: &str,
        email: &str,
        source: &str,
    ) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO contact_emails (contact_id, email, source, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (contact_id, email) DO NOTHING",
            vec![
                contact_id.into(),
                email.into(),
                source.into(),
                now_ms().into(),
            ],
        )])
        .await?;
        Ok(())
    }

    /// Link `email` to the contact behind a channel identity (which must exist: it is created
    /// with the identity's first message).
    pub async fn link_identity_email(
        &self,
        channel: &str,
        platform_user_id: &str,
        email: &str,
        source: &str,
    ) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO contact_emails (contact_id, email, source, created_at) \
             SELECT contact_id, $3, $4, $5 FROM contact_identities \
             WHERE channel = $1 AND platform_user_id = $2 \
             ON CONFLICT (contact_id, email) DO NOTHING",
            vec![
                channel.into(),
                platform_user_id.into(),
                email.into(),
                source.into(),
                now_ms().into(),
            ],
        )])
        .await?;
        Ok(())
    }

    /// The contact's most recently active conversation.
    pub async fn latest_conversation(&self, contact_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT id FROM conversations WHERE contact_id = $1 \
             ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(contact_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| row.try_get("id"))
            .transpose()
            .map_err(Into::into)
    }
}
