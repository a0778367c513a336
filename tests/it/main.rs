//! Integration tests: the real app on port 0, a fresh database per test, both backends.

mod helpers;

mod assistant;
mod browser;
mod channels;
mod crash;
mod http;
mod migrations;
mod outbox;
mod router;
mod webchat;
mod workflow;
