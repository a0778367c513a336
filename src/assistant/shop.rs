//! What the assistant may ask of the shop while it takes an order: find products, read the
//! conversation's customer's past orders, and have an order priced. Every answer comes from
//! the workflow, acting as the conversation's verified customer (the router passes the door in
//! with each [`Turn`](super::Turn)); the assistant only ever names the conversation, never a
//! customer, so it cannot see another customer's orders whatever it is told.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A product a search found, as the customer is shown it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductOffer {
    pub sku: String,
    /// In the customer's language.
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    /// How likely it is what the customer named, 0..1.
    pub confidence: f32,
    /// Its rank score in the search that found it (0..1; the fusion of meaning and words).
    pub score: f32,
}

/// A line of one of the customer's past orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
}

/// One of the customer's past orders, newest first where listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastOrder {
    pub id: String,
    /// Milliseconds since the epoch.
    pub placed_at: i64,
    pub lines: Vec<PastLine>,
    pub shipping_address: Option<String>,
}

/// One of the customer's orders as a lookup tells it (LLM mode's `list_orders`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub number: String,
    /// `placed`, `paid`, `shipped`, `delivered`, `cancelled` or `returned`.
    pub status: String,
    /// `YYYY-MM-DD`.
    pub placed_on: String,
    pub delivered_on: Option<String>,
    /// As the customer reads it, such as `45.00 EUR`.
    pub total: String,
    pub items: Vec<PastLine>,
    pub shipping_address: Option<String>,
}

/// One of the customer's back-office requests (a refund, a cancellation...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// The task type: `refund`, `cancellation`, `address_change`...
    pub kind: String,
    pub order_number: Option<String>,
    /// `open`, `awaiting_approval`, `approved`, `in_progress`, `done`, `rejected`...
    pub status: String,
    /// RFC 3339.
    pub opened_at: String,
    pub updated_at: String,
}

/// A line the workflow priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub total_cents: i64,
}

/// An order as the workflow would price it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub lines: Vec<QuotedLine>,
    pub total_cents: i64,
    pub currency: String,
}

/// Why the shop said no: the workflow's reason code and what to tell the customer, in their
/// language.
#[derive(Debug, Clone, PartialEq)]
pub struct ShopRefusal {
    pub code: String,
    pub message: String,
}

#[async_trait]
pub trait Shop: Send + Sync + std::fmt::Debug {
    /// Products on sale that match `query`, best first.
    async fn find_products(
        &self,
        query: &str,
        language: &str,
        limit: usize,
    ) -> Result<Vec<ProductOffer>, ShopRefusal>;

    /// The product `sku` if it is on sale.
    async fn product(&self, sku: &str, language: &str)
    -> Result<Option<ProductOffer>, ShopRefusal>;

    /// The past orders of the customer of `conversation_id`, newest first. Refused for a
    /// guest: orders are taken for signed-in shop customers.
    async fn past_orders(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<Vec<PastOrder>, ShopRefusal>;

    /// Every order of the customer of `conversation_id`, with its status, newest first.
    /// Refused unless the channel verified the customer.
    async fn orders(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<Vec<OrderSummary>, ShopRefusal>;

    /// The back-office requests of the customer of `conversation_id`, newest first.
    async fn requests(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<Vec<RequestSummary>, ShopRefusal>;

    /// Whether a task of `kind` on order `order_id` would be refused for the customer of
    /// `conversation_id` whatever details follow (the order not theirs, an order already
    /// shipped for a cancellation...), checked before the customer is asked for them. Nothing
    /// is written.
    async fn check_task(
        &self,
        conversation_id: &str,
        language: &str,
        kind: &str,
        order_id: &str,
    ) -> Result<(), ShopRefusal>;

    /// Price `lines` (SKU and quantity) for the customer of `conversation_id` with the rules an
    /// order is opened under: refused for an unknown or retired product, too few in stock, or
    /// more than one order may hold.
    async fn quote(
        &self,
        conversation_id: &str,
        language: &str,
        lines: &[(String, i64)],
    ) -> Result<Quote, ShopRefusal>;
}
