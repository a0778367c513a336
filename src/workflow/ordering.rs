//! New orders: every line priced and checked against the catalogue before the policy sees the
//! total. The catalogue is read here, at the moment the order is opened, so a price, a stock
//! level or a retired product is never taken from what the customer or the assistant said.

use serde_json::{Value, json};

use super::catalogue::{CatalogueError, Product};
use super::policy::money;
use super::types::Rule;
use super::{Order, VerifiedContext, WorkflowError, WorkflowService};

/// The task type that takes new orders.
pub const ORDER_TYPE: &str = "order";
/// Lines one order may have (as its schema says).
const MAX_LINES: usize = 20;

impl WorkflowService {
    /// The past orders of a conversation's customer who may order: the channel verified them
    /// and a trusted party linked them to a shop customer. Newest first.
    pub async fn ordering_customer_orders(
        &self,
        context: VerifiedContext,
    ) -> Result<Vec<Order>, WorkflowError> {
        self.verify_customer(&context).await?;
        self.require_shop_customer(&context.contact_id).await?;
        self.customer_orders(context).await
    }

    /// An `order` payload priced for a conversation's customer under the rules it would be
    /// opened with, without opening anything (what the assistant shows before the customer
    /// confirms).
    pub async fn quote_order(
        &self,
        context: VerifiedContext,
        payload: &Value,
    ) -> Result<Value, WorkflowError> {
        self.verify_customer(&context).await?;
        self.require_shop_customer(&context.contact_id).await?;
        if !self
            .types
            .get(ORDER_TYPE)
            .is_some_and(|task_type| task_type.rule == Rule::Order)
        {
            return Err(WorkflowError::invalid(
                "type",
                "no task type \"order\" takes orders here",
            ));
        }
        // Only the lines: the address may not be known yet (the schema checks it on opening).
        let lines = payload["lines"].as_array().map(Vec::len).unwrap_or(0);
        if !(1..=MAX_LINES).contains(&lines) {
            return Err(WorkflowError::invalid(
                "payload.lines",
                format!("an order has 1 to {MAX_LINES} lines"),
            ));
        }
        self.priced_order(payload).await
    }

    /// Orders are taken for shop customers: a guest in the chat is asked to sign in first.
    pub(super) async fn require_shop_customer(
        &self,
        contact_id: &str,
    ) -> Result<(), WorkflowError> {
        if self.store.contact_emails(contact_id).await?.is_empty() {
            return Err(WorkflowError::Forbidden {
                code: "customer_not_signed_in",
                message: "orders are taken for signed-in shop customers; this contact is not linked to one".into(),
            });
        }
        Ok(())
    }

    /// One product of the catalogue.
    pub async fn product(&self, sku: &str) -> Result<Option<Product>, WorkflowError> {
        self.catalogue.product(sku).await.map_err(catalogue_error)
    }

    /// Every product of the catalogue, sold or not.
    pub async fn products(&self) -> Result<Vec<Product>, WorkflowError> {
        self.catalogue.products().await.map_err(catalogue_error)
    }

    /// An order's payload (already valid against its schema) priced from the catalogue: lines
    /// of one SKU merged, each line with the product's name, unit price and line total, and
    /// the order's `total_cents` and `currency`. Refused with the reason: an unknown or retired
    /// product, more units than in stock or than `order_max_quantity`, or lines priced in
    /// different currencies.
    pub(super) async fn priced_order(&self, payload: &Value) -> Result<Value, WorkflowError> {
        // Lines are merged by the catalogue's own SKU (a shop may find `sofa-3` as `SOFA-3`),
        // so the limits below see every unit of a product at once.
        let mut merged: Vec<(Product, i64)> = Vec::new();
        for line in payload["lines"].as_array().into_iter().flatten() {
            let asked = line["sku"].as_str().unwrap_or_default().trim();
            let quantity = line["quantity"].as_i64().unwrap_or_default();
            if quantity < 1 {
                return Err(WorkflowError::invalid(
                    "payload.lines",
                    "every line orders at least one unit",
                ));
            }
            let product = self.product(asked).await?.ok_or_else(|| {
                refused("product_unknown", format!("there is no product {asked:?}"))
            })?;
            match merged
                .iter_mut()
                .find(|(known, _)| known.sku == product.sku)
            {
                Some((_, total)) => *total = total.saturating_add(quantity),
                None => merged.push((product, quantity)),
            }
        }
        let maximum = self.settings.policy.order_max_quantity;
        let mut lines = Vec::with_capacity(merged.len());
        let mut total: i64 = 0;
        let mut currency: Option<String> = None;
        for (product, quantity) in merged {
            let sku = &product.sku;
            if !product.active {
                return Err(refused(
                    "product_unavailable",
                    format!("{} ({sku}) is no longer sold", product.name("en")),
                ));
            }
            if quantity > maximum {
                return Err(refused(
                    "quantity_above_maximum",
                    format!(
                        "{quantity} units of {sku}: one order holds at most {maximum} of a product"
                    ),
                ));
            }
            if quantity > product.stock {
                return Err(refused(
                    "out_of_stock",
                    format!(
                        "{quantity} units of {sku} asked for, {} in stock",
                        product.stock.max(0)
                    ),
                ));
            }
            match &currency {
                Some(first) if !first.eq_ignore_ascii_case(&product.currency) => {
                    return Err(refused(
                        "mixed_currencies",
                        format!(
                            "{sku} is priced in {}, the order in {first}",
                            product.currency
                        ),
                    ));
                }
                Some(_) => {}
                None => currency = Some(product.currency.to_uppercase()),
            }
            let priced = product
                .price_cents
                .checked_mul(quantity)
                .and_then(|line| total.checked_add(line).map(|sum| (line, sum)));
            let Some((line_total, sum)) = priced else {
                return Err(WorkflowError::invalid(
                    "payload.lines",
                    "the total is too large",
                ));
            };
            total = sum;
            lines.push(json!({
                "sku": sku,
                "name": product.name("en"),
                "quantity": quantity,
                "unit_price_cents": product.price_cents,
                "total_cents": line_total,
            }));
        }
        let mut priced_payload = payload.clone();
        priced_payload["lines"] = Value::Array(lines);
        priced_payload["total_cents"] = json!(total);
        priced_payload["currency"] = json!(currency.unwrap_or_default());
        tracing::debug!(total = %money(total, priced_payload["currency"].as_str().unwrap_or_default()), "order priced");
        Ok(priced_payload)
    }
}

fn refused(code: &'static str, message: String) -> WorkflowError {
    WorkflowError::PolicyRefused { code, message }
}

fn catalogue_error(error: CatalogueError) -> WorkflowError {
    match error {
        CatalogueError::Store(error) => WorkflowError::Store(error),
        other => WorkflowError::CatalogueUnavailable(other.to_string()),
    }
}
