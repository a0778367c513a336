//! The operators' command line: `switchboard tasks list|show|approve|reject` and
//! `switchboard apikey create`. It works on the configured database directly, through the
//! same [`WorkflowService`] as the API, so the same rules apply: an approval that needs the
//! `finance` role needs `--role finance`, and is audited under the operator's name. Notices and
//! webhooks it causes are written to the outbox, where the running server delivers them.

use anyhow::Context;
use clap::Subcommand;

use super::model::{Actor, Scope, Task, TaskStatus};
use super::{Transition, WorkflowService};
use crate::config::Settings;
use crate::store::{Store, TaskFilter, rfc3339};

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List tasks, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        contact: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The cursor printed at the end of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a task, its audit trail and its deliveries.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a task that awaits approval.
    Approve(Decision),
    /// Reject a task that awaits approval.
    Reject(Decision),
}

#[derive(Debug, clap::Args)]
pub struct Decision {
    id: String,
    /// Why (kept in the audit trail).
    #[arg(long)]
    reason: Option<String>,
    /// A sentence for the customer, appended to the notice they get.
    #[arg(long)]
    note: Option<String>,
    /// Who decides, for the audit trail.
    #[arg(long = "as", env = "USER", default_value = "operator")]
    operator: String,
    /// A role the operator holds (repeatable), e.g. `--role finance`.
    #[arg(long = "role")]
    roles: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key; the key is printed once and only its hash is stored.
    Create {
        /// What the key is for, e.g. "finance back office".
        #[arg(long)]
        name: String,
        /// tasks:read, tasks:write, tasks:approve, conversations:read or admin (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A role the key holds, e.g. finance (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List API keys (id, name, scopes, roles, created, revoked); never the keys themselves.
    List,
    /// Revoke an API key by id. A running server stops honouring it within 30 seconds.
    Revoke { id: String },
}

async fn open(settings: &Settings) -> anyhow::Result<(Store, std::sync::Arc<WorkflowService>)> {
    let store = crate::app::open_store(settings, 2).await?;
    let service = WorkflowService::open(store.clone(), &settings.workflow)?;
    Ok((store, service))
}

fn row(task: &Task) -> String {
    format!(
        "{:<36}  {:<14}  {:<17}  {:<10}  {:<8}  {}",
        task.id,
        task.kind,
        task.status.as_str(),
        task.queue,
        task.order_id.as_deref().unwrap_or("-"),
        task.created_at
    )
}

pub async fn run_tasks(command: TasksCommand, settings: Settings) -> anyhow::Result<()> {
    let (store, service) = open(&settings).await?;
    let operator = Actor::operator(
        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
        Vec::new(),
    );
    let result = match command {
        TasksCommand::List {
            status,
            kind,
            queue,
            contact,
            limit,
            cursor,
            json,
        } => {
            let filter = TaskFilter {
                status,
                kind,
                queue,
                contact_id: contact,
                order_id: None,
                queues: None,
            };
            let page = service
                .list(&operator, filter, cursor.as_deref(), Some(limit))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                println!(
                    "{:<36}  {:<14}  {:<17}  {:<10}  {:<8}  created",
                    "id", "type", "status", "queue", "order"
                );
                for task in &page.data {
                    println!("{}", row(task));
                }
                if let Some(cursor) = &page.next_cursor {
                    println!("more: --cursor {cursor}");
                }
            }
            Ok(())
        }
        TasksCommand::Show { id, json } => {
            let task = service.get(&operator, &id).await?;
            let events = service.events(&operator, &id).await?;
            let deliveries = service.deliveries(&operator, &id).await?;
            if json {
                let all =
                    serde_json::json!({"task": task, "events": events, "deliveries": deliveries});
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&task)?);
                println!("\naudit trail:");
                for event in &events {
                    println!(
                        "  v{} {} {} -> {} by {}{}",
                        event.version,
                        event.created_at,
                        event.from_status.map(|s| s.as_str()).unwrap_or("-"),
                        event.to_status.as_str(),
                        event.actor,
                        event
                            .reason
                            .as_deref()
                            .map(|reason| format!(" ({reason})"))
                            .unwrap_or_default()
                    );
                }
                println!("\ndeliveries:");
                for delivery in &deliveries {
                    println!(
                        "  #{} {} to {}: {} after {} attempt(s){}",
                        delivery.id,
                        delivery.kind,
                        delivery.target,
                        delivery.status,
                        delivery.attempts,
                        delivery
                            .last_error
                            .as_deref()
                            .map(|error| format!(", last error: {error}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        TasksCommand::Approve(decision) => decide(&service, decision, TaskStatus::Approved).await,
        TasksCommand::Reject(decision) => decide(&service, decision, TaskStatus::Rejected).await,
    };
    store.close().await;
    result
}

async fn decide(
    service: &WorkflowService,
    decision: Decision,
    status: TaskStatus,
) -> anyhow::Result<()> {
    let actor = Actor::operator(decision.operator, decision.roles);
    let task = service
        .transition(
            &actor,
            &decision.id,
            Transition {
                status,
                reason: decision.reason,
                customer_note: decision.note,
                expected_version: None,
            },
        )
        .await?;
    println!("{}", row(&task));
    Ok(())
}

pub async fn run_apikey(command: ApikeyCommand, settings: Settings) -> anyhow::Result<()> {
    let (store, service) = open(&settings).await?;
    let operator = Actor::operator(
        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
        Vec::new(),
    );
    match command {
        ApikeyCommand::Create {
            name,
            scopes,
            roles,
        } => {
            let parsed = scopes
                .iter()
                .map(|scope| {
                    Scope::parse(scope).with_context(|| {
                        let known: Vec<&str> =
                            Scope::ALL.iter().map(|scope| scope.as_str()).collect();
                        format!("unknown scope {scope:?} ({})", known.join(", "))
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (principal, key) = service
                .create_api_key(&operator, &name, &parsed, &roles)
                .await?;
            eprintln!(
                "created API key {} ({}) with scopes [{}] and roles [{}]; it is shown only now:",
                principal.id,
                principal.name,
                scopes.join(", "),
                roles.join(", ")
            );
            println!("{key}");
        }
        ApikeyCommand::List => {
            for (key, revoked_at) in store.api_keys().await? {
                println!(
                    "{}  {}  scopes [{}]  roles [{}]  created {}{}",
                    key.id,
                    key.name,
                    key.scopes.replace(' ', ", "),
                    key.roles.replace(' ', ", "),
                    rfc3339(key.created_at),
                    revoked_at
                        .map(|at| format!("  revoked {}", rfc3339(at)))
                        .unwrap_or_default()
                );
            }
        }
        ApikeyCommand::Revoke { id } => {
            service.revoke_api_key(&operator, &id).await?;
            println!("revoked API key {id}");
        }
    }
    store.close().await;
    Ok(())
}
