//! Finding products by what customers call them: the catalogue's search index.
//!
//! Every product is indexed as one article of the same hybrid retrieval the knowledge base
//! uses (BM25 per language fused with the dense model), with a passage per language: its
//! name as the title, its description as the text. A search ranks products by their best
//! passage, so a product found in two languages counts once.
//!
//! The index is a Qdrant Edge shard of its own in `data_dir/catalogue`, synchronised from the
//! [`CatalogueSource`](crate::workflow::CatalogueSource) at start and, for a shop's own
//! catalogue, every few minutes. Results carry the product as the last synchronisation saw it;
//! an order is always priced from the source itself.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::knowledge::document::fingerprint;
use crate::knowledge::language::LanguageDetector;
use crate::knowledge::{
    Article, Chunk, Embedder, KnowledgeBase, KnowledgeError, KnowledgeSettings, SearchMode,
};
use crate::workflow::Product;

/// A product a search found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub product: Product,
    /// The fused rank score of its best passage (0..1; higher is better).
    pub score: f32,
    /// How likely the product is what the query names, 0..1 (meaning and words).
    pub confidence: f32,
    /// The language of the passage that matched.
    pub language: String,
}

/// What a synchronisation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub products: usize,
    /// Re-embedded because new or changed.
    pub indexed: usize,
    pub removed: usize,
    /// Left out of the index (logged).
    pub failed: usize,
}

pub struct ProductIndex {
    knowledge: KnowledgeBase,
    /// The products of the last synchronisation, by SKU.
    products: RwLock<HashMap<String, Product>>,
    /// Tells a query's language, with the catalogue's own names and descriptions as the
    /// deployment's text ("blue lamp" is English because the catalogue says "Blue table lamp";
    /// lingua alone leans to Spanish on two words). Retrained at each synchronisation.
    detector: RwLock<Arc<LanguageDetector>>,
}

const SOURCE_PREFIX: &str = "product/";

impl ProductIndex {
    /// The index in `data_dir/catalogue`.
    pub async fn open(
        data_dir: &Path,
        embedder: Arc<dyn Embedder>,
        settings: KnowledgeSettings,
    ) -> Result<ProductIndex, KnowledgeError> {
        let knowledge = KnowledgeBase::open_embedded_at(
            data_dir.join("catalogue"),
            embedder,
            Arc::new(LanguageDetector::default()),
            settings,
        )
        .await?;
        Ok(ProductIndex {
            knowledge,
            products: RwLock::new(HashMap::new()),
            detector: RwLock::new(Arc::new(LanguageDetector::default())),
        })
    }

