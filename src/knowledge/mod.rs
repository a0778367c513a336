//! The knowledge base: articles in, cited passages out.
//!
//! - [`document`] reads Markdown, HTML and plain text and cuts articles into chunks along their
//!   headings (title, source and language kept).
//! - [`embed`] turns text into vectors (local MiniLM or an OpenAI-compatible endpoint).
//! - [`index`] stores chunks with a dense and a per-language BM25 vector ([`KnowledgeIndex`],
//!   Qdrant Edge on disk under `data_dir` by default).
//! - [`fusion`] merges the lexical and the dense ranking by each side's confidence.
//! - [`language`] tells English, Spanish and Catalan apart.
//!
//! [`KnowledgeBase`] ties them together for the assistant and the `kb` and `eval` commands.

pub mod document;
pub mod embed;
pub mod fusion;
pub mod index;
pub mod language;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use document::{Article, Chunk};
pub use embed::{EmbedError, Embedder};
pub use index::{ChunkVectors, EdgeIndex, Hit, KnowledgeIndex};
use language::LanguageDetector;

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("knowledge index: {0}")]
    Index(String),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// `[knowledge]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeSettings {
    /// Folders searched at start for directories named `knowledge`, whose files are ingested.
    pub ingest_dirs: Vec<PathBuf>,
    /// Longest chunk in characters.
    pub chunk_chars: usize,
    /// Passages returned per search.
    pub top_k: usize,
    /// Candidates each side (lexical, dense) hands to fusion.
    pub candidates: usize,
    /// BM25 length normalisation: the typical chunk length in tokens.
    pub bm25_average_length: f64,
    /// Fusion softmax temperatures (see `knowledge::fusion`).
    pub dense_temperature: f32,
    pub lexical_temperature: f32,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        KnowledgeSettings {
            ingest_dirs: vec![PathBuf::from("config")],
            chunk_chars: document::DEFAULT_CHUNK_CHARS,
            top_k: 3,
            candidates: 20,
            bm25_average_length: 60.0,
            dense_temperature: 0.05,
            lexical_temperature: 0.3,
        }
    }
}

/// Which ranking to use: the eval command compares all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    Lexical,
    Dense,
    Hybrid,
}

/// A passage found for a query, with what a citation needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Passage {
    pub source: String,
    pub title: String,
    pub section: String,
    pub language: String,
    pub text: String,
    /// Fused score (0..1 for hybrid; the engine's score otherwise).
    pub score: f32,
    /// Cosine similarity of the query and the passage.
    pub similarity: f32,
    /// Share of the query's content words (analysed) that the passage contains.
    pub coverage: f32,
}

impl Passage {
    /// How likely the passage answers the query, 0..1: meaning and words both count, and the
    /// better of the two decides (MiniLM is weak in Catalan, words are weak on paraphrases).
    pub fn confidence(&self) -> f32 {
        (0.5 * self.similarity + 0.5 * self.coverage)
            .max(self.coverage * 0.9)
            .clamp(0.0, 1.0)
    }
}

/// What an ingest did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub articles: usize,
    pub chunks: usize,
    /// Unchanged since the last ingest: not re-embedded.
    pub unchanged: usize,
}

pub struct KnowledgeBase {
    index: Arc<dyn KnowledgeIndex>,
    embedder: Arc<dyn Embedder>,
    detector: Arc<LanguageDetector>,
    settings: KnowledgeSettings,
}

impl KnowledgeBase {
    pub fn new(
        index: Arc<dyn KnowledgeIndex>,
        embedder: Arc<dyn Embedder>,
        detector: Arc<LanguageDetector>,
        settings: KnowledgeSettings,
    ) -> KnowledgeBase {
        KnowledgeBase {
            index,
            embedder,
            detector,
            settings,
        }
    }

    /// The embedded default: a Qdrant Edge shard in `data_dir/knowledge`.
    pub async fn open_embedded(
        data_dir: &Path,
        embedder: Arc<dyn Embedder>,
        detector: Arc<LanguageDetector>,
        settings: KnowledgeSettings,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        KnowledgeBase::open_embedded_at(data_dir.join("knowledge"), embedder, detector, settings)
            .await
    }

