//! Switchboard: a self-hosted omnichannel customer service router with an assistant.
//!
//! A tour, following one customer message:
//!
//! - A channel connector (`connectors/*`, through [`channels`]) receives it from the platform
//!   and hands it to the [`router`] as an `InboundEvent`.
//! - The [`router`] stores it once ([`store`], deduplicated on the platform's message id),
//!   acknowledges it, and queues it on its conversation's lane so that turns of one conversation
//!   never overlap.
//! - The conversation's owner takes the turn: the bot's [`assistant`], or a queue or an agent,
//!   in which case the bot stays silent.
//! - Replies are committed with the turn and leave through the [`outbox`] worker, which retries
//!   with backoff and dead-letters what cannot be delivered.
//! - [`http`] serves the channel endpoints, the web chat widget, health and [`metrics`];
//!   [`app`] wires it all from [`config`] and stops it in order; [`bench`] measures it.

pub mod app;
pub mod assistant;
pub mod bench;
pub mod channels;
pub mod config;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod router;
pub mod store;
