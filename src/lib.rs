//! Switchboard: a self-hosted omnichannel customer service router with an assistant.
//!
//! A tour, following one customer message:
//!
//! - A channel instance (`connectors/*`, built from a `[[channel]]` table and supervised by
//!   [`channels`]) receives it from the platform and hands it to the [`router`] as an
//!   `InboundEvent`.
//! - The [`router`] stores it once ([`store`], deduplicated on the platform's message id),
//!   acknowledges it, and queues it on its conversation's lane so that turns of one conversation
//!   never overlap.
//! - The conversation's owner ([`conversation`]: the bot, a queue or an agent) takes the
//!   turn: the bot's [`assistant`] answers; under a queue or an agent the bot stays silent. The assistant answers from the [`knowledge`] base
//!   (hybrid lexical + dense retrieval) and recognises intents.
//! - Replies are committed with the turn and leave through the [`outbox`] worker, which retries
//!   with backoff and dead-letters what cannot be delivered.
//! - Every change is published on the [`events`] stream with a per-conversation number, for
//!   the console and other tabs; subscribers catch up from the database.
//! - [`http`] serves the channel endpoints, the web chat widget, health and [`metrics`];
//!   [`app`] wires it all from [`config`] and stops it in order; [`bench`] measures it.
//! - When a customer needs the back office (a refund, a cancellation), the [`workflow`] opens a
//!   task, applies the policies, and tells the customer and the back office about every change;
//!   an order is priced from the catalogue, whose products the [`catalogue`] search finds by
//!   what customers call them;
//!   the REST API under `/api/v1` ([`http`]) is the back office's door to it, and [`wiring`]
//!   holds the adapter through which the assistant asks it for actions (the workflow never
//!   names the assistant).
//! - People take over in the [`console`]: agents claim, reply and hand back conversations (the
//!   router keeps one owner and the bot silent meanwhile), back-office staff work their task
//!   queues, admins manage people and teams and read reports computed from the same events.

pub mod app;
pub mod assistant;
pub mod bench;
pub mod catalogue;
pub mod channels;
pub mod config;
pub mod console;
pub mod conversation;
pub mod datadir;
pub mod events;
pub mod http;
pub mod knowledge;
pub mod llm;
pub mod metrics;
pub mod outbox;
pub mod router;
pub mod store;
pub mod wiring;
pub mod workflow;
