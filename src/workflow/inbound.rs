//! Inbound status updates: the back office pushes a signed `task.status` event (Standard
//! Webhooks, `workflow.inbound.secret`); a `webhook-id` seen before changes nothing.

use serde::Deserialize;

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
        let update: InboundEvent = serde_json::from_slice(body).map_err(|error| {
            WorkflowError::invalid("body", format!("not a status update: {error}"))
        })?;
        if update.kind != "task.status" {
            return Err(WorkflowError::invalid(
                "type",
                format!("unknown event type {:?} (known: task.status)", update.kind),
            ));
        }
        let actor = Actor::back_office("inbound", self.settings.inbound.roles.clone());
        let task_id = update.data.task_id.clone();
        if self.store.inbound_seen(&webhook_id).await? {
            return Ok(InboundOutcome {
                task: self.get(&actor, &task_id).await?,
                duplicate: true,
            });
        }
        let transition = Transition {
            status: update.data.status,
            reason: update.data.reason,
            customer_note: update.data.customer_note,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundEvent {
    #[serde(rename = "type")]
    kind: String,
    data: InboundStatus,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundStatus {
    task_id: String,
    status: TaskStatus,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    customer_note: Option<String>,
}
