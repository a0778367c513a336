//! Products, wherever they live: the [`CatalogueSource`] trait, the built-in source (the
//! `products` table, seeded from a JSON file such as `config/demo/catalogue.json`) and the
//! HTTP adapter that reads the company's own shop API through URL templates and a field
//! mapping, as the order sources do.
//!
//! A product's price, stock and whether it is still sold are read from the source when an
//! order is opened, never taken from what a customer or the assistant said.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::settings::HttpCatalogueSettings;
use super::shop_api::{ShopApi, ShopError, cents, fill, list_at, path_segment_safe, text_at};
use crate::knowledge::language::normalise;
use crate::store::{ProductRow, Store, StoreError};

/// A product as the workflow and the assistant need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    pub sku: String,
    /// Name by language (`en`, `es`, `ca`).
    pub names: BTreeMap<String, String>,
    /// Description by language.
    #[serde(default)]
    pub descriptions: BTreeMap<String, String>,
    pub price_cents: i64,
    pub currency: String,
    /// Units that can be sold now.
    pub stock: i64,
    /// False once the product is no longer sold.
    pub active: bool,
}

impl Product {
    /// The name in `language`, else in English, else any, else the SKU.
    pub fn name(&self, language: &str) -> &str {
        pick(&self.names, language).unwrap_or(&self.sku)
    }

    /// The description in `language`, else in English, else any.
    pub fn description(&self, language: &str) -> &str {
        pick(&self.descriptions, language).unwrap_or_default()
    }
}

fn pick<'a>(texts: &'a BTreeMap<String, String>, language: &str) -> Option<&'a str> {
    texts
        .get(language)
        .or_else(|| texts.get("en"))
        .or_else(|| texts.values().next())
        .map(String::as_str)
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue unavailable: {0}")]
    Unavailable(String),
    #[error("catalogue answered something unexpected: {0}")]
    Malformed(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<ShopError> for CatalogueError {
    fn from(error: ShopError) -> CatalogueError {
        match error {
            ShopError::Unavailable(message) => CatalogueError::Unavailable(message),
            ShopError::Malformed(message) => CatalogueError::Malformed(message),
        }
    }
}

/// Where products come from.
#[async_trait]
pub trait CatalogueSource: Send + Sync {
    /// One product, or `None` if the source does not know it.
    async fn product(&self, sku: &str) -> Result<Option<Product>, CatalogueError>;
    /// Every product, sold or not (for the search index).
    async fn products(&self) -> Result<Vec<Product>, CatalogueError>;
}

fn product_of_row(row: ProductRow) -> Result<Product, CatalogueError> {
    let texts = |json: &str, what: &str| {
        serde_json::from_str::<BTreeMap<String, String>>(json)
            .map_err(|error| CatalogueError::Malformed(format!("{what} of {}: {error}", row.sku)))
    };
    Ok(Product {
        names: texts(&row.names, "names")?,
        descriptions: texts(&row.descriptions, "descriptions")?,
        sku: row.sku,
        price_cents: row.price_cents,
        currency: row.currency,
        stock: row.stock,
        active: row.active,
    })
}

/// Products kept in Switchboard's own database.
pub struct BuiltinCatalogue {
    store: Store,
}

impl BuiltinCatalogue {
    pub fn new(store: Store) -> BuiltinCatalogue {
        BuiltinCatalogue { store }
    }
}

#[async_trait]
impl CatalogueSource for BuiltinCatalogue {
    async fn product(&self, sku: &str) -> Result<Option<Product>, CatalogueError> {
        self.store
            .product(sku)
            .await?
            .map(product_of_row)
            .transpose()
    }

    async fn products(&self) -> Result<Vec<Product>, CatalogueError> {
        self.store
            .products()
            .await?
            .into_iter()
            .map(product_of_row)
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    /// Free text for the people who edit the file.
    #[serde(default, rename = "_comment")]
    _comment: Option<String>,
    products: Vec<Product>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueSeedError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("parsing {path}: {error}")]
    Parse {
        path: String,
        error: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Upsert the products of a seed file into the built-in catalogue; returns how many.
pub async fn seed(store: &Store, path: &Path) -> Result<usize, CatalogueSeedError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| CatalogueSeedError::Read {
        path: shown.clone(),
        error,
    })?;
    let file: SeedFile =
        serde_json::from_str(&text).map_err(|error| CatalogueSeedError::Parse {
            path: shown.clone(),
            error,
        })?;
    let mut rows = Vec::with_capacity(file.products.len());
    for product in file.products {
        if let Some(problem) = problem_of(&product) {
            return Err(CatalogueSeedError::Invalid {
                path: shown,
                message: format!("product {:?}: {problem}", product.sku),
            });
        }
        rows.push(ProductRow {
            sku: product.sku,
            names: serde_json::to_string(&product.names).unwrap_or_else(|_| "{}".into()),
            descriptions: serde_json::to_string(&product.descriptions)
                .unwrap_or_else(|_| "{}".into()),
            price_cents: product.price_cents,
            currency: product.currency.trim().to_uppercase(),
            stock: product.stock,
            active: product.active,
        });
    }
    let count = rows.len();
    // A product taken out of the file is no longer sold (kept, for the orders that name it).
    let seeded: std::collections::HashSet<String> =
        rows.iter().map(|row| row.sku.clone()).collect();
    let retired: Vec<ProductRow> = store
        .products()
        .await?
        .into_iter()
        .filter(|row| row.active && !seeded.contains(&row.sku))
        .map(|row| ProductRow {
            active: false,
            ..row
        })
        .collect();
    rows.extend(retired);
    store.upsert_products(&rows).await?;
    Ok(count)
}

/// What makes a product unusable, if anything.
fn problem_of(product: &Product) -> Option<&'static str> {
    if product.sku.trim().is_empty() || product.sku.len() > 64 {
        Some("a SKU is 1 to 64 characters")
    } else if product.names.values().all(|name| name.trim().is_empty()) {
        Some("it needs a name")
    } else if product.price_cents < 0 {
        Some("the price is negative")
    } else if product.currency.trim().is_empty() {
        Some("it needs a currency")
    } else {
        None
    }
}

