//! Where chunks live and how they are found: the [`KnowledgeIndex`] trait and its embedded
//! implementation on a Qdrant Edge shard.
//!
//! The shard holds, per chunk, two dense vectors, one of its indexed text (`dense`) and one of
//! its heading alone (`heading`: the article's title and the section's), and one BM25 sparse
//! vector in the chunk's language (`bm25_en`, `bm25_es`, `bm25_ca`, each with IDF applied by
//! the engine and that language's stop words and stemmer), plus the chunk as payload. A Qdrant
//! server (scale-out) takes the same collection layout and the same queries, so it can
//! implement this trait through qdrant-client without changing the knowledge base above it.
//!
//! Calls are blocking (disk and CPU); the knowledge base runs them on `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::ordered_float::NotNan;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams,
    EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, JsonPath, Match, Modifier,
    NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, PointStructPersisted, QueryEnum, QueryRequest, ScoredPoint,
    ScoringQuery, ScrollRequest, UpdateOperation, Vector, VectorInternal, WithPayloadInterface,
    WithVector,
};
use serde_json::json;

use super::KnowledgeError;
use super::document::{Chunk, stable_hash};
use super::language::LANGUAGES;

/// A chunk found by a search, with the engine's score for it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub chunk: Chunk,
    pub score: f32,
}

/// The dense vectors of one chunk: of its indexed text, and of its heading alone.
#[derive(Debug, Clone)]
pub struct ChunkVectors {
    pub text: Vec<f32>,
    pub heading: Vec<f32>,
}

pub trait KnowledgeIndex: Send + Sync {
    /// Replace every chunk of `source` with `chunks` (whose vectors are `vectors`).
    fn replace_article(
        &self,
        source: &str,
        fingerprint: &str,
        chunks: &[Chunk],
        vectors: &[ChunkVectors],
    ) -> Result<(), KnowledgeError>;
    /// Remove an article; how many chunks went.
    fn remove_article(&self, source: &str) -> Result<usize, KnowledgeError>;
    /// The fingerprint stored with an article, if it is indexed.
    fn fingerprint(&self, source: &str) -> Result<Option<String>, KnowledgeError>;
    /// Nearest chunks by cosine similarity, optionally in one language only. A chunk's
    /// similarity is the better of its text's and its heading's, so that an article is found by
    /// its title as well as by its passages (a question worded like an FAQ's question finds it
    /// however long its answer); chunks equal on that are ordered by their text's.
    fn dense(
        &self,
        vector: &[f32],
        language: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Hit>, KnowledgeError>;
    /// Best chunks by BM25 in `language` (its analyser on both sides).
    fn lexical(&self, text: &str, language: &str, limit: usize)
    -> Result<Vec<Hit>, KnowledgeError>;
    /// Share of the query's analysed terms (stop words removed, stemmed) found in `passage`.
    fn term_coverage(&self, query: &str, language: &str, passage: &str) -> f32;
    /// Chunks indexed.
    fn len(&self) -> Result<usize, KnowledgeError>;
    /// Build search structures after a bulk change (indexes, merged segments).
    fn optimize(&self) -> Result<(), KnowledgeError> {
        Ok(())
    }
    fn is_empty(&self) -> Result<bool, KnowledgeError> {
        Ok(self.len()? == 0)
    }
}

fn index_error(error: impl std::fmt::Display) -> KnowledgeError {
    KnowledgeError::Index(error.to_string())
}

/// One BM25 analyser per language.
pub struct Analysers {
    by_language: HashMap<&'static str, EdgeBm25>,
}

impl Analysers {
    /// `average_length`: expected chunk length in tokens (BM25's length normalisation).
    pub fn new(average_length: f64) -> Result<Analysers, KnowledgeError> {
        let mut by_language = HashMap::new();
        for language in LANGUAGES {
            let config = EdgeBm25Config {
                language: Some(language.to_string()),
                avg_len: NotNan::new(average_length.max(1.0)).map_err(index_error)?,
                ..EdgeBm25Config::default()
            };
            by_language.insert(language, EdgeBm25::new(config).map_err(index_error)?);
        }
        Ok(Analysers { by_language })
    }

