//! The workflow's tables: tasks and their audit events, idempotency records, API keys, the
//! built-in orders and catalogue, the emails that link contacts to shop customers, and
//! processed inbound webhooks. Also the workflow's side of the outbox: customer notices (a system message plus
//! its outbox row, like a turn's reply) and webhook rows.
//!
//! A task change is one script ([`TaskCommit`]): the task row, its audit event(s), the notice
//! to the customer, the webhook rows and the idempotency record commit together or not at all.
//! Concurrency is settled by constraints, not by locks: the audit table's unique
//! `(task_id, version)` makes two changes from the same version collide (optimistic locking on
//! both backends), a partial unique index allows one open refund per order, and the
//! idempotency key is a primary key. [`task_conflict`] tells which one a failure hit.
//!
//! - [`tasks`]: task rows, the commit script, conflicts, task and audit reads;
//! - [`deliveries`]: a task's outbox rows and webhook deliveries;
//! - [`api_keys`]: API keys; [`orders`]: the built-in orders; [`products`]: the built-in
//!   catalogue; [`contacts`]: contacts'
//!   linked emails and conversations.

mod api_keys;
mod contacts;
mod deliveries;
mod orders;
mod products;
mod tasks;

pub use api_keys::ApiKeyRow;
pub use deliveries::DeliveryRow;
pub use orders::OrderRow;
pub use products::ProductRow;
pub use tasks::{
    CustomerNotice, IdempotencyHit, IdempotencyRecord, TaskCommit, TaskConflict, TaskEventRow,
    TaskFilter, TaskRow, TaskUpdate, WebhookRow, task_conflict,
};
