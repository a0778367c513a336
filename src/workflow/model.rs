//! The workflow's vocabulary: task statuses and their allowed transitions, tasks and their
//! audit events, who acts (actors, scopes, roles) and the errors the service answers with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a task is in its life. The allowed moves are [`TaskStatus::can_become`]:
///
/// ```text
/// open -> awaiting_approval -> approved | rejected
/// open -> approved                       (a policy approves it on its own)
/// approved -> in_progress -> done | failed
/// open | awaiting_approval | approved -> cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    AwaitingApproval,
    Approved,
    Rejected,
    InProgress,
    Done,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Open,
        TaskStatus::AwaitingApproval,
        TaskStatus::Approved,
        TaskStatus::Rejected,
        TaskStatus::InProgress,
        TaskStatus::Done,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::AwaitingApproval => "awaiting_approval",
            TaskStatus::Approved => "approved",
            TaskStatus::Rejected => "rejected",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<TaskStatus> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// The state machine: whether a task in `self` may move to `to`.
    pub fn can_become(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Open, AwaitingApproval)
                | (Open, Approved)
                | (Open, Cancelled)
                | (AwaitingApproval, Approved)
                | (AwaitingApproval, Rejected)
                | (AwaitingApproval, Cancelled)
                | (Approved, InProgress)
                | (Approved, Cancelled)
                | (InProgress, Done)
                | (InProgress, Failed)
        )
    }

    /// No move leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        TaskStatus::ALL.iter().all(|to| !self.can_become(*to))
    }

    /// Whether the move is a decision on an approval (needs the `tasks:approve` scope and the
    /// task's approver role).
    pub fn is_decision(from: TaskStatus, to: TaskStatus) -> bool {
        from == TaskStatus::AwaitingApproval
            && matches!(to, TaskStatus::Approved | TaskStatus::Rejected)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A back-office task as the service and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: String,
    /// The task type: `refund`, `order`, `cancellation`, `address_change`, `return`,
    /// `callback`, or a custom type from config.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: TaskStatus,
    pub contact_id: String,
    pub conversation_id: Option<String>,
    pub order_id: Option<String>,
    pub queue: String,
    /// Type-specific details, valid against the type's JSON schema.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The role an approver must hold, when the policy asked for a person's approval.
    pub approver_role: Option<String>,
    /// Incremented by every change; the audit trail has one event per version.
    pub version: i64,
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// One audit record: a change of a task, who made it, when, why, and the task before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// Also the `webhook-id` of the webhook that announces it.
    pub id: String,
    pub task_id: String,
    /// The task version this change produced.
    pub version: i64,
    /// `task.created` or `task.status_changed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `customer:<contact id>`, `api_key:<id>`, `operator:<name>`, `backoffice:<name>`, `policy`.
    pub actor: String,
    pub reason: Option<String>,
    pub from_status: Option<TaskStatus>,
    pub to_status: TaskStatus,
    /// The task before the change (`null` for a creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Object)]
    pub after: Value,
    pub created_at: String,
}

/// One outbox row a task caused: a notice to the customer or a webhook to the back office.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    /// `message` (a notice to the customer) or `webhook`.
    pub kind: String,
    /// The conversation (for messages) or the webhook endpoint's name.
    pub target: String,
    pub task_id: Option<String>,
    /// For webhooks: the `webhook-id` (the task event's id).
    pub event_id: Option<String>,
    /// `pending`, `sent` or `dead` (dead-lettered: no more attempts).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
    pub created_at: String,
    pub done_at: Option<String>,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskPage {
    pub data: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of deliveries, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

/// What a caller of the REST API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "tasks:read")]
    TasksRead,
    #[serde(rename = "tasks:write")]
    TasksWrite,
    #[serde(rename = "tasks:approve")]
    TasksApprove,
    /// Conversations: their live events and attachments (the console, a CRM).
    #[serde(rename = "conversations:read")]
    ConversationsRead,
    /// Everything, including API keys, contact links and webhook deliveries.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::TasksRead,
        Scope::TasksWrite,
        Scope::TasksApprove,
        Scope::ConversationsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TasksRead => "tasks:read",
            Scope::TasksWrite => "tasks:write",
            Scope::TasksApprove => "tasks:approve",
            Scope::ConversationsRead => "conversations:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == value)
    }
}

/// The identity of a conversation as the router knows it: the only thing a customer's request
/// is judged by. The service re-reads the conversation and trusts the store, not these fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedContext {
    pub contact_id: String,
    pub conversation_id: String,
    pub channel: String,
    /// Whether the channel vouches for the customer's identity.
    pub verified: bool,
}

/// An authenticated API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyPrincipal {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub roles: Vec<String>,
}

/// Who asks the workflow to do something. Only the workflow mints privileged actors: an API
/// key actor comes from [`super::WorkflowService::authenticate`], the back office's from a
/// verified signature, the policy's from the service itself. Outside code can build a
/// customer (judged by the conversation's verified identity) or, for the command line, an
/// operator.
#[derive(Debug, Clone)]
pub struct Actor {
    pub(super) kind: ActorKind,
}

#[derive(Debug, Clone)]
pub(super) enum ActorKind {
    /// A customer in a conversation, through the assistant.
    Customer(VerifiedContext),
    /// A back-office system or person through the REST API.
    ApiKey(ApiKeyPrincipal),
    /// An operator on the command line (has database access, so every scope; roles as claimed).
    Operator { name: String, roles: Vec<String> },
    /// The back office pushing a signed status update.
    BackOffice { name: String, roles: Vec<String> },
    /// A person signed in to the console: scopes from their role, back-office roles, and
    /// the task queues they may see (None: all).
    Staff {
        email: String,
        scopes: Vec<Scope>,
        roles: Vec<String>,
        task_queues: Option<Vec<String>>,
    },
    /// A policy deciding on its own.
    Policy,
}

