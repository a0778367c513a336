//! Opening tasks: who the task is for (a customer only for themselves, judged by their
//! conversation's verified identity), the order it names and whether it is theirs, the type's
//! schema and policy, idempotent replays, and the one atomic commit that writes the task, its
//! audit event, the customer notice and the webhooks. The notice, webhook and commit helpers
//! are shared with [`super::transitions`].

use serde_json::json;

use super::model::ActorKind;
use super::policy::{self, Decision};
use super::types::{Rule, TaskType};
use super::webhooks::WebhookPayload;
use super::{
    Actor, Created, NewTask, Order, Parties, Scope, Task, TaskStatus, VerifiedContext,
    WorkflowError, WorkflowService, check_idempotency_key, event_of_row, notify, orders,
    request_hash, task_of_row,
};
use crate::store::{
    Conversation, CustomerNotice, IdempotencyRecord, StoreError, TaskCommit, TaskConflict,
    TaskEventRow, TaskRow, WebhookRow, new_id, now_ms, task_conflict,
};

impl WorkflowService {
    /// A customer opens a task from their conversation (the assistant's door). Ownership of
    /// the order is checked against the conversation's verified identity.
    pub async fn open_task(
        &self,
        context: VerifiedContext,
        request: NewTask,
        idempotency_key: Option<&str>,
    ) -> Result<Created, WorkflowError> {
        self.create_task(&Actor::customer(context), request, idempotency_key)
            .await
    }

    /// Whether a customer's task of `kind` on `order_id` would be refused whatever details
    /// follow: the customer not verified, the order not theirs, a refund already open on it, or
    /// a policy that refuses it (a cancellation of an order already shipped, a return after
    /// the window). The assistant asks this before it asks the customer for more. Nothing is
    /// written; opening the task judges it all again.
    pub async fn precheck_task(
        &self,
        context: VerifiedContext,
        kind: &str,
        order_id: &str,
    ) -> Result<(), WorkflowError> {
        let conversation = self.verify_customer(&context).await?;
        let Some(task_type) = self.types.get(kind) else {
            // An unknown type is the configuration's mistake, reported when the task is opened.
            return Ok(());
        };
        let Some(order) = self
            .checked_order(task_type, &conversation.contact_id, Some(order_id))
            .await?
        else {
            return Ok(());
        };
        let payload = match task_type.rule {
            Rule::Refund => {
                let open = self
                    .tasks_of_customer(context)
                    .await?
                    .into_iter()
                    .any(|task| {
                        task.kind == task_type.name
                            && task.order_id.as_deref() == Some(order_id)
                            && !task.status.is_terminal()
                    });
                if open {
                    return Err(WorkflowError::Conflict {
                        code: "refund_already_open",
                        message: format!("order {order_id} already has an open refund"),
                    });
                }
                json!({"amount_cents": order.total_cents})
            }
            _ => json!({}),
        };
        match policy::decide(
            task_type,
            Some(&order),
            &payload,
            &self.settings.policy,
            now_ms(),
        ) {
            Err(refused @ WorkflowError::PolicyRefused { .. }) => Err(refused),
            _ => Ok(()),
        }
    }

