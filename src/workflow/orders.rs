//! Orders, wherever they live: the [`OrderSource`] trait, the built-in source (the `orders`
//! table, seeded from a JSON file such as `config/demo/orders.json`) and the HTTP adapter that
//! reads the company's own shop API through configurable URL templates and a field mapping.
//!
//! Whose order it is comes from the order itself (`customer_email`); the workflow compares it
//! with the emails linked to the conversation's contact, never with anything a customer typed.

use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::settings::HttpOrdersSettings;
use super::shop_api::{ShopApi, ShopError, cents, fill, list_at, path_segment_safe};
use crate::store::{OrderRow, Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// An order as the workflow needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    pub customer_email: String,
    /// `placed`, `paid`, `shipped`, `delivered`, `cancelled` or `returned`.
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    /// RFC 3339.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String)]
    pub placed_at: i64,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>)]
    pub delivered_at: Option<i64>,
    pub items: Vec<OrderItem>,
    /// Where it was sent, as one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<String>,
}

impl Order {
    pub fn is_shipped(&self) -> bool {
        matches!(self.status.as_str(), "shipped" | "delivered" | "returned")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order source unavailable: {0}")]
    Unavailable(String),
    #[error("order source answered something unexpected: {0}")]
    Malformed(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<ShopError> for OrderError {
    fn from(error: ShopError) -> OrderError {
        match error {
            ShopError::Unavailable(message) => OrderError::Unavailable(message),
            ShopError::Malformed(message) => OrderError::Malformed(message),
        }
    }
}

/// Where orders come from.
#[async_trait]
pub trait OrderSource: Send + Sync {
    /// One order, or `None` if the source does not know it.
    async fn order(&self, order_id: &str) -> Result<Option<Order>, OrderError>;
    /// Every order of a customer, newest first.
    async fn orders_of(&self, customer_email: &str) -> Result<Vec<Order>, OrderError>;
}

pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    pub fn parse(text: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.timestamp_millis())
    }

    pub fn serialize<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

pub(crate) mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => serializer.serialize_str(&super::rfc3339::format(*ms)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) => super::rfc3339::parse(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time")),
        }
    }
}

fn order_of_row(row: OrderRow) -> Result<Order, OrderError> {
    let items = serde_json::from_str(&row.items)
        .map_err(|error| OrderError::Malformed(format!("items of order {}: {error}", row.id)))?;
    Ok(Order {
        id: row.id,
        customer_email: row.customer_email,
        status: row.status,
        total_cents: row.total_cents,
        currency: row.currency,
        placed_at: row.placed_at,
        delivered_at: row.delivered_at,
        items,
        shipping_address: row.shipping_address,
    })
}

/// Orders kept in Switchboard's own database.
pub struct BuiltinOrders {
    store: Store,
}

impl BuiltinOrders {
    pub fn new(store: Store) -> BuiltinOrders {
        BuiltinOrders { store }
    }
}

#[async_trait]
impl OrderSource for BuiltinOrders {
    async fn order(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        match self.store.order(order_id).await? {
            Some(row) => Ok(Some(order_of_row(row)?)),
            None => Ok(None),
        }
    }

    async fn orders_of(&self, customer_email: &str) -> Result<Vec<Order>, OrderError> {
        self.store
            .orders_of(&normalise_email(customer_email))
            .await?
            .into_iter()
            .map(order_of_row)
            .collect()
    }
}

pub use switchboard_connector::normalise_email;

