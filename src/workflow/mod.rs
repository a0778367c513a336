//! The back-office workflow: tasks that the front office opens (a refund, an order, a
//! cancellation, an address change, a return, a callback, or a custom type from config), the
//! policies that decide what runs on its own and what waits for a person, and the loop back:
//! every status change is told to the customer on their conversation's channel, in their
//! language, exactly once (through the outbox), and announced to the back office by signed
//! webhooks.
//!
//! [`WorkflowService`] is the one door, used by the REST API (`src/http/api`), the assistant
//! (through the adapter in `src/wiring`, so that this module never names it) and the command
//! line. It alone authorises: a customer is judged by the verified identity of their
//! conversation as the store knows it (never by what they typed, nor by what the caller
//! claims), an API key by its scopes and roles. Every change is one atomic store script: the
//! task, its audit event, the customer notice, the webhooks and the idempotency record.
//!
//! - [`model`]: statuses and the state machine, tasks, audit events, actors, errors;
//! - [`types`]: task types and their payload schemas; [`policy`]: the rules;
//! - [`orders`]: the [`orders::OrderSource`] trait, the built-in and HTTP sources;
//!   [`catalogue`]: the [`catalogue::CatalogueSource`] trait, likewise (`shop_api` is the HTTP
//!   client both adapters share);
//! - [`notify`]: customer notices in en/es/ca; [`webhooks`]: Standard Webhooks signing and
//!   delivery; [`cli`]: `switchboard tasks ...` and `switchboard apikey create`.
//!
//! The service's methods are split by what they do, one `impl WorkflowService` per file:
//! `create` (opening tasks, and the commit every change goes through), `transitions` (status
//! changes and approvals), `inbound` (signed status updates from the back office), `reads`
//! (tasks, audit trails, deliveries), `customers` (orders and linked emails), `ordering`
//! (new orders priced and checked against the catalogue) and `api_keys`.
//! This file holds the service itself, its request types and the row conversions they share.

mod api_keys;
pub mod catalogue;
pub mod cli;
mod create;
mod customers;
mod inbound;
pub mod model;
pub mod notify;
mod ordering;
pub mod orders;
pub mod policy;
mod reads;
pub mod settings;
mod shop_api;
mod transitions;
pub mod types;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use catalogue::{CatalogueSource, Product};
pub use model::{
    Actor, ApiKeyPrincipal, Delivery, DeliveryPage, Scope, Task, TaskEvent, TaskPage, TaskStatus,
    VerifiedContext, WorkflowError,
};
pub use ordering::ORDER_TYPE;
pub use orders::{Order, OrderSource};
pub use settings::WorkflowSettings;

use crate::outbox::Delivery as OutboxDelivery;
use crate::store::{Conversation, DeliveryRow, Store, StoreError, TaskEventRow, TaskRow};
use orders::rfc3339;
use types::TaskTypes;
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
    #[error("catalogue: {0}")]
    Catalogue(#[from] catalogue::CatalogueError),
    #[error("seeding the catalogue: {0}")]
    CatalogueSeed(#[from] catalogue::CatalogueSeedError),
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

fn catalogue_source(
    store: &Store,
    settings: &WorkflowSettings,
) -> Result<Arc<dyn CatalogueSource>, SetupError> {
    match settings.catalogue_source.as_str() {
        "builtin" => Ok(Arc::new(catalogue::BuiltinCatalogue::new(store.clone()))),
        "http" => Ok(Arc::new(catalogue::HttpCatalogue::new(
            settings.http_catalogue.clone(),
        )?)),
        other => Err(SetupError::Config(format!(
            "workflow.catalogue_source must be \"builtin\" or \"http\", not {other:?}"
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
    catalogue: Arc<dyn CatalogueSource>,
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
        if settings.catalogue_source == "builtin" && !settings.catalogue_seed.as_os_str().is_empty()
        {
            let count = catalogue::seed(&store, &settings.catalogue_seed).await?;
            tracing::info!(products = count, seed = %settings.catalogue_seed.display(), "seeded the built-in catalogue");
        }
        let orders = order_source(&store, settings)?;
        let catalogue = catalogue_source(&store, settings)?;
        let service = WorkflowService::new(store, settings.clone(), orders, catalogue, delivery)?;
        Ok(Arc::new(service))
    }

    /// The service for tools (the command line): no seeding, and outbox rows are left for the
    /// running server's worker to deliver.
    pub fn open(
        store: Store,
        settings: &WorkflowSettings,
    ) -> Result<Arc<WorkflowService>, SetupError> {
        let orders = order_source(&store, settings)?;
        let catalogue = catalogue_source(&store, settings)?;
        Ok(Arc::new(WorkflowService::new(
            store,
            settings.clone(),
            orders,
            catalogue,
            None,
        )?))
    }

    /// Build the service around any order and catalogue source.
    pub fn new(
        store: Store,
        settings: WorkflowSettings,
        orders: Arc<dyn OrderSource>,
        catalogue: Arc<dyn CatalogueSource>,
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
            catalogue,
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