/// Products read from the shop's own HTTP API.
pub struct HttpCatalogue {
    api: ShopApi,
    settings: HttpCatalogueSettings,
}

impl HttpCatalogue {
    pub fn new(settings: HttpCatalogueSettings) -> Result<HttpCatalogue, CatalogueError> {
        if settings.product_url.is_empty() {
            return Err(CatalogueError::Unavailable(
                "workflow.http_catalogue.product_url is empty".into(),
            ));
        }
        let api = ShopApi::new(settings.timeout_ms, &settings.bearer_token)?;
        Ok(HttpCatalogue { api, settings })
    }

    /// Turn one product of the shop's JSON into a [`Product`] with the configured mapping.
    pub fn map_product(&self, value: &Value) -> Result<Product, CatalogueError> {
        let fields = &self.settings.fields;
        let missing = |what: &str, pointer: &str| {
            CatalogueError::Malformed(format!("{what} missing at {pointer}"))
        };
        let sku = text_at(value, &fields.sku).ok_or_else(|| missing("sku", &fields.sku))?;
        let names = texts_at(value, &fields.name);
        if names.is_empty() {
            return Err(missing("name", &fields.name));
        }
        let stock = if fields.stock.is_empty() {
            i64::MAX
        } else {
            value
                .pointer(&fields.stock)
                .and_then(|stock| {
                    stock
                        .as_i64()
                        .or_else(|| stock.as_str().and_then(|text| text.trim().parse().ok()))
                })
                .ok_or_else(|| missing("stock", &fields.stock))?
        };
        let active = fields.active.is_empty()
            || match value.pointer(&fields.active) {
                Some(Value::Bool(active)) => *active,
                Some(Value::String(text)) => matches!(text.as_str(), "true" | "active" | "1"),
                Some(Value::Number(number)) => number.as_i64() != Some(0),
                _ => return Err(missing("active", &fields.active)),
            };
        let product = Product {
            sku,
            names,
            descriptions: texts_at(value, &fields.description),
            price_cents: cents(value.pointer(&fields.price), self.settings.amounts_in_cents)
                .ok_or_else(|| missing("price", &fields.price))?,
            currency: text_at(value, &fields.currency)
                .map(|currency| currency.trim().to_uppercase())
                .ok_or_else(|| missing("currency", &fields.currency))?,
            stock,
            active,
        };
        match problem_of(&product) {
            Some(problem) => Err(CatalogueError::Malformed(format!(
                "product {:?}: {problem}",
                product.sku
            ))),
            None => Ok(product),
        }
    }
}