    /// Make the index hold `products`: new and changed ones are embedded, those gone since the
    /// last synchronisation are removed. (Products gone while the process was down stay in the
    /// shard but are never returned: results are checked against this synchronisation.)
    pub async fn sync(&self, products: Vec<Product>) -> Result<SyncReport, KnowledgeError> {
        let mut report = SyncReport {
            products: products.len(),
            ..SyncReport::default()
        };
        for product in &products {
            // One product the index refuses is left out, not the whole catalogue.
            match self.knowledge.ingest_article(article(product), false).await {
                Ok(true) => report.indexed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(sku = %product.sku, %error, "a product could not be indexed");
                    report.failed += 1;
                }
            }
        }
        let current: BTreeSet<&str> = products.iter().map(|p| p.sku.as_str()).collect();
        let gone: Vec<String> = self
            .products
            .read()
            .expect("product snapshot lock")
            .keys()
            .filter(|sku| !current.contains(sku.as_str()))
            .cloned()
            .collect();
        for sku in gone {
            self.knowledge
                .remove_article(&format!("{SOURCE_PREFIX}{sku}"))
                .await?;
            report.removed += 1;
        }
        if report.indexed > 0 || report.removed > 0 {
            self.knowledge.optimize().await?;
        }
        let samples: Vec<(String, String)> = products
            .iter()
            .flat_map(|product| product.names.iter().chain(&product.descriptions))
            .map(|(language, text)| (language.clone(), text.clone()))
            .collect();
        *self.detector.write().expect("detector lock") =
            Arc::new(LanguageDetector::train(&samples));
        *self.products.write().expect("product snapshot lock") = products
            .into_iter()
            .map(|product| (product.sku.clone(), product))
            .collect();
        Ok(report)
    }

    /// Products on sale that best match `query`, best first. `language` is the customer's
    /// (`en`, `es`, `ca`); detected from the query when `None`.
    pub async fn search(
        &self,
        query: &str,
        language: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Found>, KnowledgeError> {
        if query.trim().is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let detected = match language {
            Some(_) => None,
            None => {
                let detector = self.detector.read().expect("detector lock").clone();
                detector.detect(query).map(|detection| detection.language)
            }
        };
        // Each product has a passage per language: enough candidates for `limit` products.
        let passages = self
            .knowledge
            .search(
                query,
                language.or(detected),
                SearchMode::Hybrid,
                limit * 3 + 3,
            )
            .await?;
        let products = self.products.read().expect("product snapshot lock");
        let mut found: Vec<Found> = Vec::new();
        for passage in passages {
            let Some(sku) = passage.source.strip_prefix(SOURCE_PREFIX) else {
                continue;
            };
            let Some(product) = products.get(sku).filter(|product| product.active) else {
                continue;
            };
            if found.iter().any(|seen| seen.product.sku == sku) {
                continue;
            }
            found.push(Found {
                product: product.clone(),
                score: passage.score,
                confidence: passage.confidence(),
                language: passage.language.clone(),
            });
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    /// Products of the last synchronisation.
    pub fn len(&self) -> usize {
        self.products.read().expect("product snapshot lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A product as an article: one passage per language.
fn article(product: &Product) -> Article {
    let source = format!("{SOURCE_PREFIX}{}", product.sku);
    let chunks: Vec<Chunk> = product
        .names
        .iter()
        .enumerate()
        .map(|(position, (language, name))| {
            let description = product
                .descriptions
                .get(language)
                .cloned()
                .unwrap_or_default();
            Chunk {
                source: source.clone(),
                title: name.clone(),
                section: String::new(),
                language: language.clone(),
                text: if description.is_empty() {
                    name.clone()
                } else {
                    description
                },
                position,
            }
        })
        .collect();
    let mut parts: Vec<&str> = vec![&product.sku];
    for chunk in &chunks {
        parts.extend([chunk.language.as_str(), &chunk.title, &chunk.text]);
    }
    Article {
        fingerprint: fingerprint(&parts),
        title: product.name("en").to_string(),
        language: "en".into(),
        source,
        chunks,
    }
}

/// Open and fill the catalogue's search index when there is something to search and a model
/// to search with: with `embedder` (the builtin assistant's, loaded once) or, for a catalogue
/// that is not empty, the configured model. `None`: no search (nothing to find, no model).
/// A shop's own catalogue (`catalogue_source = "http"`) is read again every
/// `refresh_minutes` by the returned task.
pub async fn start(
    settings: &crate::config::Settings,
    workflow: &Arc<crate::workflow::WorkflowService>,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<(
    Option<Arc<ProductIndex>>,
    Option<tokio::task::JoinHandle<()>>,
)> {
    use anyhow::Context;
    let products = match workflow.products().await {
        Ok(products) => products,
        Err(error) => {
            // A shop's catalogue may be down at our start: searched once it answers.
            tracing::warn!(%error, "the catalogue could not be read; product search starts empty");
            Vec::new()
        }
    };
    let refreshes = settings.workflow.catalogue_source == "http"
        && !settings.workflow.http_catalogue.products_url.is_empty();
    let embedder = match embedder {
        Some(embedder) => embedder,
        None if !products.is_empty() || refreshes => match settings.assistant.embedder().await {
            Ok(embedder) => embedder,
            Err(error) => {
                // Orders still work; only the search is missing.
                tracing::warn!(%error, "no embedding model: the catalogue is not searchable");
                return Ok((None, None));
            }
        },
        None => return Ok((None, None)),
    };
    let index = ProductIndex::open(&settings.data_dir, embedder, settings.knowledge.clone())
        .await
        .context("opening the catalogue's search index")?;
    let report = index
        .sync(products)
        .await
        .context("indexing the catalogue")?;
    tracing::info!(
        products = report.products,
        indexed = report.indexed,
        "catalogue indexed for search"
    );
    let index = Arc::new(index);
    let refresh = refreshes.then(|| {
        let minutes = settings.workflow.http_catalogue.refresh_minutes.max(1);
        let every = std::time::Duration::from_secs(minutes.saturating_mul(60));
        tokio::spawn(refresh(index.clone(), workflow.clone(), every))
    });
    Ok((Some(index), refresh))
}

async fn refresh(
    index: Arc<ProductIndex>,
    workflow: Arc<crate::workflow::WorkflowService>,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match workflow.products().await {
            Ok(products) => match index.sync(products).await {
                Ok(report) => tracing::debug!(?report, "catalogue search index refreshed"),
                Err(error) => tracing::warn!(%error, "refreshing the catalogue's search index"),
            },
            Err(error) => {
                tracing::warn!(%error, "the catalogue could not be read; search keeps the last copy")
            }
        }
    }
}
