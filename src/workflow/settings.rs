//! The `[workflow]` section of the config file: policies, queues, the order source, webhooks
//! and custom task types. Every key is documented in `config/switchboard.toml`; the defaults
//! here match it (except `orders_seed`, which the shipped file points at the demo shop).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowSettings {
    /// Language of customer notices when the conversation's is unknown: `en`, `es` or `ca`.
    pub default_language: String,
    /// `builtin` (the orders table, seeded from `orders_seed`) or `http` (the shop's API).
    pub order_source: String,
    /// JSON file of orders upserted into the built-in order store at start-up; empty: none.
    pub orders_seed: PathBuf,
    /// `builtin` (the products table, seeded from `catalogue_seed`) or `http` (the shop's API).
    pub catalogue_source: String,
    /// JSON file of products upserted into the built-in catalogue at start-up; empty: none.
    pub catalogue_seed: PathBuf,
    pub http_catalogue: HttpCatalogueSettings,
    pub policy: PolicySettings,
    /// Queue per task type; custom types name theirs in `custom_types`.
    pub queues: BTreeMap<String, String>,
    pub http_orders: HttpOrdersSettings,
    /// Back-office endpoints that receive every task event, signed.
    pub webhooks: Vec<WebhookEndpoint>,
    /// Milliseconds one webhook delivery attempt may take.
    pub webhook_timeout_ms: u64,
    pub inbound: InboundSettings,
    pub custom_types: Vec<CustomType>,
}

