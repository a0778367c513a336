//! Integration tests: the real app on port 0, a fresh database per test, both backends.

mod helpers;

mod abuse;
mod assistant;
mod browser;
mod crash;
mod edge;
mod http;
mod outbox;
mod router;
mod schema;
mod webchat;
mod workflow;