    /// Open a task as `actor`. With an idempotency key, a replay of the same request returns
    /// the original task and a different request is refused.
    pub async fn create_task(
        &self,
        actor: &Actor,
        request: NewTask,
        idempotency_key: Option<&str>,
    ) -> Result<Created, WorkflowError> {
        match actor.customer_context() {
            // Judged before anything, a replay included.
            Some(context) => {
                self.verify_customer(context).await?;
            }
            None => actor.require(Scope::TasksWrite)?,
        }
        let idempotency = match idempotency_key {
            Some(key) => {
                check_idempotency_key(key)?;
                let scope = match &actor.kind {
                    ActorKind::Customer(context) => {
                        format!("conversation:{}", context.conversation_id)
                    }
                    _ => actor.label(),
                };
                let hash = request_hash(&request);
                if let Some(created) = self.replay(&scope, key, &hash).await? {
                    return Ok(created);
                }
                Some((scope, key.to_string(), hash))
            }
            None => None,
        };
        let task_type = self.types.get(&request.kind).ok_or_else(|| {
            WorkflowError::invalid(
                "type",
                format!(
                    "unknown task type {:?} (known: {})",
                    request.kind,
                    self.types.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if !request.payload.is_object() {
            return Err(WorkflowError::invalid("payload", "must be a JSON object"));
        }
        task_type.validate(&request.payload)?;
        let parties = self.parties(actor, &request).await?;
        if task_type.rule == Rule::Order && actor.customer_context().is_some() {
            self.require_shop_customer(&parties.contact_id).await?;
        }
        let payload = match task_type.rule {
            Rule::Order => self.priced_order(&request.payload).await?,
            _ => request.payload.clone(),
        };
        let order = self
            .checked_order(task_type, &parties.contact_id, request.order_id.as_deref())
            .await?;
        let now = now_ms();
        let verdict = policy::decide(
            task_type,
            order.as_ref(),
            &payload,
            &self.settings.policy,
            now,
        )?;
        let queue = match (&request.queue, actor.customer_context()) {
            (Some(_), Some(_)) => {
                return Err(WorkflowError::invalid(
                    "queue",
                    "customers cannot choose a queue",
                ));
            }
            (Some(queue), None) if !queue.trim().is_empty() => queue.trim().to_string(),
            _ => task_type.queue.clone(),
        };
        let task_id = new_id();
        let opened = TaskRow {
            id: task_id.clone(),
            kind: task_type.name.clone(),
            status: TaskStatus::Open.as_str().into(),
            contact_id: parties.contact_id.clone(),
            conversation_id: parties.conversation.as_ref().map(|c| c.id.clone()),
            order_id: order.as_ref().map(|order| order.id.clone()),
            queue,
            payload: payload.to_string(),
            approver_role: None,
            version: 1,
            created_by: actor.label(),
            created_at: now,
            updated_at: now,
        };
        let (status, approver_role) = match verdict.decision {
            Decision::Approve => (TaskStatus::Approved, None),
            Decision::AwaitApproval { role } => (TaskStatus::AwaitingApproval, role),
        };
        let decided = TaskRow {
            status: status.as_str().into(),
            approver_role,
            version: 2,
            ..opened.clone()
        };
        let opened_view = task_of_row(&opened)?;
        let decided_view = task_of_row(&decided)?;
        let events = vec![
            TaskEventRow {
                id: new_id(),
                task_id: task_id.clone(),
                version: 1,
                kind: "task.created".into(),
                actor: actor.label(),
                reason: None,
                from_status: None,
                to_status: TaskStatus::Open.as_str().into(),
                before: None,
                after: json!(opened_view).to_string(),
                created_at: now,
            },
            TaskEventRow {
                id: new_id(),
                task_id: task_id.clone(),
                version: 2,
                kind: "task.status_changed".into(),
                actor: Actor::policy().label(),
                reason: Some(verdict.reason),
                from_status: Some(TaskStatus::Open.as_str().into()),
                to_status: status.as_str().into(),
                before: Some(json!(opened_view).to_string()),
                after: json!(decided_view).to_string(),
                created_at: now,
            },
        ];
        // A refund is in its order's currency; an order in the catalogue's (in its payload).
        let currency = match task_type.rule {
            Rule::Order => None,
            _ => order.as_ref().map(|order| order.currency.as_str()),
        };
        let notice = parties.conversation.as_ref().map(|conversation| {
            self.notice(conversation, task_type, &decided_view, currency, None)
        });
        let response = json!(decided_view).to_string();
        let commit = TaskCommit {
            task_id: task_id.clone(),
            insert: Some(decided.clone()),
            update: None,
            webhooks: self.webhook_rows(&events)?,
            events,
            notice,
            idempotency: idempotency.map(|(scope, key, request_hash)| IdempotencyRecord {
                scope,
                key,
                request_hash,
                task_id: task_id.clone(),
                response,
            }),
            inbound_id: None,
        };
        match self.commit(&commit).await {
            Ok(()) => {
                tracing::debug!(task = %task_id, kind = %decided.kind, status = %status, actor = %actor.label(), "task opened");
                Ok(Created {
                    task: decided_view,
                    replayed: false,
                })
            }
            Err(error) => match task_conflict(&error) {
                Some(TaskConflict::Idempotency) => {
                    // The same key won a race meanwhile: answer as a replay would.
                    let record = commit.idempotency.as_ref().expect("idempotency conflict");
                    self.replay(&record.scope, &record.key, &record.request_hash)
                        .await?
                        .ok_or_else(|| WorkflowError::Store(error))
                }
                Some(TaskConflict::OpenRefund) => Err(WorkflowError::Conflict {
                    code: "refund_already_open",
                    message: format!(
                        "order {} already has an open refund",
                        decided.order_id.unwrap_or_default()
                    ),
                }),
                _ => Err(WorkflowError::Store(error)),
            },
        }
    }

    async fn replay(
        &self,
        scope: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<Created>, WorkflowError> {
        let Some(hit) = self.store.idempotency_record(scope, key).await? else {
            return Ok(None);
        };
        if hit.request_hash != hash {
            return Err(WorkflowError::IdempotencyMismatch);
        }
        let task: Task = serde_json::from_str(&hit.response).map_err(|error| {
            WorkflowError::Store(StoreError::Corrupt(format!("idempotent response: {error}")))
        })?;
        Ok(Some(Created {
            task,
            replayed: true,
        }))
    }

    async fn parties(&self, actor: &Actor, request: &NewTask) -> Result<Parties, WorkflowError> {
        if let Some(context) = actor.customer_context() {
            let conversation = self.verify_customer(context).await?;
            let others_contact = request
                .contact_id
                .as_ref()
                .is_some_and(|id| *id != conversation.contact_id);
            let others_conversation = request
                .conversation_id
                .as_ref()
                .is_some_and(|id| *id != conversation.id);
            if others_contact || others_conversation {
                return Err(WorkflowError::Forbidden {
                    code: "not_your_conversation",
                    message: "a customer can only open tasks for themselves".into(),
                });
            }
            return Ok(Parties {
                contact_id: conversation.contact_id.clone(),
                conversation: Some(conversation),
            });
        }
        if let Some(conversation_id) = &request.conversation_id {
            let conversation = self.conversation(conversation_id).await?;
            if request
                .contact_id
                .as_ref()
                .is_some_and(|id| *id != conversation.contact_id)
            {
                return Err(WorkflowError::invalid(
                    "contact_id",
                    "is not the contact of that conversation",
                ));
            }
            return Ok(Parties {
                contact_id: conversation.contact_id.clone(),
                conversation: Some(conversation),
            });
        }
        let contact_id = request.contact_id.clone().ok_or_else(|| {
            WorkflowError::invalid("contact_id", "contact_id or conversation_id is required")
        })?;
        if !self.store.contact_exists(&contact_id).await? {
            return Err(WorkflowError::not_found(
                "contact_not_found",
                format!("contact {contact_id}"),
            ));
        }
        let conversation = match self.store.latest_conversation(&contact_id).await? {
            Some(id) => Some(self.conversation(&id).await?),
            None => None,
        };
        Ok(Parties {
            contact_id,
            conversation,
        })
    }

    /// The order a task names, checked to belong to the contact (by an email a trusted party
    /// linked to the contact).
    async fn checked_order(
        &self,
        task_type: &TaskType,
        contact_id: &str,
        order_id: Option<&str>,
    ) -> Result<Option<Order>, WorkflowError> {
        let Some(order_id) = order_id else {
            if task_type.requires_order {
                return Err(WorkflowError::invalid(
                    "order_id",
                    format!("is required for {} tasks", task_type.name),
                ));
            }
            return Ok(None);
        };
        let order = self.fetch_order(order_id).await?.ok_or_else(|| {
            WorkflowError::not_found("order_not_found", format!("order {order_id}"))
        })?;
        let emails = self.store.contact_emails(contact_id).await?;
        if !emails.contains(&order.customer_email) {
            return Err(WorkflowError::Forbidden {
                code: "order_not_owned",
                message: format!("order {order_id} is not an order of this customer"),
            });
        }
        Ok(Some(order))
    }

    pub(super) async fn fetch_order(&self, order_id: &str) -> Result<Option<Order>, WorkflowError> {
        self.orders
            .order(order_id)
            .await
            .map_err(|error| match error {
                orders::OrderError::Store(error) => WorkflowError::Store(error),
                other => WorkflowError::OrdersUnavailable(other.to_string()),
            })
    }

    pub(super) fn notice(
        &self,
        conversation: &Conversation,
        task_type: &TaskType,
        task: &Task,
        currency: Option<&str>,
        note: Option<&str>,
    ) -> CustomerNotice {
        let language = notify::language_of(
            conversation.language.as_deref(),
            &self.settings.default_language,
        );
        let text = notify::Notice {
            task_type,
            status: task.status,
            language,
            order_id: task.order_id.as_deref(),
            currency,
            payload: &task.payload,
            note,
        }
        .text();
        CustomerNotice {
            message_id: new_id(),
            conversation_id: conversation.id.clone(),
            channel: conversation.channel.clone(),
            thread: conversation.thread.clone(),
            text,
        }
    }

    /// One outbox row per configured endpoint and event.
    pub(super) fn webhook_rows(
        &self,
        events: &[TaskEventRow],
    ) -> Result<Vec<WebhookRow>, WorkflowError> {
        let mut rows = Vec::new();
        for event in events {
            let view = event_of_row(event)?;
            let body = json!({
                "type": view.kind,
                "timestamp": view.created_at,
                "data": view,
            })
            .to_string();
            for endpoint in &self.settings.webhooks {
                let payload = WebhookPayload {
                    endpoint: endpoint.name.clone(),
                    id: event.id.clone(),
                    body: body.clone(),
                };
                rows.push(WebhookRow {
                    lane: format!("webhook:{}:{}", endpoint.name, event.task_id),
                    payload: serde_json::to_string(&payload).unwrap_or_default(),
                });
            }
        }
        Ok(rows)
    }

    /// Commit, and hand this instance's reserved outbox rows to the worker at once.
    pub(super) async fn commit(&self, commit: &TaskCommit) -> Result<(), StoreError> {
        let reserve = self
            .delivery
            .as_ref()
            .map(|delivery| (delivery.instance(), delivery.lease()));
        let (rows, events) = self.store.commit_task(commit, reserve).await?;
        if let Some(delivery) = &self.delivery {
            delivery.bus().publish(&events);
            delivery.submit(rows);
        }
        Ok(())
    }
}
