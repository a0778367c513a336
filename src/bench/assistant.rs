//! `switchboard bench assistant`: the builtin assistant's answer latency and throughput.
//!
//! Builds the builtin assistant in a scratch data directory with the configured intents and
//! knowledge (`config/**/knowledge`), grows the knowledge base to `--chunks` passages with
//! generated shop articles, then answers a mix of questions and requests in the three
//! languages: first one at a time (latency), then from `--concurrency` conversations at once
//! (throughput). Last, the embedder alone on the same messages: its sentences/s bound the
//! answers/s. Each answer is NLU + retrieval + reply, as in a real turn (the router's
//! storage is not included: `bench router` measures that).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;

use crate::assistant::builtin::BuiltinAssistant;
use crate::assistant::{Assistant, Turn};
use crate::config::Settings;
use crate::knowledge::document::{Article, Chunk, fingerprint};
use crate::knowledge::embed::{Embedder, LocalEmbedder, MAX_BATCH};

#[derive(Debug, clap::Args)]
pub struct AssistantBench {
    /// Knowledge base size in chunks (the demo articles plus generated ones).
    #[arg(long, default_value_t = 10_000)]
    chunks: usize,
    /// Answers measured one at a time.
    #[arg(long, default_value_t = 300)]
    sequential: usize,
    /// Answers measured under concurrency.
    #[arg(long, default_value_t = 2000)]
    answers: usize,
    /// Conversations answered at once in the throughput phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const MESSAGES: [&str; 12] = [
    "how long does shipping to Girona take?",
    "quant triga l'enviament a Girona?",
    "¿cuánto tarda el envío a Sevilla?",
    "I want a refund",
    "vull un reemborsament",
    "what payment methods do you accept?",
    "¿puedo pagar con Bizum?",
    "com esborro el meu compte?",
    "where is my order 10423?",
    "hello",
    "can I return opened cosmetics?",
    "quiero cancelar el pedido 55512",
];

const TOPICS: [&str; 10] = [
    "lamp", "chair", "table", "rug", "mirror", "vase", "shelf", "cushion", "blanket", "clock",
];

/// A generated article about one product: care, warranty, assembly, materials, sizes.
fn product_article(index: usize, sections: usize) -> Article {
    let topic = TOPICS[index % TOPICS.len()];
    let model = format!("{}-{}", topic.to_uppercase(), 1000 + index);
    let title = format!("The {topic} {model}");
    let aspects = [
        (
            "Care",
            format!(
                "Clean the {topic} {model} with a dry cloth; avoid water on the finish and keep it away from direct sunlight for long periods."
            ),
        ),
        (
            "Warranty",
            format!(
                "The {topic} {model} has a warranty of {} years against manufacturing defects; keep the invoice as proof of purchase.",
                2 + index % 3
            ),
        ),
        (
            "Assembly",
            format!(
                "Assembling the {topic} {model} takes about {} minutes with the tools included in the box; the instructions are printed inside the lid.",
                10 + index % 50
            ),
        ),
        (
            "Materials",
            format!(
                "The {topic} {model} is made of {} and recycled steel, produced in a workshop near Girona.",
                ["oak", "beech", "ash", "walnut", "pine"][index % 5]
            ),
        ),
        (
            "Sizes",
            format!(
                "The {topic} {model} comes in {} sizes; the measurements of each are on the product page.",
                2 + index % 4
            ),
        ),
    ];
    let chunks: Vec<Chunk> = aspects
        .iter()
        .take(sections)
        .enumerate()
        .map(|(position, (section, text))| Chunk {
            source: format!("generated/{topic}-{index}.md"),
            title: title.clone(),
            section: section.to_string(),
            language: "en".into(),
            text: text.clone(),
            position,
        })
        .collect();
    Article {
        source: format!("generated/{topic}-{index}.md"),
        title,
        language: "en".into(),
        fingerprint: fingerprint(&[&format!("bench-{index}-{sections}")]),
        chunks,
    }
}

