//! Reading tasks, their audit trail and their deliveries, a page at a time; customers see only
//! their own tasks, back-office readers need `tasks:read`, webhook deliveries need `admin`.

use super::{
    Actor, Delivery, DeliveryPage, MAX_PAGE, Scope, Task, TaskEvent, TaskPage, TaskStatus,
    VerifiedContext, WorkflowError, WorkflowService, decode_cursor, delivery_of_row, encode_cursor,
    event_of_row, page_size, task_of_row,
};
use crate::store::TaskFilter;

impl WorkflowService {
    /// One task. Customers see only their own (others are "not found").
    pub async fn get(&self, actor: &Actor, task_id: &str) -> Result<Task, WorkflowError> {
        let contact = self.reader_contact(actor).await?;
        let row = self.store.task(task_id).await?;
        let in_queues = |queue: &str| {
            actor
                .task_queues()
                .is_none_or(|queues| queues.iter().any(|q| q == queue))
        };
        match row {
            Some(row)
                if contact.as_ref().is_none_or(|id| *id == row.contact_id)
                    && in_queues(&row.queue) =>
            {
                task_of_row(&row)
            }
            _ => Err(WorkflowError::not_found(
                "task_not_found",
                format!("task {task_id}"),
            )),
        }
    }

    /// Which contact a reader is limited to: `None` for back-office readers (who need
    /// `tasks:read`), the verified contact for a customer.
    pub(super) async fn reader_contact(
        &self,
        actor: &Actor,
    ) -> Result<Option<String>, WorkflowError> {
        match actor.customer_context() {
            Some(context) => Ok(Some(self.verify_customer(context).await?.contact_id)),
            None => {
                actor.require(Scope::TasksRead)?;
                Ok(None)
            }
        }
    }

    /// Tasks matching `filter`, newest first, a page at a time.
    pub async fn list(
        &self,
        actor: &Actor,
        mut filter: TaskFilter,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<TaskPage, WorkflowError> {
        if let Some(contact) = self.reader_contact(actor).await? {
            filter.contact_id = Some(contact);
        }
        if let Some(queues) = actor.task_queues() {
            filter.queues = Some(queues.to_vec());
        }
        if let Some(status) = &filter.status
            && TaskStatus::parse(status).is_none()
        {
            return Err(WorkflowError::invalid(
                "status",
                format!("unknown status {status:?}"),
            ));
        }
        let limit = page_size(limit)?;
        let before = cursor.map(decode_cursor).transpose()?;
        let rows = self
            .store
            .tasks(&filter, before.as_deref(), limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        let data = rows
            .iter()
            .take(limit as usize)
            .map(task_of_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = match (more, data.last()) {
            (true, Some(last)) => Some(encode_cursor(&last.id)),
            _ => None,
        };
        Ok(TaskPage { data, next_cursor })
    }

    /// The tasks of one contact, as [`Self::list`] pages them; an unknown contact (or, for a
    /// customer, anyone else's) is "not found" rather than an empty page.
    pub async fn contact_tasks(
        &self,
        actor: &Actor,
        contact_id: &str,
        mut filter: TaskFilter,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<TaskPage, WorkflowError> {
        self.require_contact(actor, contact_id).await?;
        filter.contact_id = Some(contact_id.to_owned());
        self.list(actor, filter, cursor, limit).await
    }

    /// A customer's own tasks, newest first (the assistant's "how is my refund?").
    pub async fn tasks_of_customer(
        &self,
        context: VerifiedContext,
    ) -> Result<Vec<Task>, WorkflowError> {
        let page = self
            .list(
                &Actor::customer(context),
                TaskFilter::default(),
                None,
                Some(MAX_PAGE),
            )
            .await?;
        Ok(page.data)
    }

    /// The audit trail of a task, oldest first.
    pub async fn events(
        &self,
        actor: &Actor,
        task_id: &str,
    ) -> Result<Vec<TaskEvent>, WorkflowError> {
        self.get(actor, task_id).await?;
        self.store
            .task_events(task_id)
            .await?
            .iter()
            .map(event_of_row)
            .collect()
    }

    /// The notices and webhooks a task caused, with their delivery state.
    pub async fn deliveries(
        &self,
        actor: &Actor,
        task_id: &str,
    ) -> Result<Vec<Delivery>, WorkflowError> {
        actor.require(Scope::TasksRead)?;
        self.get(actor, task_id).await?;
        Ok(self
            .store
            .task_deliveries(task_id)
            .await?
            .iter()
            .map(delivery_of_row)
            .collect())
    }

    /// Webhook deliveries, optionally in one status (`dead`: the dead letters).
    pub async fn webhook_deliveries(
        &self,
        actor: &Actor,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<DeliveryPage, WorkflowError> {
        actor.require(Scope::Admin)?;
        if let Some(status) = status
            && !["pending", "sent", "dead"].contains(&status)
        {
            return Err(WorkflowError::invalid(
                "status",
                "must be pending, sent or dead",
            ));
        }
        let limit = page_size(limit)?;
        let after = match cursor {
            Some(cursor) => Some(decode_cursor(cursor)?.parse::<i64>().map_err(|_| {
                WorkflowError::invalid("cursor", "is not a cursor this API handed out")
            })?),
            None => None,
        };
        let rows = self
            .store
            .deliveries("webhook", status, after, limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        let data: Vec<Delivery> = rows
            .iter()
            .take(limit as usize)
            .map(delivery_of_row)
            .collect();
        let next_cursor = match (more, data.last()) {
            (true, Some(last)) => Some(encode_cursor(&last.id.to_string())),
            _ => None,
        };
        Ok(DeliveryPage { data, next_cursor })
    }

    /// Give a dead-lettered webhook delivery a fresh set of attempts.
    pub async fn retry_delivery(&self, actor: &Actor, id: i64) -> Result<(), WorkflowError> {
        actor.require(Scope::Admin)?;
        match self.store.revive_delivery("webhook", id).await? {
            Some(true) => Ok(()),
            Some(false) => Err(WorkflowError::Conflict {
                code: "not_dead",
                message: format!("webhook delivery {id} is not dead-lettered"),
            }),
            None => Err(WorkflowError::not_found(
                "delivery_not_found",
                format!("webhook delivery {id}"),
            )),
        }
    }
}
