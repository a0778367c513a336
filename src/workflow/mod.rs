//! The back-office workflow: tasks that the front office opens (a refund, an order, a
//! cancellation, an address change, a return, a callback, or a custom type from config), the
//! policies that decide what runs on its own and what waits for a person, and the loop back:
//! every status change is told to the customer on their conversation's channel, in their
//! language, exactly once (through the outbox), and announced to the back office by signed
//! webhooks.
//!
//! [`WorkflowService`] is the one door, used by the REST API (`src/http/api`), the assistant
//! and the command line. It alone authorises: a customer is judged by the verified identity of
//! their conversation as the store knows it (never by what they typed, nor by what the caller
//! claims), an API key by its scopes and roles. Every change is one atomic store script: the
//! task, its audit event, the customer notice, the webhooks and the idempotency record.
//!
//! - [`model`]: statuses and the state machine, tasks, audit events, actors, errors;
//! - [`types`]: task types and their payload schemas; [`policy`]: the rules;
//! - [`orders`]: the [`orders::OrderSource`] trait, the built-in and HTTP sources;
//! - [`notify`]: customer notices in en/es/ca; [`webhooks`]: Standard Webhooks signing and
//!   delivery; [`cli`]: `switchboard tasks ...` and `switchboard apikey create`.

pub mod actions;
pub mod cli;
pub mod model;
pub mod notify;
pub mod orders;
pub mod policy;
pub mod settings;
pub mod types;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use actions::WorkflowActions;
pub use model::{
    Actor, ApiKeyPrincipal, Delivery, DeliveryPage, Scope, Task, TaskEvent, TaskPage, TaskStatus,
    VerifiedContext, WorkflowError,
};
pub use orders::{Order, OrderSource};
pub use settings::WorkflowSettings;

use crate::outbox::Delivery as OutboxDelivery;
use crate::store::{
    ApiKeyRow, Conversation, CustomerNotice, DeliveryRow, IdempotencyRecord, Store, StoreError,
    TaskCommit, TaskConflict, TaskEventRow, TaskFilter, TaskRow, TaskUpdate, WebhookRow, new_id,
    now_ms, task_conflict,
};
use model::ActorKind;
use orders::rfc3339;
use policy::Decision;
use types::{TaskType, TaskTypes};
use webhooks::{Signer, WebhookPayload, WebhookSender};

/// A request to open a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The task type (see `Task.type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Required unless `conversation_id` is given (customers: taken from their conversation).
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Where the customer hears about the task; default: the contact's latest conversation.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Required for refunds, cancellations, address changes and returns; must be an order of
    /// the contact (by a linked email).
    #[serde(default)]
    pub order_id: Option<String>,
    /// Override the type's queue (not for customers).
    #[serde(default)]
    pub queue: Option<String>,
    /// Type-specific details, checked against the type's JSON schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// A requested status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// The status to move to.
    pub status: TaskStatus,
    /// Why, for the audit trail (not shown to the customer).
    #[serde(default)]
    pub reason: Option<String>,
    /// A sentence for the customer, appended to the notice they get.
    #[serde(default)]
    pub customer_note: Option<String>,
    /// Refuse (409) if the task is no longer at this version.
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// The result of opening a task.
#[derive(Debug, Clone)]
pub struct Created {
    pub task: Task,
    /// True when an idempotency key replayed an earlier request: nothing new happened.
    pub replayed: bool,
}

