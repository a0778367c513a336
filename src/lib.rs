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
//!   in which case the bot stays silent. The assistant answers from the [`knowledge`] base
//!   (hybrid lexical + dense retrieval) and recognises intents.
//! - Replies are committed with the turn and leave through the [`outbox`] worker, which retries
//!   with backoff and dead-letters what cannot be delivered.
//! - [`http`] serves the channel endpoints, the web chat widget, health and [`metrics`];
//!   [`app`] wires it all from [`config`] and stops it in order; [`bench`] measures it.
//! - When a customer needs the back office (a refund, a cancellation), the [`workflow`] opens a
//!   task, applies the policies, and tells the customer and the back office about every change;
//!   the REST API under `/api/v1` ([`http`]) is the back office's door to it.

pub mod app;
pub mod assistant;
pub mod bench;
pub mod channels;
pub mod config;
pub mod datadir;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod knowledge;
pub mod metrics;
pub mod outbox;
pub mod router;
pub mod store;
pub mod workflow;