/// Texts by language at `pointer`: an object of language to text, or one text for all.
fn texts_at(value: &Value, pointer: &str) -> BTreeMap<String, String> {
    if pointer.is_empty() {
        return BTreeMap::new();
    }
    match value.pointer(pointer) {
        Some(Value::String(text)) if !text.trim().is_empty() => {
            BTreeMap::from([("en".to_string(), text.clone())])
        }
        // Languages the search knows (`en-US` is `en`); others are left out.
        Some(Value::Object(by_language)) => by_language
            .iter()
            .filter_map(|(language, text)| {
                let language = normalise(language)?;
                let text = text.as_str()?.trim();
                (!text.is_empty()).then(|| (language.to_string(), text.to_string()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[async_trait]
impl CatalogueSource for HttpCatalogue {
    async fn product(&self, sku: &str) -> Result<Option<Product>, CatalogueError> {
        if !path_segment_safe(sku) {
            return Ok(None);
        }
        let url = fill(&self.settings.product_url, "sku", sku);
        match self.api.get(&url).await? {
            Some(body) => Ok(Some(self.map_product(&body)?)),
            None => Ok(None),
        }
    }

    async fn products(&self) -> Result<Vec<Product>, CatalogueError> {
        if self.settings.products_url.is_empty() {
            return Ok(Vec::new());
        }
        // A 404 is an outage of the list, not an empty shop: the search keeps its last copy.
        let Some(body) = self.api.get(&self.settings.products_url).await? else {
            return Err(CatalogueError::Unavailable(
                "the products URL answered 404".into(),
            ));
        };
        let Some(list) = list_at(&body, &self.settings.fields.list) else {
            return Err(CatalogueError::Malformed(
                "the products response holds no array".into(),
            ));
        };
        // One malformed product is left out of the index, not the whole catalogue.
        Ok(list
            .iter()
            .filter_map(|value| match self.map_product(value) {
                Ok(product) => Some(product),
                Err(error) => {
                    tracing::warn!(%error, "a product of the shop's catalogue was skipped");
                    None
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_a_shop_product_with_pointers() {
        let mut settings = HttpCatalogueSettings {
            product_url: "http://shop/products/{sku}".into(),
            amounts_in_cents: false,
            ..HttpCatalogueSettings::default()
        };
        settings.fields.sku = "/id".into();
        settings.fields.name = "/title".into();
        settings.fields.description = "/body".into();
        settings.fields.price = "/price/amount".into();
        settings.fields.currency = "/price/currency".into();
        settings.fields.stock = "/inventory".into();
        settings.fields.active = "/status".into();
        let source = HttpCatalogue::new(settings).unwrap();
        let product = source
            .map_product(&json!({
                "id": 991, "title": {"en-US": "Blue lamp", "es": "Lámpara azul", "ca": "",
                                     "de": "Blaue Lampe"},
                "body": "Ceramic", "price": {"amount": "49.90", "currency": "EUR"},
                "inventory": "7", "status": "active"
            }))
            .unwrap();
        assert_eq!(product.sku, "991");
        assert_eq!(product.name("es"), "Lámpara azul");
        // No Catalan name: English.
        assert_eq!(product.name("ca"), "Blue lamp");
        // Only languages the search knows.
        assert_eq!(product.names.keys().collect::<Vec<_>>(), ["en", "es"]);
        assert_eq!(product.description("es"), "Ceramic");
        assert_eq!(product.price_cents, 4990);
        assert_eq!(product.stock, 7);
        assert!(product.active);
        let retired = source
            .map_product(
                &json!({"id": "X", "title": "X", "price": {"amount": 1, "currency": "EUR"},
                                 "inventory": 0, "status": "archived"}),
            )
            .unwrap();
        assert!(!retired.active);
        assert!(
            source
                .map_product(&json!({"id": "X", "title": "X"}))
                .is_err()
        );
        assert!(
            source
                .map_product(
                    &json!({"id": "X", "price": {"amount": 1, "currency": "EUR"},
                                     "inventory": 0, "status": "active"})
                )
                .is_err()
        );
    }

    #[test]
    fn the_demo_catalogue_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/catalogue.json");
        let file: SeedFile = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(file.products.len() >= 10);
        for product in &file.products {
            assert_eq!(problem_of(product), None, "{}", product.sku);
            for language in ["en", "es", "ca"] {
                assert!(
                    product.names.contains_key(language),
                    "{} {language}",
                    product.sku
                );
            }
        }
    }
}