    /// Elisions and contractions split into words ("l'enviament" -> "l enviament"), so that a
    /// Catalan noun matches with or without its article.
    fn prepare(text: &str) -> String {
        text.replace(['\'', '\u{2019}'], " ")
    }

    pub fn embed_query(&self, language: &str, text: &str) -> qdrant_edge::SparseVector {
        self.get(language).embed_query(&Analysers::prepare(text))
    }

    pub fn embed_document(&self, language: &str, text: &str) -> qdrant_edge::SparseVector {
        self.get(language).embed_document(&Analysers::prepare(text))
    }

    fn get(&self, language: &str) -> &EdgeBm25 {
        self.by_language
            .get(language)
            .or_else(|| self.by_language.get("en"))
            .expect("english analyser exists")
    }
}

/// Payload `key` equals `value`.
fn field_filter(key: &str, value: &str) -> Filter {
    let path: JsonPath = key.parse().expect("payload keys here are plain names");
    Filter::new_must(Condition::Field(FieldCondition::new_match(
        path,
        Match::from(value.to_string()),
    )))
}

/// One hit per chunk from the searches of both dense vectors: the better score, ties broken
/// by the text's score (unknown, so last, for a chunk only its heading found).
fn best_of_text_and_heading(by_text: Vec<Hit>, by_heading: Vec<Hit>, limit: usize) -> Vec<Hit> {
    let mut merged: HashMap<(String, usize), (Hit, f32)> = HashMap::new();
    for hit in by_text {
        let text_score = hit.score;
        merged.insert(
            (hit.chunk.source.clone(), hit.chunk.position),
            (hit, text_score),
        );
    }
    for hit in by_heading {
        match merged.entry((hit.chunk.source.clone(), hit.chunk.position)) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let (best, _) = entry.get_mut();
                best.score = best.score.max(hit.score);
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert((hit, f32::NEG_INFINITY));
            }
        }
    }
    let mut hits: Vec<(Hit, f32)> = merged.into_values().collect();
    hits.sort_by(|a, b| b.0.score.total_cmp(&a.0.score).then(b.1.total_cmp(&a.1)));
    hits.into_iter().take(limit).map(|(hit, _)| hit).collect()
}

fn sparse_name(language: &str) -> String {
    format!("bm25_{language}")
}

/// The embedded index: one Qdrant Edge shard in a directory.
pub struct EdgeIndex {
    shard: EdgeShard,
    analysers: Analysers,
    path: PathBuf,
}

/// Written beside the shard: vectors from another model (or size), or another layout of the
/// shard, mean a rebuild.
const MODEL_MARKER: &str = "embedder.txt";

/// The shard's layout, in the marker: a shard of an earlier layout is rebuilt.
const LAYOUT: &str = "text+heading";

/// The named dense vectors of a chunk.
const TEXT_VECTOR: &str = "dense";
const HEADING_VECTOR: &str = "heading";

