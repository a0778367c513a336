//! Adapters between parts that must not know each other. The workflow serves the back office
//! and may use only the store, order sources and the outbox; the assistant asks for actions
//! through its own [`crate::assistant::ActionRunner`] trait. What joins the two lives here, in
//! the wiring, so that neither part names the other.
//!
//! - [`actions`]: [`actions::WorkflowActions`], the assistant's door to the workflow.
//! - [`shop`]: the same door as the assistant's [`crate::assistant::Shop`], for taking orders.

pub mod actions;
pub mod shop;
