//! Contacts: search, one contact's view across channels (identities, linked emails, orders,
//! tasks, conversations), and merging two contacts, after which their histories show together
//! and the workflow's ownership checks use both contacts' emails.

use serde::Deserialize;
use serde_json::Value;

use super::{Console, ConsoleError, Staff};
use crate::store::TaskFilter;
use crate::store::console::ContactIdentityRow;
use crate::store::now_ms;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The contact merged into this one (it disappears from searches).
    pub other_id: String,
}

impl Console {
    fn require_contacts(&self, staff: &Staff) -> Result<(), ConsoleError> {
        if staff.works_conversations() {
            return Ok(());
        }
        Err(ConsoleError::forbidden(
            "contacts are for agents and admins",
        ))
    }

    /// Contacts whose name, channel identity or linked email contains `query`.
    pub async fn search_contacts(&self, staff: &Staff, query: &str) -> Result<Value, ConsoleError> {
        self.require_contacts(staff)?;
        let query = query.trim();
        if query.is_empty() || query.chars().count() > 200 {
            return Err(ConsoleError::invalid("q", "must be 1 to 200 characters"));
        }
        let mut found = Vec::new();
        for contact in self.store.search_contacts(query, 50).await? {
            let identities = self.store.contact_identities(&contact.id).await?;
            let emails = self.store.contact_emails(&contact.id).await?;
            found.push(serde_json::json!({
                "id": contact.id,
                "name": contact.display_name,
                "created_at_ms": contact.created_at,
                "identities": identities.iter().map(identity_json).collect::<Vec<_>>(),
                "emails": emails,
            }));
        }
        Ok(serde_json::json!({"data": found}))
    }

    /// One contact as the customer panel shows it.
    pub async fn contact_view(
        &self,
        staff: &Staff,
        contact_id: &str,
    ) -> Result<Value, ConsoleError> {
        self.require_contacts(staff)?;
        let contact =
            self.store
                .contact(contact_id)
                .await?
                .ok_or_else(|| ConsoleError::NotFound {
                    code: "contact_not_found",
                    what: format!("contact {contact_id}"),
                })?;
        let identities = self.store.contact_identities(contact_id).await?;
        let unreachable = self.store.contact_unreachable(contact_id).await?;
        let emails = self.store.contact_emails(contact_id).await?;
        let actor = staff.actor();
        // The order source may be down: the panel shows the rest and says so.
        let orders = match self.workflow.orders_of_contact(&actor, contact_id).await {
            Ok(orders) => serde_json::to_value(orders).unwrap_or_default(),
            Err(error) => serde_json::json!({"error": error.to_string()}),
        };
        let filter = TaskFilter {
            contact_id: Some(contact_id.to_string()),
            ..TaskFilter::default()
        };
        let tasks = self
            .workflow
            .list(&actor, filter, None, Some(100))
            .await
            .map(|page| serde_json::to_value(page.data).unwrap_or_default())
            .unwrap_or_else(|error| serde_json::json!({"error": error.to_string()}));
        let conversations = self.store.contact_conversations(contact_id).await?;
        Ok(serde_json::json!({
            "id": contact.id,
            "name": contact.display_name,
            "merged_into": contact.merged_into,
            "created_at_ms": contact.created_at,
            "identities": identities.iter().map(identity_json).collect::<Vec<_>>(),
            "unreachable": unreachable.iter().map(|thread| serde_json::json!({
                "channel": thread.channel,
                "thread": thread.thread,
                "reason": thread.mark.reason,
                "since_ms": thread.mark.since_ms,
            })).collect::<Vec<_>>(),
            "emails": emails,
            "orders": orders,
            "tasks": tasks,
            "conversations": conversations.iter().map(|summary| serde_json::json!({
                "id": summary.conversation_id,
                "channel": summary.channel,
                "status": summary.status,
                "owner": summary.owner,
                "created_at_ms": summary.created_at,
                "updated_at_ms": summary.updated_at,
                "rating": summary.rating,
            })).collect::<Vec<_>>(),
        }))
    }

    /// Merge `other_id` into `contact_id` (agents and admins).
    pub async fn merge_contacts(
        &self,
        staff: &Staff,
        contact_id: &str,
        other_id: &str,
    ) -> Result<Value, ConsoleError> {
        self.require_contacts(staff)?;
        if contact_id == other_id {
            return Err(ConsoleError::invalid("other_id", "is the same contact"));
        }
        for id in [contact_id, other_id] {
            match self.store.contact(id).await? {
                Some(contact) if contact.merged_into.is_none() => {}
                Some(_) => {
                    return Err(ConsoleError::Conflict {
                        code: "contact_merged",
                        message: format!("contact {id} was merged into another already"),
                    });
                }
                None => {
                    return Err(ConsoleError::NotFound {
                        code: "contact_not_found",
                        what: format!("contact {id}"),
                    });
                }
            }
        }
        if !self
            .store
            .merge_contacts(contact_id, other_id, now_ms())
            .await?
        {
            return Err(ConsoleError::Conflict {
                code: "contact_merged",
                message: "one of the contacts was merged meanwhile".into(),
            });
        }
        self.router.forget_conversations();
        tracing::info!(into = contact_id, from = other_id, by = %staff.email, "contacts merged");
        self.contact_view(staff, contact_id).await
    }
}

/// A contact's identity on one channel, as the console shows it.
fn identity_json(identity: &ContactIdentityRow) -> Value {
    serde_json::json!({
        "channel": identity.channel,
        "platform_user_id": identity.platform_user_id,
        "username": identity.username,
        "verified": identity.verified,
    })
}