impl Actor {
    pub fn customer(context: VerifiedContext) -> Actor {
        Actor {
            kind: ActorKind::Customer(context),
        }
    }

    /// An operator at the command line, with the roles they claim (audited under `name`).
    pub fn operator(name: impl Into<String>, roles: Vec<String>) -> Actor {
        Actor {
            kind: ActorKind::Operator {
                name: name.into(),
                roles,
            },
        }
    }

    /// A person signed in to the console (the console authenticated them): what their role
    /// allows, their back-office roles, and the task queues they work (None: all).
    pub fn staff(
        email: impl Into<String>,
        scopes: Vec<Scope>,
        roles: Vec<String>,
        task_queues: Option<Vec<String>>,
    ) -> Actor {
        Actor {
            kind: ActorKind::Staff {
                email: email.into(),
                scopes,
                roles,
                task_queues,
            },
        }
    }

    /// The task queues this actor is limited to, if any.
    pub fn task_queues(&self) -> Option<&[String]> {
        match &self.kind {
            ActorKind::Staff {
                task_queues: Some(queues),
                ..
            } => Some(queues),
            _ => None,
        }
    }

    pub(super) fn api_key(principal: ApiKeyPrincipal) -> Actor {
        Actor {
            kind: ActorKind::ApiKey(principal),
        }
    }

    pub(super) fn back_office(name: impl Into<String>, roles: Vec<String>) -> Actor {
        Actor {
            kind: ActorKind::BackOffice {
                name: name.into(),
                roles,
            },
        }
    }

    pub(super) fn policy() -> Actor {
        Actor {
            kind: ActorKind::Policy,
        }
    }

    /// The API key behind this actor, if any.
    pub fn api_key_principal(&self) -> Option<&ApiKeyPrincipal> {
        match &self.kind {
            ActorKind::ApiKey(principal) => Some(principal),
            _ => None,
        }
    }

    pub(super) fn customer_context(&self) -> Option<&VerifiedContext> {
        match &self.kind {
            ActorKind::Customer(context) => Some(context),
            _ => None,
        }
    }

    /// How the audit trail names this actor.
    pub fn label(&self) -> String {
        match &self.kind {
            ActorKind::Customer(context) => format!("customer:{}", context.contact_id),
            ActorKind::ApiKey(key) => format!("api_key:{}", key.id),
            ActorKind::Operator { name, .. } => format!("operator:{name}"),
            ActorKind::Staff { email, .. } => format!("user:{email}"),
            ActorKind::BackOffice { name, .. } => format!("backoffice:{name}"),
            ActorKind::Policy => "policy".into(),
        }
    }

    /// Whether the actor holds `scope`. Customers hold none: what they may do is decided case
    /// by case (their own orders, their own tasks).
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.kind {
            ActorKind::Customer(_) => false,
            ActorKind::ApiKey(key) => {
                key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin)
            }
            ActorKind::Staff { scopes, .. } => {
                scopes.contains(&scope) || scopes.contains(&Scope::Admin)
            }
            ActorKind::Operator { .. } | ActorKind::BackOffice { .. } | ActorKind::Policy => true,
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        match &self.kind {
            ActorKind::ApiKey(key) => key.roles.iter().any(|held| held == role),
            ActorKind::Operator { roles, .. }
            | ActorKind::BackOffice { roles, .. }
            | ActorKind::Staff { roles, .. } => roles.iter().any(|held| held == role),
            ActorKind::Customer(_) | ActorKind::Policy => false,
        }
    }

    pub fn require(&self, scope: Scope) -> Result<(), WorkflowError> {
        if self.has_scope(scope) {
            return Ok(());
        }
        Err(WorkflowError::Forbidden {
            code: "missing_scope",
            message: format!("this needs the {} scope", scope.as_str()),
        })
    }
}

/// Why the workflow refused or failed. Every variant but `Store` is the caller's to fix.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request is malformed; `field` names what failed (`payload.amount_cents`).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// No valid credentials (API key, webhook signature).
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { code: &'static str, what: String },
    #[error("a task cannot go from {from} to {to}")]
    InvalidTransition { from: TaskStatus, to: TaskStatus },
    /// The task changed under the caller (`expected_version`), or a rule about other tasks.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("this idempotency key was used with a different request")]
    IdempotencyMismatch,
    /// A policy refuses the request outright (not merely asking for approval).
    #[error("{message}")]
    PolicyRefused { code: &'static str, message: String },
    #[error("order source unavailable: {0}")]
    OrdersUnavailable(String),
    #[error("catalogue unavailable: {0}")]
    CatalogueUnavailable(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl WorkflowError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> WorkflowError {
        WorkflowError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, what: impl Into<String>) -> WorkflowError {
        WorkflowError::NotFound {
            code,
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus::{self, *};

    #[test]
    fn lifecycle_allows_exactly_the_documented_moves() {
        let allowed = [
            (Open, AwaitingApproval),
            (Open, Approved),
            (Open, Cancelled),
            (AwaitingApproval, Approved),
            (AwaitingApproval, Rejected),
            (AwaitingApproval, Cancelled),
            (Approved, InProgress),
            (Approved, Cancelled),
            (InProgress, Done),
            (InProgress, Failed),
        ];
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for terminal in [Rejected, Done, Failed, Cancelled] {
            assert!(terminal.is_terminal());
        }
        assert!(!InProgress.is_terminal());
        assert!(TaskStatus::is_decision(AwaitingApproval, Approved));
        assert!(!TaskStatus::is_decision(Open, Approved));
    }

    #[test]
    fn statuses_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().into())
            );
        }
    }
}