/// One order of a seed file. Times are relative to the moment of seeding, so that the demo
/// shop's "delivered 3 days ago" stays true whenever it runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedOrder {
    id: String,
    customer_email: String,
    status: String,
    total_cents: i64,
    currency: String,
    placed_days_ago: i64,
    #[serde(default)]
    delivered_days_ago: Option<i64>,
    #[serde(default)]
    items: Vec<OrderItem>,
    #[serde(default)]
    shipping_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    /// Free text for the people who edit the file.
    #[serde(default, rename = "_comment")]
    _comment: Option<String>,
    orders: Vec<SeedOrder>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("parsing {path}: {error}")]
    Parse {
        path: String,
        error: serde_json::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Upsert the orders of a seed file into the built-in store; returns how many.
pub async fn seed(store: &Store, path: &Path) -> Result<usize, SeedError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| SeedError::Read {
        path: shown.clone(),
        error,
    })?;
    let file: SeedFile = serde_json::from_str(&text).map_err(|error| SeedError::Parse {
        path: shown.clone(),
        error,
    })?;
    let now = now_ms();
    let day = 24 * 3600 * 1000;
    let rows: Vec<OrderRow> = file
        .orders
        .into_iter()
        .map(|order| OrderRow {
            id: order.id,
            customer_email: normalise_email(&order.customer_email),
            status: order.status,
            total_cents: order.total_cents,
            currency: order.currency,
            placed_at: now - order.placed_days_ago * day,
            delivered_at: order.delivered_days_ago.map(|days| now - days * day),
            items: serde_json::to_string(&order.items).unwrap_or_else(|_| "[]".into()),
            shipping_address: order.shipping_address,
        })
        .collect();
    let count = rows.len();
    store.upsert_orders(&rows).await?;
    Ok(count)
}

/// Orders read from the shop's own HTTP API.
pub struct HttpOrders {
    api: ShopApi,
    settings: HttpOrdersSettings,
}

impl HttpOrders {
    pub fn new(settings: HttpOrdersSettings) -> Result<HttpOrders, OrderError> {
        if settings.order_url.is_empty() {
            return Err(OrderError::Unavailable(
                "workflow.http_orders.order_url is empty".into(),
            ));
        }
        let api = ShopApi::new(settings.timeout_ms, &settings.bearer_token)?;
        Ok(HttpOrders { api, settings })
    }

    /// Turn one order of the shop's JSON into an [`Order`] with the configured mapping.
    pub fn map_order(&self, value: &Value) -> Result<Order, OrderError> {
        let fields = &self.settings.fields;
        let text = |pointer: &str, what: &str| -> Result<String, OrderError> {
            match value.pointer(pointer) {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(Value::Number(number)) => Ok(number.to_string()),
                _ => Err(OrderError::Malformed(format!(
                    "{what} missing at {pointer}"
                ))),
            }
        };
        let in_cents = self.settings.amounts_in_cents;
        let amount = |item: &Value, pointer: &str, what: &str| -> Result<i64, OrderError> {
            cents(item.pointer(pointer), in_cents)
                .ok_or_else(|| OrderError::Malformed(format!("{what} missing at {pointer}")))
        };
        let time = |pointer: &str| -> Option<i64> {
            match value.pointer(pointer)? {
                Value::Number(number) => number.as_i64(),
                Value::String(text) => rfc3339::parse(text),
                _ => None,
            }
        };
        let shop_status = text(&fields.status, "status")?;
        let status = self
            .settings
            .statuses
            .get(&shop_status)
            .cloned()
            .unwrap_or(shop_status);
        let mut items = Vec::new();
        if !fields.items.is_empty()
            && let Some(Value::Array(list)) = value.pointer(&fields.items)
        {
            for item in list {
                let item_text = |pointer: &str| match item.pointer(pointer) {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                items.push(OrderItem {
                    sku: item_text(&fields.item_sku),
                    name: item_text(&fields.item_name),
                    quantity: item
                        .pointer(&fields.item_quantity)
                        .and_then(Value::as_i64)
                        .unwrap_or(1),
                    unit_price_cents: amount(item, &fields.item_unit_price, "item price")
                        .unwrap_or(0),
                });
            }
        }
        Ok(Order {
            id: text(&fields.id, "id")?,
            customer_email: normalise_email(&text(&fields.customer_email, "customer email")?),
            status,
            total_cents: amount(value, &fields.total, "total")?,
            currency: text(&fields.currency, "currency")?,
            placed_at: time(&fields.placed_at).unwrap_or(0),
            delivered_at: time(&fields.delivered_at),
            items,
            shipping_address: address_at(value, &fields.shipping_address),
        })
    }
}

/// An address as one line: the text at `pointer`, or an object's parts joined in the order a
/// label reads (`line1`, `line2`, `postal_code`, `city`, `region`, `country`).
fn address_at(value: &Value, pointer: &str) -> Option<String> {
    if pointer.is_empty() {
        return None;
    }
    match value.pointer(pointer)? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Value::Object(parts) => {
            let line = ["line1", "line2", "postal_code", "city", "region", "country"]
                .into_iter()
                .filter_map(|key| parts.get(key).and_then(Value::as_str))
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            (!line.is_empty()).then_some(line)
        }
        _ => None,
    }
}