    /// A Qdrant Edge shard in `dir` (the catalogue's search index has one of its own).
    pub async fn open_embedded_at(
        dir: PathBuf,
        embedder: Arc<dyn Embedder>,
        detector: Arc<LanguageDetector>,
        settings: KnowledgeSettings,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        let dimension = embedder.dimension();
        let name = embedder.name().to_string();
        let average = settings.bm25_average_length;
        let index =
            tokio::task::spawn_blocking(move || EdgeIndex::open(&dir, dimension, &name, average))
                .await
                .map_err(|error| KnowledgeError::Index(error.to_string()))??;
        Ok(KnowledgeBase::new(
            Arc::new(index),
            embedder,
            detector,
            settings,
        ))
    }

    pub fn settings(&self) -> &KnowledgeSettings {
        &self.settings
    }

    pub fn detector(&self) -> &LanguageDetector {
        &self.detector
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    pub async fn len(&self) -> Result<usize, KnowledgeError> {
        let index = self.index.clone();
        blocking(move || index.len()).await
    }

    /// Build the index's search structures after a bulk ingest.
    pub async fn optimize(&self) -> Result<(), KnowledgeError> {
        let index = self.index.clone();
        blocking(move || index.optimize()).await
    }

    pub async fn is_empty(&self) -> Result<bool, KnowledgeError> {
        Ok(self.len().await? == 0)
    }

    /// Index one parsed article, replacing what its source had; unchanged articles are skipped
    /// unless `force`.
    pub async fn ingest_article(
        &self,
        article: Article,
        force: bool,
    ) -> Result<bool, KnowledgeError> {
        let index = self.index.clone();
        let source = article.source.clone();
        if !force {
            let stored = blocking(move || index.fingerprint(&source)).await?;
            if stored.as_deref() == Some(article.fingerprint.as_str()) {
                return Ok(false);
            }
        }
        let texts = article.chunks.iter().map(Chunk::indexed_text).collect();
        let text_vectors = self.embedder.embed(texts).await?;
        // Each distinct heading once (an article's sections share its title), in a request of
        // its own: a batch is padded to its longest text, and headings are short.
        let mut headings: Vec<String> = Vec::new();
        let mut heading_at: HashMap<String, usize> = HashMap::new();
        let heading_of: Vec<usize> = article
            .chunks
            .iter()
            .map(|chunk| {
                let heading = chunk.heading();
                *heading_at.entry(heading.clone()).or_insert_with(|| {
                    headings.push(heading);
                    headings.len() - 1
                })
            })
            .collect();
        let heading_vectors = self.embedder.embed(headings).await?;
        let vectors: Vec<ChunkVectors> = text_vectors
            .into_iter()
            .zip(heading_of)
            .map(|(text, heading)| ChunkVectors {
                text,
                heading: heading_vectors[heading].clone(),
            })
            .collect();
        let index = self.index.clone();
        blocking(move || {
            index.replace_article(
                &article.source,
                &article.fingerprint,
                &article.chunks,
                &vectors,
            )
        })
        .await?;
        Ok(true)
    }

    /// Remove an article from the index; how many chunks went.
    pub async fn remove_article(&self, source: &str) -> Result<usize, KnowledgeError> {
        let index = self.index.clone();
        let source = source.to_string();
        blocking(move || index.remove_article(&source)).await
    }

    /// Ingest a file, or every supported file under a directory.
    pub async fn ingest_path(&self, path: &Path) -> Result<IngestReport, KnowledgeError> {
        let files = knowledge_files(path)?;
        if files.is_empty() {
            return Err(KnowledgeError::Invalid {
                source_name: path.display().to_string(),
                message: "no .md, .markdown, .html, .htm or .txt files found".into(),
            });
        }
        let mut report = IngestReport::default();
        for file in files {
            // `./kb/a.md` and `kb/a.md` are one article.
            let source: PathBuf = file
                .components()
                .filter(|part| !matches!(part, std::path::Component::CurDir))
                .collect();
            let source = source.display().to_string();
            let article =
                document::read_file(&file, &source, &self.detector, self.settings.chunk_chars)?;
            let chunks = article.chunks.len();
            if self.ingest_article(article, false).await? {
                report.articles += 1;
                report.chunks += chunks;
            } else {
                report.unchanged += 1;
            }
        }
        if report.articles > 0 {
            self.optimize().await?;
        }
        Ok(report)
    }

    /// Ingest every `knowledge` directory under the configured folders.
    pub async fn ingest_configured(&self) -> Result<IngestReport, KnowledgeError> {
        let mut total = IngestReport::default();
        for root in &self.settings.ingest_dirs {
            for dir in knowledge_dirs(root) {
                let report = self.ingest_path(&dir).await?;
                tracing::info!(dir = %dir.display(), articles = report.articles, chunks = report.chunks, unchanged = report.unchanged, "knowledge ingested");
                total.articles += report.articles;
                total.chunks += report.chunks;
                total.unchanged += report.unchanged;
            }
        }
        Ok(total)
    }

    /// Best passages for `query` in `language` (detected when `None`).
    pub async fn search(
        &self,
        query: &str,
        language: Option<&str>,
        mode: SearchMode,
        limit: usize,
    ) -> Result<Vec<Passage>, KnowledgeError> {
        let language = language
            .and_then(language::normalise)
            .or_else(|| {
                self.detector
                    .detect(query)
                    .map(|detection| detection.language)
            })
            .unwrap_or("en");
        let vector = if mode == SearchMode::Lexical {
            None
        } else {
            Some(self.embedder.embed_one(query).await?)
        };
        self.run_search(query, language, vector, mode, limit).await
    }

    /// As [`KnowledgeBase::search`], with the query's embedding already computed (the
    /// assistant embeds a message once for the classifier and the search).
    pub async fn search_with_vector(
        &self,
        query: &str,
        language: &str,
        vector: Vec<f32>,
        mode: SearchMode,
        limit: usize,
    ) -> Result<Vec<Passage>, KnowledgeError> {
        let language = language::normalise(language).unwrap_or("en");
        self.run_search(query, language, Some(vector), mode, limit)
            .await
    }

    async fn run_search(
        &self,
        query: &str,
        language: &'static str,
        vector: Option<Vec<f32>>,
        mode: SearchMode,
        limit: usize,
    ) -> Result<Vec<Passage>, KnowledgeError> {
        let index = self.index.clone();
        let settings = self.settings.clone();
        let query = query.to_string();
        blocking(move || {
            search_blocking(
                index.as_ref(),
                &settings,
                &query,
                language,
                vector.as_deref(),
                mode,
                limit,
            )
        })
        .await
    }
}

fn chunk_key(chunk: &Chunk) -> (String, usize) {
    (chunk.source.clone(), chunk.position)
}

fn search_blocking(
    index: &dyn KnowledgeIndex,
    settings: &KnowledgeSettings,
    query: &str,
    language: &str,
    vector: Option<&[f32]>,
    mode: SearchMode,
    limit: usize,
) -> Result<Vec<Passage>, KnowledgeError> {
    let candidates = settings.candidates.max(limit);
    let dense = match vector {
        Some(vector) => {
            // Passages in the customer's language first; any language if there are none.
            let mut hits = index.dense(vector, Some(language), candidates)?;
            if hits.is_empty() {
                hits = index.dense(vector, None, candidates)?;
            }
            hits
        }
        None => Vec::new(),
    };
    let lexical = if mode == SearchMode::Dense {
        Vec::new()
    } else {
        index.lexical(query, language, candidates)?
    };
    let mut chunks: HashMap<(String, usize), (Chunk, f32)> = Default::default();
    for hit in &dense {
        chunks.insert(chunk_key(&hit.chunk), (hit.chunk.clone(), hit.score));
    }
    for hit in &lexical {
        chunks
            .entry(chunk_key(&hit.chunk))
            .or_insert_with(|| (hit.chunk.clone(), f32::NAN));
    }
    let ranked: Vec<((String, usize), f32)> = match mode {
        SearchMode::Dense => dense
            .iter()
            .map(|hit| (chunk_key(&hit.chunk), hit.score))
            .collect(),
        SearchMode::Lexical => lexical
            .iter()
            .map(|hit| (chunk_key(&hit.chunk), hit.score))
            .collect(),
        SearchMode::Hybrid => fusion::fuse(
            &dense
                .iter()
                .map(|hit| (chunk_key(&hit.chunk), hit.score))
                .collect::<Vec<_>>(),
            &lexical
                .iter()
                .map(|hit| (chunk_key(&hit.chunk), hit.score))
                .collect::<Vec<_>>(),
            fusion::FusionParams {
                dense_temperature: settings.dense_temperature,
                lexical_temperature: settings.lexical_temperature,
            },
        ),
    };
    let lowest_dense = dense
        .iter()
        .map(|hit| hit.score)
        .reduce(f32::min)
        .unwrap_or(0.0);
    let mut passages = Vec::new();
    for (key, score) in ranked.into_iter().take(limit) {
        let Some((chunk, similarity)) = chunks.get(&key) else {
            continue;
        };
        // A passage only the lexical side found is less similar than every dense candidate:
        // the lowest candidate's similarity bounds it from above.
        let similarity = if similarity.is_nan() {
            lowest_dense
        } else {
            *similarity
        };
        let coverage = index.term_coverage(query, language, &chunk.indexed_text());
        passages.push(Passage {
            source: chunk.source.clone(),
            title: chunk.title.clone(),
            section: chunk.section.clone(),
            language: chunk.language.clone(),
            text: chunk.text.clone(),
            score,
            similarity,
            coverage,
        });
    }
    Ok(passages)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KnowledgeError> + Send + 'static,
) -> Result<T, KnowledgeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| KnowledgeError::Index(format!("index task failed: {error}")))?
}