fn percentile(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn turn(conversation: usize, text: &str) -> Turn {
    Turn {
        conversation_id: format!("bench-{conversation}"),
        contact_id: format!("contact-{conversation}"),
        channel: "bench".into(),
        verified: false,
        text: text.into(),
        language: None,
        state: json!({}),
        shop: None,
        draft: None,
    }
}

pub async fn run(options: AssistantBench, mut settings: Settings) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!(
        "switchboard-bench-assistant-{}",
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&scratch)?;
    settings.data_dir = scratch.clone();
    settings.assistant.kind = "builtin".into();

    let model_dir = settings.assistant.model_dir.clone();
    let load_started = Instant::now();
    // The embedder as the assistant runs it (one inference thread per core), loaded here on
    // its own to time the load and, at the end, to measure the model alone.
    let embedder = tokio::task::spawn_blocking(move || LocalEmbedder::load(&model_dir)).await??;
    let model_load = load_started.elapsed();
    println!("model load: {:.0} ms", model_load.as_secs_f64() * 1000.0);

    let build_started = Instant::now();
    let assistant = Arc::new(
        BuiltinAssistant::build(&settings)
            .await
            .context("building the builtin assistant")?,
    );
    println!(
        "assistant ready (intents trained, demo knowledge ingested) in {:.1} s",
        build_started.elapsed().as_secs_f64()
    );
    let knowledge = assistant.knowledge().clone();
    let fill_started = Instant::now();
    // Generated articles of five chunks each, a few at a time so both embedding threads work.
    let existing = knowledge.len().await?;
    let wanted = options.chunks.saturating_sub(existing);
    let articles: Vec<Article> = (0..wanted.div_ceil(5))
        .map(|index| product_article(index, (wanted - index * 5).min(5)))
        .collect();
    let index = articles.len();
    let mut ingests = futures::stream::iter(
        articles
            .into_iter()
            .map(|article| knowledge.ingest_article(article, true)),
    )
    .buffer_unordered(8);
    while let Some(result) = ingests.next().await {
        result?;
    }
    drop(ingests);
    knowledge.optimize().await?;
    let chunks = knowledge.len().await?;
    println!(
        "knowledge base: {chunks} chunks (generated {index} articles in {:.1} s)",
        fill_started.elapsed().as_secs_f64()
    );

    // Warm-up: first calls touch cold pages and allocate.
    for (index, message) in MESSAGES.iter().enumerate() {
        assistant.respond(&turn(index, message)).await?;
    }

    let mut latencies = Vec::with_capacity(options.sequential);
    for index in 0..options.sequential {
        let started = Instant::now();
        assistant
            .respond(&turn(index, MESSAGES[index % MESSAGES.len()]))
            .await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let sequential_p50 = percentile(&latencies, 0.5);
    let sequential_p99 = percentile(&latencies, 0.99);
    println!(
        "one at a time: p50 {sequential_p50:.2} ms, p99 {sequential_p99:.2} ms over {} answers",
        latencies.len()
    );

    let started = Instant::now();
    let per_task = options.answers.div_ceil(options.concurrency.max(1));
    let mut tasks = Vec::new();
    for task in 0..options.concurrency.max(1) {
        let assistant = assistant.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for step in 0..per_task {
                let message = MESSAGES[(task * 7 + step) % MESSAGES.len()];
                let began = Instant::now();
                assistant
                    .respond(&turn(task * per_task + step, message))
                    .await?;
                latencies.push(began.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut loaded = Vec::new();
    for task in tasks {
        loaded.extend(task.await??);
    }
    let elapsed = started.elapsed();
    loaded.sort();
    let answers_per_second = loaded.len() as f64 / elapsed.as_secs_f64();
    let loaded_p50 = percentile(&loaded, 0.5);
    let loaded_p99 = percentile(&loaded, 0.99);
    println!(
        "{} conversations at once: {:.0} answers/s, p50 {loaded_p50:.2} ms, p99 {loaded_p99:.2} ms over {} answers",
        options.concurrency,
        answers_per_second,
        loaded.len()
    );
    drop(knowledge);
    drop(assistant);
    let _ = std::fs::remove_dir_all(&scratch);
    let ceiling = embedder_ceiling(&embedder, options.answers.max(MAX_BATCH)).await?;
    println!(
        "the embedder alone: {ceiling:.0} sentences/s (the same messages in batches of {MAX_BATCH}); answers/s are {:.1}% of it",
        100.0 * answers_per_second / ceiling
    );
    println!(
        "chunks={chunks} model_load_ms={:.0} p50_ms={sequential_p50:.2} p99_ms={sequential_p99:.2} answers_per_s={answers_per_second:.0} loaded_p99_ms={loaded_p99:.2} embedder_sentences_per_s={ceiling:.0} share_of_embedder={:.3}",
        model_load.as_secs_f64() * 1000.0,
        answers_per_second / ceiling
    );
    Ok(())
}

/// Sentences per second through the embedder alone: `sentences` of the bench's messages in
/// full batches, as many batches in flight as the embedder has threads and one more each, so
/// that no thread waits. Every answer embeds its message once, so this bounds answers/s.
async fn embedder_ceiling(embedder: &LocalEmbedder, sentences: usize) -> anyhow::Result<f64> {
    let batch = |first: usize| -> Vec<String> {
        (first..first + MAX_BATCH)
            .map(|index| MESSAGES[index % MESSAGES.len()].to_string())
            .collect()
    };
    // Warm-up, as for the answers.
    embedder.embed(batch(0)).await?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let batches = sentences.div_ceil(MAX_BATCH);
    let started = Instant::now();
    let mut runs =
        futures::stream::iter((0..batches).map(|index| embedder.embed(batch(index * MAX_BATCH))))
            .buffer_unordered(threads * 2);
    let mut embedded = 0;
    while let Some(vectors) = runs.next().await {
        embedded += vectors?.len();
    }
    Ok(embedded as f64 / started.elapsed().as_secs_f64())
}
