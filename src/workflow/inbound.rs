//! Inbound status updates: the back office pushes a signed `task.status` event (Standard
//! Webhooks, `workflow.inbound.secret`); a `webhook-id` seen before changes nothing.

use switchboard_webhooks::{UpdateError, parse_status_update};

use super::{Actor, InboundOutcome, TaskStatus, Transition, WorkflowError, WorkflowService};
use crate::store::{TaskConflict, task_conflict};

impl WorkflowService {
    /// A status update the back office pushed, signed with `workflow.inbound.secret`. The body
    /// is `{"type": "task.status", "data": {"task_id", "status", "reason"?, "customer_note"?}}`;
    /// a `webhook-id` seen before changes nothing.
    pub async fn inbound_update(
        &self,
        webhook_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<InboundOutcome, WorkflowError> {
        let Some(signer) = &self.inbound else {
            return Err(WorkflowError::not_found(
                "inbound_disabled",
                "inbound endpoint (workflow.inbound.secret is not set)",
            ));
        };
        signer
            .verify(
                webhook_id,
                timestamp,
                signature,
                body,
                chrono::Utc::now().timestamp(),
                self.settings.inbound.tolerance_secs,
            )
            .map_err(|error| WorkflowError::Unauthenticated {
                code: "invalid_signature",
                message: error.to_string(),
            })?;
        let webhook_id = webhook_id.unwrap_or_default().to_string();
        let update = parse_status_update::<TaskStatus>(body).map_err(|error| match error {
            UpdateError::Body(_) => WorkflowError::invalid("body", error.to_string()),
            UpdateError::UnknownType(_) => WorkflowError::invalid("type", error.to_string()),
        })?;
        let actor = Actor::back_office("inbound", self.settings.inbound.roles.clone());
        let task_id = update.task_id.clone();
        if self.store.inbound_seen(&webhook_id).await? {
            return Ok(InboundOutcome {
                task: self.get(&actor, &task_id).await?,
                duplicate: true,
            });
        }
        let transition = Transition {
            status: update.status,
            reason: update.reason,
            customer_note: update.customer_note,
            expected_version: None,
        };
        match self
            .transition_once(&actor, &task_id, transition, Some(webhook_id))
            .await
        {
            Ok(task) => Ok(InboundOutcome {
                task,
                duplicate: false,
            }),
            Err(WorkflowError::Store(error))
                if task_conflict(&error) == Some(TaskConflict::Inbound) =>
            {
                Ok(InboundOutcome {
                    task: self.get(&actor, &task_id).await?,
                    duplicate: true,
                })
            }
            Err(other) => Err(other),
        }
    }
}