/// Supported files at `path` (itself, or under it), sorted for a stable order.
pub fn knowledge_files(path: &Path) -> Result<Vec<PathBuf>, KnowledgeError> {
    let io = |error: std::io::Error| KnowledgeError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry_path = entry.map_err(io)?.path();
            if entry_path.is_dir() {
                pending.push(entry_path);
            } else if document::Format::from_path(&entry_path).is_some() {
                files.push(entry_path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Directories named `knowledge` under `root` (not descending into them).
pub fn knowledge_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|name| name == "knowledge") {
                found.push(path);
            } else {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;

    /// Counts a few words: texts about the same words point the same way.
    struct WordCounts;

    const WORDS: [&str; 5] = ["delete", "account", "email", "invoice", "refund"];

    #[async_trait]
    impl Embedder for WordCounts {
        fn dimension(&self) -> usize {
            WORDS.len() + 1
        }

        fn name(&self) -> &str {
            "word-counts"
        }

        async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts
                .iter()
                .map(|text| {
                    let lower = text.to_lowercase();
                    let mut vector: Vec<f32> = WORDS
                        .iter()
                        .map(|word| lower.matches(word).count() as f32)
                        .collect();
                    vector.push(0.01);
                    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
                    vector.iter().map(|v| v / norm).collect()
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn an_article_is_found_by_its_title_when_its_text_is_about_other_things() {
        let dir = tempfile::tempdir().unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(WordCounts);
        let index = EdgeIndex::open(dir.path(), embedder.dimension(), embedder.name(), 60.0)
            .expect("index opens");
        let detector = Arc::new(LanguageDetector::default());
        let knowledge = KnowledgeBase::new(
            Arc::new(index),
            embedder,
            detector.clone(),
            KnowledgeSettings::default(),
        );
        // Its text is about invoices and refunds; the other article's text is closer to the
        // question than this one's, its title is not.
        let articles = [
            (
                "delete.md",
                "# Delete account\n\nInvoices are kept, and an invoice is never changed. A refund \
                 still open is paid first; a refund takes ten days. Invoice copies go by post.\n",
            ),
            (
                "email.md",
                "# Your email address\n\nThe account page changes the account's email.\n",
            ),
        ];
        for (source, markdown) in articles {
            let article = document::parse(
                source,
                markdown,
                document::Format::Markdown,
                Some("en"),
                &detector,
                document::DEFAULT_CHUNK_CHARS,
            )
            .unwrap();
            knowledge.ingest_article(article, true).await.unwrap();
        }
        let passages = knowledge
            .search("delete account", Some("en"), SearchMode::Dense, 2)
            .await
            .unwrap();
        assert_eq!(passages[0].source, "delete.md", "{passages:?}");
        assert!(passages[0].similarity > 0.99, "{passages:?}");
    }
}
