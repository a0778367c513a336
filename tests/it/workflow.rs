//! The back-office workflow end to end: a web chat customer's refunds (auto-approved under the
//! limit, approved by a finance key over the API above it), told to the customer in the chat
//! exactly once, even after the conversation is resolved; signed webhooks checked by a receiver
//! that rejects a tampered one; refusals without side effects; idempotency, pagination,
//! filters, the inbound endpoint, the HTTP order source, the CLI and the OpenAPI document.
//!
//! `customer_asks_in_chat` goes the whole way from the customer's words: the builtin assistant
//! recognises the request, the router runs its action through the workflow as the conversation's
//! verified customer. The others open tasks through `WorkflowService::open_task` with the web
//! chat conversation's verified context, the same door, to test the workflow in detail.
//!
//! One file per story: [`refunds`], [`refusals`], [`listing`], [`inbound`], [`orders`] (the
//! HTTP order source), [`ordering`] (orders priced from the catalogue, the catalogue API and
//! its search), [`chat_orders`] (orders taken in the conversation), [`cli`] and [`openapi`];
//! [`support`] holds the shop and the webhook receiver they share.

mod chat_orders;
mod cli;
mod inbound;
mod listing;
mod openapi;
mod opening;
mod ordering;
mod orders;
mod refunds;
mod refusals;
pub(crate) mod support;