/// The result of an inbound status update.
#[derive(Debug, Clone)]
pub struct InboundOutcome {
    pub task: Task,
    /// True when this `webhook-id` had been processed before: nothing new happened.
    pub duplicate: bool,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Types(#[from] types::TypeConfigError),
    #[error("order source: {0}")]
    Orders(#[from] orders::OrderError),
    #[error("seeding orders: {0}")]
    Seed(#[from] orders::SeedError),
    #[error("workflow config: {0}")]
    Config(String),
}

fn order_source(
    store: &Store,
    settings: &WorkflowSettings,
) -> Result<Arc<dyn OrderSource>, SetupError> {
    match settings.order_source.as_str() {
        "builtin" => Ok(Arc::new(orders::BuiltinOrders::new(store.clone()))),
        "http" => Ok(Arc::new(orders::HttpOrders::new(
            settings.http_orders.clone(),
        )?)),
        other => Err(SetupError::Config(format!(
            "workflow.order_source must be \"builtin\" or \"http\", not {other:?}"
        ))),
    }
}

/// How long an authenticated API key is trusted without reading it again (a revoked key
/// would keep working for at most this long).
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(30);

/// Most tasks, events or deliveries one page holds.
pub const MAX_PAGE: i64 = 200;
pub const DEFAULT_PAGE: i64 = 50;

pub struct WorkflowService {
    store: Store,
    /// Authenticated API keys by hash, with when they were read.
    auth_cache: dashmap::DashMap<String, (Actor, std::time::Instant)>,
    settings: WorkflowSettings,
    types: TaskTypes,
    orders: Arc<dyn OrderSource>,
    delivery: Option<Arc<OutboxDelivery>>,
    inbound: Option<Signer>,
}

impl std::fmt::Debug for WorkflowService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowService")
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

fn store_error(error: StoreError) -> WorkflowError {
    match error {
        StoreError::NotFound(what) => WorkflowError::not_found("not_found", what),
        other => WorkflowError::Store(other),
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// JSON with object keys sorted at every level, so equal requests hash equally whatever the
/// order their fields came in.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn request_hash(request: &NewTask) -> String {
    let value = serde_json::to_value(request).unwrap_or(Value::Null);
    let mut text = String::new();
    canonical_json(&value, &mut text);
    sha256_hex(text.as_bytes())
}

fn task_of_row(row: &TaskRow) -> Result<Task, WorkflowError> {
    let corrupt =
        |what: &str| WorkflowError::Store(StoreError::Corrupt(format!("task {}: {what}", row.id)));
    Ok(Task {
        id: row.id.clone(),
        kind: row.kind.clone(),
        status: TaskStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
        contact_id: row.contact_id.clone(),
        conversation_id: row.conversation_id.clone(),
        order_id: row.order_id.clone(),
        queue: row.queue.clone(),
        payload: serde_json::from_str(&row.payload).map_err(|_| corrupt("payload"))?,
        approver_role: row.approver_role.clone(),
        version: row.version,
        created_by: row.created_by.clone(),
        created_at: rfc3339::format(row.created_at),
        updated_at: rfc3339::format(row.updated_at),
    })
}

fn event_of_row(row: &TaskEventRow) -> Result<TaskEvent, WorkflowError> {
    let corrupt = |what: &str| {
        WorkflowError::Store(StoreError::Corrupt(format!(
            "task event {}: {what}",
            row.id
        )))
    };
    let status = |text: &str| TaskStatus::parse(text).ok_or_else(|| corrupt("status"));
    Ok(TaskEvent {
        id: row.id.clone(),
        task_id: row.task_id.clone(),
        version: row.version,
        kind: row.kind.clone(),
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        from_status: row.from_status.as_deref().map(status).transpose()?,
        to_status: status(&row.to_status)?,
        before: row
            .before
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt("before"))?,
        after: serde_json::from_str(&row.after).map_err(|_| corrupt("after"))?,
        created_at: rfc3339::format(row.created_at),
    })
}

fn delivery_of_row(row: &DeliveryRow) -> Delivery {
    let webhook: Option<WebhookPayload> = if row.kind == "webhook" {
        serde_json::from_str(&row.payload).ok()
    } else {
        None
    };
    Delivery {
        id: row.id,
        kind: row.kind.clone(),
        target: match &webhook {
            Some(payload) => payload.endpoint.clone(),
            None => row.lane.clone(),
        },
        task_id: row.task_id.clone(),
        event_id: webhook.map(|payload| payload.id),
        status: row.status.clone(),
        attempts: row.attempts,
        last_error: row.last_error.clone(),
        next_attempt_at: rfc3339::format(row.next_attempt_at),
        created_at: rfc3339::format(row.created_at),
        done_at: row.done_at.map(rfc3339::format),
    }
}

fn encode_cursor(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

fn decode_cursor(cursor: &str) -> Result<String, WorkflowError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| WorkflowError::invalid("cursor", "is not a cursor this API handed out"))
}

fn page_size(limit: Option<i64>) -> Result<i64, WorkflowError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(WorkflowError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// A validated idempotency key (1 to 255 visible ASCII characters).
fn check_idempotency_key(key: &str) -> Result<(), WorkflowError> {
    let visible = key.bytes().all(|byte| (0x21..=0x7e).contains(&byte));
    if key.is_empty() || key.len() > 255 || !visible {
        return Err(WorkflowError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// The people and places a task belongs to, resolved from the store.
struct Parties {
    contact_id: String,
    conversation: Option<Conversation>,
}

impl WorkflowService {
    /// Build the service from config: task types, the order source (seeding the built-in one),
    /// the inbound secret, and (with a `delivery`) the webhook sender the outbox worker calls.
    pub async fn start(
        store: Store,
        settings: &WorkflowSettings,
        delivery: Option<Arc<OutboxDelivery>>,
    ) -> Result<Arc<WorkflowService>, SetupError> {
        if settings.order_source == "builtin" && !settings.orders_seed.as_os_str().is_empty() {
            let count = orders::seed(&store, &settings.orders_seed).await?;
            tracing::info!(orders = count, seed = %settings.orders_seed.display(), "seeded the built-in order store");
        }
        let orders = order_source(&store, settings)?;
        let service = WorkflowService::new(store, settings.clone(), orders, delivery)?;
        Ok(Arc::new(service))
    }

    /// The service for tools (the command line): no seeding, and outbox rows are left for the
    /// running server's worker to deliver.
    pub fn open(
        store: Store,
        settings: &WorkflowSettings,
    ) -> Result<Arc<WorkflowService>, SetupError> {
        let orders = order_source(&store, settings)?;
        Ok(Arc::new(WorkflowService::new(
            store,
            settings.clone(),
            orders,
            None,
        )?))
    }

    /// Build the service around any order source.
    pub fn new(
        store: Store,
        settings: WorkflowSettings,
        orders: Arc<dyn OrderSource>,
        delivery: Option<Arc<OutboxDelivery>>,
    ) -> Result<WorkflowService, SetupError> {
        let types = TaskTypes::from_settings(&settings)?;
        let inbound =
            if settings.inbound.secret.is_empty() {
                None
            } else {
                Some(Signer::new(&settings.inbound.secret).map_err(|error| {
                    SetupError::Config(format!("workflow.inbound.secret: {error}"))
                })?)
            };
        let mut names = std::collections::BTreeSet::new();
        for endpoint in &settings.webhooks {
            if !names.insert(endpoint.name.clone()) {
                return Err(SetupError::Config(format!(
                    "two webhook endpoints are named {:?}",
                    endpoint.name
                )));
            }
        }
        if let Some(delivery) = &delivery {
            let sender = WebhookSender::new(
                &settings.webhooks,
                Duration::from_millis(settings.webhook_timeout_ms.max(1)),
            )
            .map_err(SetupError::Config)?;
            delivery.register("webhook", Arc::new(sender));
        }
        Ok(WorkflowService {
            store,
            auth_cache: dashmap::DashMap::new(),
            settings,
            types,
            orders,
            delivery,
            inbound,
        })
    }

    /// The task types this instance knows.
    pub fn settings(&self) -> &WorkflowSettings {
        &self.settings
    }

    pub fn task_types(&self) -> impl Iterator<Item = &str> {
        self.types.names()
    }

    /// The verified context of a conversation, as the store knows it (for the assistant, which
    /// holds a conversation id from the router).
    pub async fn context_for(
        &self,
        conversation_id: &str,
    ) -> Result<VerifiedContext, WorkflowError> {
        let conversation = self.conversation(conversation_id).await?;
        Ok(VerifiedContext {
            contact_id: conversation.contact_id,
            conversation_id: conversation.id,
            channel: conversation.channel,
            verified: conversation.verified,
        })
    }

    async fn conversation(&self, conversation_id: &str) -> Result<Conversation, WorkflowError> {
        match self.store.conversation(conversation_id).await {
            Ok(conversation) => Ok(conversation),
            Err(StoreError::NotFound(_)) => Err(WorkflowError::not_found(
                "conversation_not_found",
                format!("conversation {conversation_id}"),
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// Check a customer's context against the store: the conversation exists, belongs to that
    /// contact on that channel, and the channel verified the identity.
    async fn verify_customer(
        &self,
        context: &VerifiedContext,
    ) -> Result<Conversation, WorkflowError> {
        let conversation = self.conversation(&context.conversation_id).await?;
        if conversation.contact_id != context.contact_id || conversation.channel != context.channel
        {
            return Err(WorkflowError::Forbidden {
                code: "context_mismatch",
                message: "the conversation does not belong to this contact".into(),
            });
        }
        if !conversation.verified || !context.verified {
            return Err(WorkflowError::Forbidden {
                code: "identity_not_verified",
                message: "the channel has not verified this customer's identity".into(),
            });
        }
        Ok(conversation)
    }

    // ---- API keys ---------------------------------------------------------------------------

    /// Create an API key; returns it with the only copy of the secret key.
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        name: &str,
        scopes: &[Scope],
        roles: &[String],
    ) -> Result<(ApiKeyPrincipal, String), WorkflowError> {
        actor.require(Scope::Admin)?;
        if name.trim().is_empty() {
            return Err(WorkflowError::invalid("name", "is empty"));
        }
        if scopes.is_empty() {
            return Err(WorkflowError::invalid("scopes", "name at least one scope"));
        }
        if let Some(role) = roles
            .iter()
            .find(|role| role.is_empty() || role.contains(char::is_whitespace))
        {
            return Err(WorkflowError::invalid(
                "roles",
                format!("{role:?} is not a role name"),
            ));
        }
        let secret: [u8; 32] = rand::random();
        let key = format!("sbk_{}", URL_SAFE_NO_PAD.encode(secret));
        let principal = ApiKeyPrincipal {
            id: new_id(),
            name: name.trim().to_string(),
            scopes: scopes.to_vec(),
            roles: roles.to_vec(),
        };
        self.store
            .insert_api_key(&ApiKeyRow {
                id: principal.id.clone(),
                name: principal.name.clone(),
                key_hash: sha256_hex(key.as_bytes()),
                scopes: scopes
                    .iter()
                    .map(|scope| scope.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                roles: roles.join(" "),
                created_at: now_ms(),
            })
            .await?;
        Ok((principal, key))
    }

    /// The actor an API key stands for, or `None` if the key is unknown or revoked. Known keys
    /// are remembered for [`AUTH_CACHE_TTL`], so that a busy client costs no database read
    /// per request.
    /// Revoke an API key (admin). This server stops honouring it at once; another process
    /// (a server beside the CLI) within [`AUTH_CACHE_TTL`].
    pub async fn revoke_api_key(&self, actor: &Actor, id: &str) -> Result<(), WorkflowError> {
        actor.require(Scope::Admin)?;
        if !self.store.revoke_api_key(id).await? {
            return Err(WorkflowError::not_found(
                "api_key_not_found",
                format!("active API key {id}"),
            ));
        }
        self.auth_cache.retain(|_, (cached, _)| {
            cached
                .api_key_principal()
                .is_none_or(|principal| principal.id != id)
        });
        tracing::info!(key = id, actor = %actor.label(), "API key revoked");
        Ok(())
    }

    pub async fn authenticate(&self, key: &str) -> Result<Option<Actor>, WorkflowError> {
        let hash = sha256_hex(key.as_bytes());
        if let Some(cached) = self.auth_cache.get(&hash)
            && cached.1.elapsed() < AUTH_CACHE_TTL
        {
            return Ok(Some(cached.0.clone()));
        }
        let Some(row) = self.store.api_key_by_hash(&hash).await? else {
            self.auth_cache.remove(&hash);
            return Ok(None);
        };
        let actor = Actor::api_key(ApiKeyPrincipal {
            id: row.id,
            name: row.name,
            scopes: row
                .scopes
                .split_whitespace()
                .filter_map(Scope::parse)
                .collect(),
            roles: row.roles.split_whitespace().map(str::to_string).collect(),
        });
        self.auth_cache
            .insert(hash, (actor.clone(), std::time::Instant::now()));
        Ok(Some(actor))
    }

    // ---- creating tasks ---------------------------------------------------------------------

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
        let order = self
            .checked_order(task_type, &parties.contact_id, request.order_id.as_deref())
            .await?;
        let now = now_ms();
        let verdict = policy::decide(
            task_type,
            order.as_ref(),
            &request.payload,
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
            payload: request.payload.to_string(),
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
        let notice = parties.conversation.as_ref().map(|conversation| {
            self.notice(
                conversation,
                task_type,
                &decided_view,
                order.as_ref().map(|order| order.currency.as_str()),
                None,
            )
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

    async fn fetch_order(&self, order_id: &str) -> Result<Option<Order>, WorkflowError> {
        self.orders
            .order(order_id)
            .await
            .map_err(|error| match error {
                orders::OrderError::Store(error) => WorkflowError::Store(error),
                other => WorkflowError::OrdersUnavailable(other.to_string()),
            })
    }

    fn notice(
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
    fn webhook_rows(&self, events: &[TaskEventRow]) -> Result<Vec<WebhookRow>, WorkflowError> {
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
    async fn commit(&self, commit: &TaskCommit) -> Result<(), StoreError> {
        let reserve = self
            .delivery
            .as_ref()
            .map(|delivery| (delivery.instance(), delivery.lease()));
        let rows = self.store.commit_task(commit, reserve).await?;
        if let Some(delivery) = &self.delivery {
            delivery.submit(rows);
        }
        Ok(())
    }

    // ---- changing tasks ---------------------------------------------------------------------

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

    async fn transition_once(
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

    // ---- reading ----------------------------------------------------------------------------

    /// One task. Customers see only their own (others are "not found").
    pub async fn get(&self, actor: &Actor, task_id: &str) -> Result<Task, WorkflowError> {
        let contact = self.reader_contact(actor).await?;
        let row = self.store.task(task_id).await?;
        match row {
            Some(row) if contact.as_ref().is_none_or(|id| *id == row.contact_id) => {
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
    async fn reader_contact(&self, actor: &Actor) -> Result<Option<String>, WorkflowError> {
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
        if self.store.revive_delivery(id).await? {
            return Ok(());
        }
        Err(WorkflowError::Conflict {
            code: "not_dead",
            message: format!("delivery {id} does not exist or is not dead-lettered"),
        })
    }

    /// One order. Customers see only their own.
    pub async fn order(&self, actor: &Actor, order_id: &str) -> Result<Order, WorkflowError> {
        let contact = self.reader_contact(actor).await?;
        let order = self.fetch_order(order_id).await?;
        let not_found = || WorkflowError::not_found("order_not_found", format!("order {order_id}"));
        let order = order.ok_or_else(not_found)?;
        if let Some(contact) = contact {
            let emails = self.store.contact_emails(&contact).await?;
            if !emails.contains(&order.customer_email) {
                return Err(not_found());
            }
        }
        Ok(order)
    }

    /// The orders of a contact (through the emails linked to it). Customers: their own.
    pub async fn orders_of_contact(
        &self,
        actor: &Actor,
        contact_id: &str,
    ) -> Result<Vec<Order>, WorkflowError> {
        let contact = self.reader_contact(actor).await?;
        if contact.as_ref().is_some_and(|own| own != contact_id) {
            return Err(WorkflowError::not_found(
                "contact_not_found",
                format!("contact {contact_id}"),
            ));
        }
        if !self.store.contact_exists(contact_id).await? {
            return Err(WorkflowError::not_found(
                "contact_not_found",
                format!("contact {contact_id}"),
            ));
        }
        let mut orders = Vec::new();
        for email in self.store.contact_emails(contact_id).await? {
            let found = self
                .orders
                .orders_of(&email)
                .await
                .map_err(|error| match error {
                    orders::OrderError::Store(error) => WorkflowError::Store(error),
                    other => WorkflowError::OrdersUnavailable(other.to_string()),
                })?;
            orders.extend(found);
        }
        orders.sort_by_key(|order| std::cmp::Reverse(order.placed_at));
        Ok(orders)
    }

    /// A customer's own orders (the assistant's "where is my order?").
    pub async fn customer_orders(
        &self,
        context: VerifiedContext,
    ) -> Result<Vec<Order>, WorkflowError> {
        let contact_id = context.contact_id.clone();
        self.orders_of_contact(&Actor::customer(context), &contact_id)
            .await
    }

    /// Vouch that the contact behind a channel identity is the shop customer with `email`:
    /// from then on they may act on that customer's orders. Admin only.
    pub async fn link_email(
        &self,
        actor: &Actor,
        channel: &str,
        platform_user_id: &str,
        email: &str,
    ) -> Result<String, WorkflowError> {
        actor.require(Scope::Admin)?;
        let email = orders::normalise_email(email);
        if !switchboard_connector::is_plausible_email(&email) {
            return Err(WorkflowError::invalid("email", "is not an email address"));
        }
        let contact_id = self
            .store
            .contact_by_identity(channel, platform_user_id)
            .await?
            .ok_or_else(|| {
                WorkflowError::not_found(
                    "contact_not_found",
                    format!(
                        "contact for {channel} user {platform_user_id} (they must have written once)"
                    ),
                )
            })?;
        self.store
            .link_contact_email(&contact_id, &email, &actor.label())
            .await
            .map_err(store_error)?;
        tracing::info!(contact = %contact_id, actor = %actor.label(), "email linked to contact");
        Ok(contact_id)
    }
}

/// Whether `body` parses as an inbound status update (the fuzz target's entry point).
#[doc(hidden)]
pub fn parse_inbound_event(body: &[u8]) -> bool {
    serde_json::from_slice::<InboundEvent>(body).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hashes_ignore_field_order() {
        let a: NewTask = serde_json::from_str(
            r#"{"type":"refund","order_id":"1","payload":{"amount_cents":5,"reason":"x"}}"#,
        )
        .unwrap();
        let b: NewTask = serde_json::from_str(
            r#"{"payload":{"reason":"x","amount_cents":5},"order_id":"1","type":"refund"}"#,
        )
        .unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = NewTask {
            payload: json!({"amount_cents": 6, "reason": "x"}),
            ..a.clone()
        };
        assert_ne!(request_hash(&a), request_hash(&c));
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = encode_cursor("0193-abc");
        assert_eq!(decode_cursor(&cursor).unwrap(), "0193-abc");
        assert!(decode_cursor("***").is_err());
    }
}
