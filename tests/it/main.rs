//! Integration tests: the real app on port 0, a fresh database per test, both backends.

mod helpers;

mod abuse;
mod assistant;
mod browser;
mod channels;
mod console;
mod crash;
mod discord;
mod edge;
mod email;
mod email_contract;
mod http;
mod llm;
mod migrations;
mod outbox;
mod reopen;
mod router;
mod schema;
mod telegram;
mod webchat;
mod workflow;
