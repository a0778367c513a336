//! The built-in catalogue source's products, looked up by SKU or listed for the search index.

use sqlx::Row;

use crate::store::script::Statement;
use crate::store::{Store, StoreResult, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub sku: String,
    /// JSON object: language to name.
    pub names: String,
    /// JSON object: language to description.
    pub descriptions: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub active: bool,
}

fn product_of(row: &sqlx::any::AnyRow) -> StoreResult<ProductRow> {
    Ok(ProductRow {
        sku: row.try_get("sku")?,
        names: row.try_get("names")?,
        descriptions: row.try_get("descriptions")?,
        price_cents: row.try_get("price_cents")?,
        currency: row.try_get("currency")?,
        stock: row.try_get("stock")?,
        active: row.try_get::<i64, _>("active")? != 0,
    })
}

impl Store {
    /// Insert or replace products of the built-in catalogue.
    pub async fn upsert_products(&self, products: &[ProductRow]) -> StoreResult<()> {
        let now = now_ms();
        for chunk in products.chunks(100) {
            let statements = chunk
                .iter()
                .map(|product| {
                    Statement::new(
                        "INSERT INTO products (sku, names, descriptions, price_cents, currency, \
                         stock, active, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (sku) DO UPDATE SET names = excluded.names, \
                         descriptions = excluded.descriptions, \
                         price_cents = excluded.price_cents, currency = excluded.currency, \
                         stock = excluded.stock, active = excluded.active, \
                         updated_at = excluded.updated_at",
                        vec![
                            (&product.sku).into(),
                            (&product.names).into(),
                            (&product.descriptions).into(),
                            product.price_cents.into(),
                            (&product.currency).into(),
                            product.stock.into(),
                            i64::from(product.active).into(),
                            now.into(),
                        ],
                    )
                })
                .collect();
            self.run_script(statements).await?;
        }
        Ok(())
    }

    pub async fn product(&self, sku: &str) -> StoreResult<Option<ProductRow>> {
        let row = sqlx::query(
            "SELECT sku, names, descriptions, price_cents, currency, stock, active \
             FROM products WHERE sku = $1",
        )
        .bind(sku)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(product_of).transpose()
    }

    /// Every product, active or not, by SKU.
    pub async fn products(&self) -> StoreResult<Vec<ProductRow>> {
        let rows = sqlx::query(
            "SELECT sku, names, descriptions, price_cents, currency, stock, active \
             FROM products ORDER BY sku",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(product_of).collect()
    }
}
