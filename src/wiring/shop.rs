//! The shop as the assistant sees it while taking an order ([`Shop`]): the catalogue's
//! search, a product, the conversation's customer's past orders and a price, each from the
//! workflow acting as that customer. A refusal carries the workflow's reason and the words the
//! customer reads, the same as a refused action's.

use async_trait::async_trait;
use serde_json::json;

use super::actions::{WorkflowActions, date, refusal, refusal_code};
use crate::assistant::shop::{
    OrderSummary, PastLine, PastOrder, ProductOffer, Quote, QuotedLine, RequestSummary, Shop,
    ShopRefusal,
};
use crate::workflow::notify::{amount, language_of};
use crate::workflow::orders::OrderItem;
use crate::workflow::{Product, VerifiedContext, WorkflowError};

impl WorkflowActions {
    /// The context of `conversation_id`, or why not, for the customer.
    async fn context(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<VerifiedContext, ShopRefusal> {
        self.service
            .context_for(conversation_id)
            .await
            .map_err(|error| shop_refusal(&error, language))
    }
}

#[async_trait]
impl Shop for WorkflowActions {
    async fn find_products(
        &self,
        query: &str,
        language: &str,
        limit: usize,
    ) -> Result<Vec<ProductOffer>, ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let Some(index) = &self.products else {
            return Err(shop_refusal(
                &WorkflowError::CatalogueUnavailable("no product search".into()),
                language,
            ));
        };
        let found = index
            .search(query, Some(language), limit)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "product search failed");
                shop_refusal(
                    &WorkflowError::CatalogueUnavailable(error.to_string()),
                    language,
                )
            })?;
        Ok(found
            .into_iter()
            .map(|found| offer(&found.product, language, found.confidence, found.score))
            .collect())
    }

    async fn product(
        &self,
        sku: &str,
        language: &str,
    ) -> Result<Option<ProductOffer>, ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let product = self
            .service
            .product(sku)
            .await
            .map_err(|error| shop_refusal(&error, language))?;
        Ok(product
            .filter(|product| product.active)
            .map(|product| offer(&product, language, 1.0, 1.0)))
    }

    async fn past_orders(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<Vec<PastOrder>, ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let context = self.context(conversation_id, language).await?;
        let orders = self
            .service
            .ordering_customer_orders(context)
            .await
            .map_err(|error| shop_refusal(&error, language))?;
        Ok(orders
            .into_iter()
            .map(|order| PastOrder {
                id: order.id,
                placed_at: order.placed_at,
                lines: past_lines(order.items),
                shipping_address: order.shipping_address,
            })
            .collect())
    }

    async fn orders(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<Vec<OrderSummary>, ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let context = self.context(conversation_id, language).await?;
        let orders = self
            .service
            .customer_orders(context)
            .await
            .map_err(|error| shop_refusal(&error, language))?;
        Ok(orders
            .into_iter()
            .map(|order| OrderSummary {
                total: amount(order.total_cents, &order.currency, language),
                number: order.id,
                status: order.status,
                placed_on: date(order.placed_at),
                delivered_on: order.delivered_at.map(date),
                items: past_lines(order.items),
                shipping_address: order.shipping_address,
            })
            .collect())
    }

    async fn requests(
        &self,
        conversation_id: &str,
        language: &str,
    ) -> Result<Vec<RequestSummary>, ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let context = self.context(conversation_id, language).await?;
        let tasks = self
            .service
            .tasks_of_customer(context)
            .await
            .map_err(|error| shop_refusal(&error, language))?;
        Ok(tasks
            .into_iter()
            .map(|task| RequestSummary {
                kind: task.kind,
                order_number: task.order_id,
                status: task.status.as_str().to_string(),
                opened_at: task.created_at,
                updated_at: task.updated_at,
            })
            .collect())
    }

    async fn check_task(
        &self,
        conversation_id: &str,
        language: &str,
        kind: &str,
        order_id: &str,
    ) -> Result<(), ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let context = self.context(conversation_id, language).await?;
        self.service
            .precheck_task(context, kind, order_id)
            .await
            .map_err(|error| ShopRefusal {
                code: refusal_code(&error).to_string(),
                message: refusal(&error, language, Some(order_id)),
            })
    }

    async fn quote(
        &self,
        conversation_id: &str,
        language: &str,
        lines: &[(String, i64)],
    ) -> Result<Quote, ShopRefusal> {
        let language = language_of(Some(language), &self.service.settings().default_language);
        let context = self.context(conversation_id, language).await?;
        let payload = json!({
            "lines": lines
                .iter()
                .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
                .collect::<Vec<_>>(),
        });
        let priced = self
            .service
            .quote_order(context, &payload)
            .await
            .map_err(|error| shop_refusal(&error, language))?;
        let lines = priced["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|line| QuotedLine {
                sku: line["sku"].as_str().unwrap_or_default().to_string(),
                quantity: line["quantity"].as_i64().unwrap_or_default(),
                unit_price_cents: line["unit_price_cents"].as_i64().unwrap_or_default(),
                total_cents: line["total_cents"].as_i64().unwrap_or_default(),
            })
            .collect();
        Ok(Quote {
            lines,
            total_cents: priced["total_cents"].as_i64().unwrap_or_default(),
            currency: priced["currency"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// An order's items as the assistant reads them.
fn past_lines(items: Vec<OrderItem>) -> Vec<PastLine> {
    items
        .into_iter()
        .map(|item| PastLine {
            sku: item.sku,
            name: item.name,
            quantity: item.quantity,
        })
        .collect()
}

fn offer(product: &Product, language: &str, confidence: f32, score: f32) -> ProductOffer {
    ProductOffer {
        sku: product.sku.clone(),
        name: product.name(language).to_string(),
        price_cents: product.price_cents,
        currency: product.currency.clone(),
        stock: product.stock,
        confidence,
        score,
    }
}

fn shop_refusal(error: &WorkflowError, language: &str) -> ShopRefusal {
    if matches!(
        error,
        WorkflowError::Store(_)
            | WorkflowError::OrdersUnavailable(_)
            | WorkflowError::CatalogueUnavailable(_)
    ) {
        tracing::warn!(%error, "the shop could not answer the assistant");
    }
    ShopRefusal {
        code: refusal_code(error).to_string(),
        message: refusal(error, language, None),
    }
}
