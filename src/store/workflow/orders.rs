//! The built-in order source's orders, looked up by id or by the customer's email.

use sqlx::{AssertSqlSafe, Row};

use crate::store::script::{Bind, Statement};
use crate::store::{Store, StoreResult, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: String,
    pub customer_email: String,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    pub placed_at: i64,
    pub delivered_at: Option<i64>,
    /// JSON array.
    pub items: String,
    /// One line of text.
    pub shipping_address: Option<String>,
}

const ORDER_COLUMNS: &str = "id, customer_email, status, total_cents, currency, placed_at, \
     delivered_at, items, shipping_address";

fn order_of(row: &sqlx::any::AnyRow) -> StoreResult<OrderRow> {
    Ok(OrderRow {
        id: row.try_get("id")?,
        customer_email: row.try_get("customer_email")?,
        status: row.try_get("status")?,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        placed_at: row.try_get("placed_at")?,
        delivered_at: row.try_get("delivered_at")?,
        items: row.try_get("items")?,
        shipping_address: row.try_get("shipping_address")?,
    })
}

impl Store {
    /// Insert or replace orders of the built-in order source.
    pub async fn upsert_orders(&self, orders: &[OrderRow]) -> StoreResult<()> {
        let now = now_ms();
        for chunk in orders.chunks(100) {
            let statements = chunk
                .iter()
                .map(|order| {
                    Statement::new(
                        "INSERT INTO orders (id, customer_email, status, total_cents, currency, \
                         placed_at, delivered_at, items, shipping_address, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (id) DO UPDATE SET customer_email = excluded.customer_email, \
                         status = excluded.status, total_cents = excluded.total_cents, \
                         currency = excluded.currency, placed_at = excluded.placed_at, \
                         delivered_at = excluded.delivered_at, items = excluded.items, \
                         shipping_address = excluded.shipping_address, \
                         updated_at = excluded.updated_at",
                        vec![
                            (&order.id).into(),
                            (&order.customer_email).into(),
                            (&order.status).into(),
                            order.total_cents.into(),
                            (&order.currency).into(),
                            order.placed_at.into(),
                            Bind::OptInt(order.delivered_at),
                            (&order.items).into(),
                            Bind::OptText(order.shipping_address.clone()),
                            now.into(),
                        ],
                    )
                })
                .collect();
            self.run_script(statements).await?;
        }
        Ok(())
    }

    pub async fn order(&self, id: &str) -> StoreResult<Option<OrderRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(order_of).transpose()
    }

    /// Orders of a customer (by normalised email), newest first.
    pub async fn orders_of(&self, customer_email: &str) -> StoreResult<Vec<OrderRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE customer_email = $1 \
             ORDER BY placed_at DESC, id"
        )))
        .bind(customer_email)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(order_of).collect()
    }
}