impl EdgeIndex {
    /// Open (or create) the shard in `dir` for vectors of `dimension` from `embedder_name`.
    /// A shard built with another embedder (or layout) is emptied: its vectors would be
    /// meaningless.
    pub fn open(
        dir: &Path,
        dimension: usize,
        embedder_name: &str,
        average_length: f64,
    ) -> Result<EdgeIndex, KnowledgeError> {
        let marker = format!("{embedder_name} {dimension} {LAYOUT}");
        let marker_path = dir.join(MODEL_MARKER);
        let existing = std::fs::read_to_string(&marker_path).ok();
        if dir.exists() && existing.as_deref().map(str::trim) != Some(marker.as_str()) {
            tracing::info!(dir = %dir.display(), embedder = %marker, "knowledge index built with another embedder or layout: rebuilding");
            std::fs::remove_dir_all(dir).map_err(|error| KnowledgeError::Io {
                path: dir.to_path_buf(),
                message: error.to_string(),
            })?;
        }
        std::fs::create_dir_all(dir).map_err(|error| KnowledgeError::Io {
            path: dir.to_path_buf(),
            message: error.to_string(),
        })?;
        let sparse_vectors = LANGUAGES
            .iter()
            .map(|language| {
                (
                    sparse_name(language),
                    EdgeSparseVectorParams {
                        full_scan_threshold: None,
                        on_disk: None,
                        modifier: Some(Modifier::Idf),
                        datatype: None,
                    },
                )
            })
            .collect();
        let dense = EdgeVectorParams {
            size: dimension,
            distance: Distance::Cosine,
            quantization_config: None,
            multivector_config: None,
            datatype: None,
            on_disk: None,
            hnsw_config: None,
        };
        let config = EdgeConfig {
            on_disk_payload: false,
            vectors: HashMap::from([
                (TEXT_VECTOR.to_string(), dense.clone()),
                (HEADING_VECTOR.to_string(), dense),
            ]),
            sparse_vectors,
            hnsw_config: Default::default(),
            quantization_config: None,
            optimizers: Default::default(),
            wal_options: Default::default(),
        };
        let shard = EdgeShard::load(dir, Some(config)).map_err(index_error)?;
        // Keyword indexes: re-ingest filters by source, search by language.
        for field in ["source", "language"] {
            let field_name: JsonPath = field.parse().expect("plain payload key");
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name,
                        field_schema: Some(PayloadFieldSchema::FieldType(
                            PayloadSchemaType::Keyword,
                        )),
                    }),
                ))
                .map_err(index_error)?;
        }
        std::fs::write(&marker_path, &marker).map_err(|error| KnowledgeError::Io {
            path: marker_path.clone(),
            message: error.to_string(),
        })?;
        Ok(EdgeIndex {
            shard,
            analysers: Analysers::new(average_length)?,
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn source_filter(source: &str) -> Filter {
        field_filter("source", source)
    }

    fn hits(points: Vec<ScoredPoint>) -> Vec<Hit> {
        points
            .into_iter()
            .filter_map(|point| {
                let payload = point.payload?;
                let chunk: Chunk = serde_json::from_value(serde_json::Value::Object(
                    payload.0.into_iter().collect(),
                ))
                .ok()?;
                Some(Hit {
                    chunk,
                    score: point.score,
                })
            })
            .collect()
    }

    fn search(
        &self,
        query: VectorInternal,
        using: String,
        filter: Option<Filter>,
        limit: usize,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let request = QueryRequest {
            prefetches: vec![],
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query,
                using: Some(using),
            }))),
            filter,
            score_threshold: None,
            limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        let points = self.shard.query(request).map_err(index_error)?;
        Ok(EdgeIndex::hits(points))
    }
}

impl KnowledgeIndex for EdgeIndex {
    fn replace_article(
        &self,
        source: &str,
        fingerprint: &str,
        chunks: &[Chunk],
        vectors: &[ChunkVectors],
    ) -> Result<(), KnowledgeError> {
        if chunks.len() != vectors.len() {
            return Err(KnowledgeError::Index(format!(
                "{} vectors for {} chunks",
                vectors.len(),
                chunks.len()
            )));
        }
        self.remove_article(source)?;
        let points: Vec<PointStructPersisted> = chunks
            .iter()
            .zip(vectors)
            .map(|(chunk, vector)| {
                let sparse = self
                    .analysers
                    .embed_document(&chunk.language, &chunk.indexed_text());
                let named: HashMap<String, Vector> = HashMap::from([
                    (TEXT_VECTOR.to_string(), Vector::from(vector.text.clone())),
                    (
                        HEADING_VECTOR.to_string(),
                        Vector::from(vector.heading.clone()),
                    ),
                    (sparse_name(&chunk.language), Vector::from(sparse)),
                ]);
                let mut payload = serde_json::to_value(chunk).unwrap_or_else(|_| json!({}));
                payload["fingerprint"] = json!(fingerprint);
                let id = stable_hash(&[source, &chunk.position.to_string()]);
                PointStruct::new(PointId::NumId(id), named, payload).into()
            })
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .map_err(index_error)
    }