impl Default for WorkflowSettings {
    fn default() -> WorkflowSettings {
        let queues = [
            ("refund", "finance"),
            ("order", "sales"),
            ("cancellation", "logistics"),
            ("address_change", "logistics"),
            ("return", "logistics"),
            ("callback", "support"),
        ]
        .into_iter()
        .map(|(kind, queue)| (kind.to_string(), queue.to_string()))
        .collect();
        WorkflowSettings {
            default_language: "en".into(),
            order_source: "builtin".into(),
            orders_seed: PathBuf::new(),
            catalogue_source: "builtin".into(),
            catalogue_seed: PathBuf::new(),
            http_catalogue: HttpCatalogueSettings::default(),
            policy: PolicySettings::default(),
            queues,
            http_orders: HttpOrdersSettings::default(),
            webhooks: Vec::new(),
            webhook_timeout_ms: 10_000,
            inbound: InboundSettings::default(),
            custom_types: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Refunds up to this amount (in cents of the order's currency) on a delivered order are
    /// approved without a person.
    pub refund_auto_approve_max_cents: i64,
    /// ... if the order was delivered at most this many days ago.
    pub refund_auto_approve_within_days: i64,
    /// Every other refund waits for an approver holding this role.
    pub refund_approver_role: String,
    /// Returns are accepted up to this many days after delivery.
    pub return_window_days: i64,
    /// Orders up to this total (in cents of the catalogue's currency) are approved without a
    /// person.
    pub order_auto_approve_max_cents: i64,
    /// Every other order waits for an approver holding this role.
    pub order_approver_role: String,
    /// Most units of one product in one order.
    pub order_max_quantity: i64,
}

impl Default for PolicySettings {
    fn default() -> PolicySettings {
        PolicySettings {
            refund_auto_approve_max_cents: 5000,
            refund_auto_approve_within_days: 30,
            refund_approver_role: "finance".into(),
            return_window_days: 30,
            order_auto_approve_max_cents: 10_000,
            order_approver_role: "sales".into(),
            order_max_quantity: 10,
        }
    }
}

/// Reading orders from the company's own shop API.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpOrdersSettings {
    /// URL of one order; `{order_id}` is replaced (URL-encoded). A 404 means "no such order".
    pub order_url: String,
    /// URL of a customer's orders; `{email}` is replaced (URL-encoded).
    pub customer_orders_url: String,
    /// Sent as `Authorization: Bearer ...` when not empty.
    pub bearer_token: String,
    pub timeout_ms: u64,
    /// Amounts in the shop's JSON are integer cents (true) or decimal units such as 12.50.
    pub amounts_in_cents: bool,
    /// Where each field sits in the shop's order JSON, as JSON pointers.
    pub fields: OrderFieldMap,
    /// The shop's order statuses mapped to Switchboard's (`placed`, `paid`, `shipped`,
    /// `delivered`, `cancelled`, `returned`); statuses not listed are taken as they are.
    pub statuses: BTreeMap<String, String>,
}

impl Default for HttpOrdersSettings {
    fn default() -> HttpOrdersSettings {
        HttpOrdersSettings {
            order_url: String::new(),
            customer_orders_url: String::new(),
            bearer_token: String::new(),
            timeout_ms: 5000,
            amounts_in_cents: true,
            fields: OrderFieldMap::default(),
            statuses: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for HttpOrdersSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOrdersSettings")
            .field("order_url", &self.order_url)
            .field("customer_orders_url", &self.customer_orders_url)
            .field("bearer_token", &"<redacted>")
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderFieldMap {
    pub id: String,
    pub customer_email: String,
    pub status: String,
    pub total: String,
    pub currency: String,
    /// RFC 3339 text or integer milliseconds.
    pub placed_at: String,
    pub delivered_at: String,
    /// An array of `{sku, name, quantity, unit_price}` (mapped with `item_*` below); empty: none.
    pub items: String,
    pub item_sku: String,
    pub item_name: String,
    pub item_quantity: String,
    pub item_unit_price: String,
    /// Where the order was sent: text, or an object of `line1`, `line2`, `postal_code`,
    /// `city`, `region`, `country`; empty: not read.
    pub shipping_address: String,
    /// Where the array of orders sits in the customer orders response; empty: the top level.
    pub list: String,
}

impl Default for OrderFieldMap {
    fn default() -> OrderFieldMap {
        OrderFieldMap {
            id: "/id".into(),
            customer_email: "/customer_email".into(),
            status: "/status".into(),
            total: "/total_cents".into(),
            currency: "/currency".into(),
            placed_at: "/placed_at".into(),
            delivered_at: "/delivered_at".into(),
            items: "/items".into(),
            item_sku: "/sku".into(),
            item_name: "/name".into(),
            item_quantity: "/quantity".into(),
            item_unit_price: "/unit_price_cents".into(),
            shipping_address: "/shipping_address".into(),
            list: String::new(),
        }
    }
}

/// Reading the catalogue from the company's own shop API.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpCatalogueSettings {
    /// URL of one product; `{sku}` is replaced (URL-encoded). A 404 means "no such product".
    pub product_url: String,
    /// URL of every product (for the search index).
    pub products_url: String,
    /// Sent as `Authorization: Bearer ...` when not empty.
    pub bearer_token: String,
    pub timeout_ms: u64,
    /// Amounts in the shop's JSON are integer cents (true) or decimal units such as 12.50.
    pub amounts_in_cents: bool,
    /// Minutes between two reads of `products_url` for the search index.
    pub refresh_minutes: u64,
    pub fields: ProductFieldMap,
}

impl Default for HttpCatalogueSettings {
    fn default() -> HttpCatalogueSettings {
        HttpCatalogueSettings {
            product_url: String::new(),
            products_url: String::new(),
            bearer_token: String::new(),
            timeout_ms: 5000,
            amounts_in_cents: true,
            refresh_minutes: 15,
            fields: ProductFieldMap::default(),
        }
    }
}

impl std::fmt::Debug for HttpCatalogueSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCatalogueSettings")
            .field("product_url", &self.product_url)
            .field("products_url", &self.products_url)
            .field("bearer_token", &"<redacted>")
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

/// Where each field sits in the shop's product JSON, as JSON pointers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProductFieldMap {
    pub sku: String,
    /// An object of names by language (`{"en": ..., "es": ...}`) or one name for all.
    pub name: String,
    /// As `name`; empty: not read.
    pub description: String,
    pub price: String,
    pub currency: String,
    /// Units in stock; empty: not read (always in stock).
    pub stock: String,
    /// A boolean; empty: every product listed is sold.
    pub active: String,
    /// Where the array of products sits in the products response; empty: the top level.
    pub list: String,
}

impl Default for ProductFieldMap {
    fn default() -> ProductFieldMap {
        ProductFieldMap {
            sku: "/sku".into(),
            name: "/names".into(),
            description: "/descriptions".into(),
            price: "/price_cents".into(),
            currency: "/currency".into(),
            stock: "/stock".into(),
            active: "/active".into(),
            list: String::new(),
        }
    }
}

/// One back-office endpoint for outbound webhooks.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// A stable name: deliveries refer to it, so renaming drops pending ones (dead-lettered).
    pub name: String,
    pub url: String,
    /// `whsec_` followed by base64 of the key (Standard Webhooks).
    pub secret: String,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The back office pushing status updates to `POST /api/v1/inbound/events`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundSettings {
    /// `whsec_...`; empty disables the endpoint.
    pub secret: String,
    /// How far a `webhook-timestamp` may be from now, in seconds (replay protection).
    pub tolerance_secs: i64,
    /// Roles the back office holds when it decides approvals (e.g. `["finance"]`).
    pub roles: Vec<String>,
}

impl Default for InboundSettings {
    fn default() -> InboundSettings {
        InboundSettings {
            secret: String::new(),
            tolerance_secs: 300,
            roles: Vec::new(),
        }
    }
}

impl std::fmt::Debug for InboundSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSettings")
            .field("secret", &"<redacted>")
            .field("tolerance_secs", &self.tolerance_secs)
            .field("roles", &self.roles)
            .finish()
    }
}

/// A task type declared in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomType {
    /// Lower case letters, digits and `_`; must not clash with a built-in type.
    pub name: String,
    /// How customers read it in notices ("warranty claim"); default: the name.
    #[serde(default)]
    pub label: String,
    pub queue: String,
    /// Whether a task of this type must name one of the customer's orders.
    #[serde(default)]
    pub requires_order: bool,
    /// `auto` (approved at once) or `required` (waits for an approver).
    #[serde(default = "default_approval")]
    pub approval: String,
    /// With `approval = "required"`: the role the approver must hold; empty: any approver.
    #[serde(default)]
    pub approver_role: String,
    /// The JSON schema of the payload, as JSON text.
    pub schema: String,
}