#[async_trait]
impl OrderSource for HttpOrders {
    async fn order(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        if !path_segment_safe(order_id) {
            return Ok(None);
        }
        let url = fill(&self.settings.order_url, "order_id", order_id);
        match self.api.get(&url).await? {
            Some(body) => Ok(Some(self.map_order(&body)?)),
            None => Ok(None),
        }
    }

    async fn orders_of(&self, customer_email: &str) -> Result<Vec<Order>, OrderError> {
        if self.settings.customer_orders_url.is_empty() {
            return Ok(Vec::new());
        }
        let url = fill(
            &self.settings.customer_orders_url,
            "email",
            &normalise_email(customer_email),
        );
        let Some(body) = self.api.get(&url).await? else {
            return Ok(Vec::new());
        };
        let Some(list) = list_at(&body, &self.settings.fields.list) else {
            return Err(OrderError::Malformed(
                "the customer orders response holds no array".into(),
            ));
        };
        let mut orders = list
            .iter()
            .map(|value| self.map_order(value))
            .collect::<Result<Vec<_>, _>>()?;
        orders.sort_by_key(|order| std::cmp::Reverse(order.placed_at));
        Ok(orders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_a_shop_order_with_pointers_and_statuses() {
        let mut settings = HttpOrdersSettings {
            order_url: "http://shop/orders/{order_id}".into(),
            amounts_in_cents: false,
            ..HttpOrdersSettings::default()
        };
        settings.fields.id = "/number".into();
        settings.fields.customer_email = "/customer/email".into();
        settings.fields.status = "/state".into();
        settings.fields.total = "/total".into();
        settings.fields.delivered_at = "/shipping/delivered".into();
        settings.fields.shipping_address = "/shipping/address".into();
        settings.fields.item_unit_price = "/price".into();
        settings
            .statuses
            .insert("completed".into(), "delivered".into());
        let source = HttpOrders::new(settings).unwrap();
        let order = source
            .map_order(&json!({
                "number": 7781, "customer": {"email": "Ana@Example.com"}, "state": "completed",
                "total": "45.50", "currency": "EUR", "placed_at": "2026-01-02T10:00:00Z",
                "shipping": {"delivered": 1767348000000i64,
                             "address": {"line1": "Carrer Major 1", "city": "Girona",
                                         "postal_code": "17001", "country": "ES"}},
                "items": [{"sku": "MUG", "name": "Mug", "quantity": 2, "price": 10.25}]
            }))
            .unwrap();
        assert_eq!(order.id, "7781");
        assert_eq!(order.customer_email, "ana@example.com");
        assert_eq!(order.status, "delivered");
        assert_eq!(order.total_cents, 4550);
        assert_eq!(order.delivered_at, Some(1767348000000));
        assert_eq!(order.items[0].unit_price_cents, 1025);
        assert_eq!(
            order.shipping_address.as_deref(),
            Some("Carrer Major 1, 17001, Girona, ES")
        );
        assert!(source.map_order(&json!({"number": 1})).is_err());
    }
}