    fn remove_article(&self, source: &str) -> Result<usize, KnowledgeError> {
        let before = self
            .shard
            .count(CountRequest {
                filter: Some(EdgeIndex::source_filter(source)),
                exact: true,
            })
            .map_err(index_error)?;
        if before == 0 {
            return Ok(0);
        }
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(EdgeIndex::source_filter(source)),
            ))
            .map_err(index_error)?;
        Ok(before)
    }

    fn fingerprint(&self, source: &str) -> Result<Option<String>, KnowledgeError> {
        let (records, _) = self
            .shard
            .scroll(ScrollRequest {
                offset: None,
                limit: Some(1),
                filter: Some(EdgeIndex::source_filter(source)),
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(index_error)?;
        Ok(records.into_iter().next().and_then(|record| {
            record
                .payload?
                .0
                .get("fingerprint")
                .and_then(|value| value.as_str().map(str::to_string))
        }))
    }

    fn dense(
        &self,
        vector: &[f32],
        language: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let filter = language.map(|language| field_filter("language", language));
        let by_text = self.search(
            VectorInternal::from(vector.to_vec()),
            TEXT_VECTOR.into(),
            filter.clone(),
            limit,
        )?;
        let by_heading = self.search(
            VectorInternal::from(vector.to_vec()),
            HEADING_VECTOR.into(),
            filter,
            limit,
        )?;
        Ok(best_of_text_and_heading(by_text, by_heading, limit))
    }

    fn lexical(
        &self,
        text: &str,
        language: &str,
        limit: usize,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let query = self.analysers.embed_query(language, text);
        if query.indices.is_empty() {
            return Ok(Vec::new());
        }
        self.search(
            VectorInternal::from(query),
            sparse_name(language),
            None,
            limit,
        )
    }

    fn term_coverage(&self, query: &str, language: &str, passage: &str) -> f32 {
        let query = self.analysers.embed_query(language, query);
        if query.indices.is_empty() {
            return 0.0;
        }
        let passage = self.analysers.embed_document(language, passage);
        let found = query
            .indices
            .iter()
            .filter(|index| passage.indices.contains(index))
            .count();
        found as f32 / query.indices.len() as f32
    }

    fn optimize(&self) -> Result<(), KnowledgeError> {
        self.shard.optimize().map_err(index_error)?;
        Ok(())
    }

    fn len(&self) -> Result<usize, KnowledgeError> {
        self.shard
            .count(CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(index_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(source: &str, position: usize, score: f32) -> Hit {
        Hit {
            chunk: Chunk {
                source: source.into(),
                title: source.into(),
                section: String::new(),
                language: "en".into(),
                text: String::new(),
                position,
            },
            score,
        }
    }

    #[test]
    fn a_chunk_scores_the_better_of_its_text_and_heading_and_its_text_breaks_ties() {
        let by_text = vec![hit("a", 0, 0.5), hit("a", 1, 0.6), hit("b", 0, 0.7)];
        // Both chunks of "a" share its heading, which is closer than anything's text; a chunk
        // of "c" only its heading found.
        let by_heading = vec![hit("a", 0, 0.9), hit("a", 1, 0.9), hit("c", 0, 0.9)];
        let merged = best_of_text_and_heading(by_text, by_heading, 3);
        let order: Vec<(&str, usize, f32)> = merged
            .iter()
            .map(|hit| (hit.chunk.source.as_str(), hit.chunk.position, hit.score))
            .collect();
        assert_eq!(order, vec![("a", 1, 0.9), ("a", 0, 0.9), ("c", 0, 0.9)]);
    }
}