fn default_approval() -> String {
    "auto".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_section_matches_the_defaults_and_its_custom_types_load() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.toml");
        let parsed: crate::config::Settings = config::Config::builder()
            .add_source(config::File::from(path))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("shipped config parses");
        let shipped = parsed.workflow;
        let defaults = WorkflowSettings::default();
        assert_eq!(shipped.default_language, defaults.default_language);
        assert_eq!(shipped.order_source, defaults.order_source);
        assert_eq!(shipped.queues, defaults.queues);
        assert_eq!(
            shipped.policy.refund_auto_approve_max_cents,
            defaults.policy.refund_auto_approve_max_cents
        );
        assert_eq!(
            shipped.policy.refund_approver_role,
            defaults.policy.refund_approver_role
        );
        assert_eq!(
            shipped.http_orders.fields.total,
            defaults.http_orders.fields.total
        );
        assert_eq!(
            shipped.inbound.tolerance_secs,
            defaults.inbound.tolerance_secs
        );
        assert_eq!(shipped.webhook_timeout_ms, defaults.webhook_timeout_ms);
        // The demo: seeded orders that parse, and a custom type whose schema compiles.
        assert!(shipped.orders_seed.ends_with("config/demo/orders.json"));
        let types = crate::workflow::types::TaskTypes::from_settings(&shipped).unwrap();
        assert!(types.get("warranty_claim").is_some());
    }
}
