//! Changing tasks: status moves along the state machine as an actor (back office, approver
//! with the right role, or a customer cancelling their own task), retried on a concurrent
//! change unless the caller pinned a version, each committed with its audit event, customer
//! notice and webhooks.

use serde_json::json;

use super::orders::rfc3339;
use super::{
    Actor, Scope, Task, TaskStatus, Transition, VerifiedContext, WorkflowError, WorkflowService,
    task_of_row,
};
use crate::store::{
    TaskCommit, TaskConflict, TaskEventRow, TaskUpdate, new_id, now_ms, task_conflict,
};

impl WorkflowService {
    /// Move a task to another status as `actor`.
    pub async fn transition(
        &self,
        actor: &Actor,
        task_id: &str,
        transition: Transition,
    ) -> Result<Task, WorkflowError> {
        self.transition_once(actor, task_id, transition, None).await
    }

    /// A customer cancels one of their own tasks (before it is being worked on).
    pub async fn cancel_for_customer(
        &self,
        context: VerifiedContext,
        task_id: &str,
        reason: Option<String>,
    ) -> Result<Task, WorkflowError> {
        let transition = Transition {
            status: TaskStatus::Cancelled,
            reason,
            customer_note: None,
            expected_version: None,
        };
        self.transition(&Actor::customer(context), task_id, transition)
            .await
    }

    pub(super) async fn transition_once(
        &self,
        actor: &Actor,
        task_id: &str,
        transition: Transition,
        inbound_id: Option<String>,
    ) -> Result<Task, WorkflowError> {
        let to = transition.status;
        // Scope first: a caller without the right to move tasks learns nothing about them.
        let needed = match to {
            TaskStatus::Approved | TaskStatus::Rejected => Scope::TasksApprove,
            _ => Scope::TasksWrite,
        };
        let customer = match actor.customer_context() {
            Some(context) if to == TaskStatus::Cancelled => {
                Some(self.verify_customer(context).await?)
            }
            Some(_) => {
                return Err(WorkflowError::Forbidden {
                    code: "missing_scope",
                    message: "customers can only cancel their own tasks".into(),
                });
            }
            None => {
                actor.require(needed)?;
                None
            }
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let row = self.store.task(task_id).await?.ok_or_else(|| {
                WorkflowError::not_found("task_not_found", format!("task {task_id}"))
            })?;
            let task = task_of_row(&row)?;
            if actor
                .task_queues()
                .is_some_and(|queues| !queues.contains(&task.queue))
            {
                return Err(WorkflowError::not_found(
                    "task_not_found",
                    format!("task {task_id}"),
                ));
            }
            if let Some(conversation) = &customer
                && task.contact_id != conversation.contact_id
            {
                return Err(WorkflowError::not_found(
                    "task_not_found",
                    format!("task {task_id}"),
                ));
            }
            if let Some(expected) = transition.expected_version
                && expected != task.version
            {
                return Err(WorkflowError::Conflict {
                    code: "version_mismatch",
                    message: format!("the task is at version {}, not {expected}", task.version),
                });
            }
            let from = task.status;
            if !from.can_become(to) {
                return Err(WorkflowError::InvalidTransition { from, to });
            }
            if customer.is_some() && from == TaskStatus::InProgress {
                return Err(WorkflowError::InvalidTransition { from, to });
            }
            if matches!(to, TaskStatus::Approved | TaskStatus::Rejected)
                && let Some(role) = &task.approver_role
                && !actor.has_role(role)
            {
                return Err(WorkflowError::Forbidden {
                    code: "missing_role",
                    message: format!("deciding this task needs the {role} role"),
                });
            }
            let commit = self
                .transition_commit(actor, &task, &transition, inbound_id.clone())
                .await?;
            match self.commit(&commit).await {
                Ok(()) => {
                    tracing::debug!(task = %task_id, from = %from, to = %to, actor = %actor.label(), "task status changed");
                    let updated = commit.update.as_ref().expect("a transition updates");
                    return Ok(Task {
                        status: to,
                        version: updated.version,
                        updated_at: rfc3339::format(updated.updated_at),
                        ..task
                    });
                }
                Err(error) => match task_conflict(&error) {
                    // Somebody changed the task first: judge the request again on what it
                    // is now, unless the caller pinned a version.
                    Some(TaskConflict::Version)
                        if transition.expected_version.is_none() && attempts < 5 =>
                    {
                        continue;
                    }
                    Some(TaskConflict::Version) => {
                        return Err(WorkflowError::Conflict {
                            code: "version_mismatch",
                            message: "the task changed meanwhile".into(),
                        });
                    }
                    _ => return Err(WorkflowError::Store(error)),
                },
            }
        }
    }

    async fn transition_commit(
        &self,
        actor: &Actor,
        task: &Task,
        transition: &Transition,
        inbound_id: Option<String>,
    ) -> Result<TaskCommit, WorkflowError> {
        let now = now_ms();
        let after = Task {
            status: transition.status,
            version: task.version + 1,
            updated_at: rfc3339::format(now),
            ..task.clone()
        };
        let event = TaskEventRow {
            id: new_id(),
            task_id: task.id.clone(),
            version: after.version,
            kind: "task.status_changed".into(),
            actor: actor.label(),
            reason: transition
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|reason| !reason.is_empty())
                .map(str::to_string),
            from_status: Some(task.status.as_str().into()),
            to_status: after.status.as_str().into(),
            before: Some(json!(task).to_string()),
            after: json!(after).to_string(),
            created_at: now,
        };
        let notice = match (&task.conversation_id, self.types.get(&task.kind)) {
            (Some(conversation_id), Some(task_type)) => {
                let conversation = self.conversation(conversation_id).await?;
                let currency = match &task.order_id {
                    Some(order_id) => self
                        .fetch_order(order_id)
                        .await?
                        .map(|order| order.currency),
                    None => None,
                };
                Some(self.notice(
                    &conversation,
                    task_type,
                    &after,
                    currency.as_deref(),
                    transition.customer_note.as_deref(),
                ))
            }
            (Some(_), None) => {
                tracing::warn!(task = %task.id, kind = %task.kind, "task type no longer configured; the customer is not told");
                None
            }
            (None, _) => None,
        };
        let events = vec![event];
        Ok(TaskCommit {
            task_id: task.id.clone(),
            insert: None,
            update: Some(TaskUpdate {
                id: task.id.clone(),
                status: after.status.as_str().into(),
                version: after.version,
                updated_at: now,
            }),
            webhooks: self.webhook_rows(&events)?,
            events,
            notice,
            idempotency: None,
            inbound_id,
        })
    }
}
