//! `switchboard eval retrieval`: a FAQ corpus indexed as the knowledge base indexes articles,
//! its queries searched in each mode, and the ranks scored (MRR@10, recall@1 and @5).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::{RetrievalEval, report};
use crate::config::Settings;
use crate::knowledge::document::{self, Article, Chunk};
use crate::knowledge::language::LanguageDetector;
use crate::knowledge::{EdgeIndex, KnowledgeBase, SearchMode};

#[derive(Deserialize)]
struct FaqCorpus {
    faqs: Vec<Faq>,
}

#[derive(Deserialize)]
struct Faq {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<String>,
}

#[derive(Deserialize)]
struct FaqQueries {
    queries: Vec<FaqQuery>,
}

#[derive(Deserialize)]
struct FaqQuery {
    query: String,
    faq_id: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, shape: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{}: expected {shape}: {error}", path.display()))
}

/// A FAQ as an article: the question is its title, the answers its text.
fn faq_article(faq: &Faq, detector: &LanguageDetector, max_chars: usize) -> Article {
    let body = faq.answers.join("\n\n");
    let language = detector
        .detect(&format!("{}\n{body}", faq.question))
        .map(|detection| detection.language)
        .unwrap_or("en")
        .to_string();
    let paragraphs: Vec<String> = if body.trim().is_empty() {
        vec![faq.question.clone()]
    } else {
        faq.answers.clone()
    };
    let markdown = format!("# {}\n\n{}", faq.question, paragraphs.join("\n\n"));
    match document::parse(
        &faq.id,
        &markdown,
        document::Format::Markdown,
        Some(&language),
        detector,
        max_chars,
    ) {
        Ok(article) => article,
        Err(_) => Article {
            source: faq.id.clone(),
            title: faq.question.clone(),
            language: language.clone(),
            chunks: vec![Chunk {
                source: faq.id.clone(),
                title: faq.question.clone(),
                section: String::new(),
                language,
                text: faq.question.clone(),
                position: 0,
            }],
            fingerprint: faq.id.clone(),
        },
    }
}

/// Reciprocal rank of the first relevant result within the top 10, and hits at 1 and 5.
#[derive(Debug, Default, Clone, Copy)]
pub struct RankScores {
    pub mrr10: f64,
    pub recall1: f64,
    pub recall5: f64,
}

pub fn rank_scores(ranked: &[Vec<String>], relevant: &[String]) -> RankScores {
    let mut scores = RankScores::default();
    for (ranking, wanted) in ranked.iter().zip(relevant) {
        if let Some(position) = ranking.iter().take(10).position(|id| id == wanted) {
            scores.mrr10 += 1.0 / (position + 1) as f64;
            if position < 1 {
                scores.recall1 += 1.0;
            }
            if position < 5 {
                scores.recall5 += 1.0;
            }
        }
    }
    let count = ranked.len().max(1) as f64;
    scores.mrr10 /= count;
    scores.recall1 /= count;
    scores.recall5 /= count;
    scores
}

pub(super) async fn run(options: RetrievalEval, settings: Settings) -> anyhow::Result<()> {
    let corpus: FaqCorpus = read_json(
        &options.corpus,
        "{\"faqs\": [{\"id\", \"question\", \"answers\"}]}",
    )?;
    let queries: FaqQueries =
        read_json(&options.queries, "{\"queries\": [{\"query\", \"faq_id\"}]}")?;
    let ids: HashSet<&str> = corpus.faqs.iter().map(|faq| faq.id.as_str()).collect();
    if let Some(query) = queries
        .queries
        .iter()
        .find(|query| !ids.contains(query.faq_id.as_str()))
    {
        anyhow::bail!(
            "query {:?} names faq {:?}, which is not in the corpus",
            query.query,
            query.faq_id
        );
    }
    let embedder = settings.assistant.embedder().await?;
    let detector = Arc::new(LanguageDetector::default());
    let scratch = std::env::temp_dir().join(format!("switchboard-eval-{}", uuid::Uuid::new_v4()));
    let knowledge_settings = settings.knowledge.clone();
    let index = {
        let scratch = scratch.clone();
        let dimension = embedder.dimension();
        let name = embedder.name().to_string();
        let average = knowledge_settings.bm25_average_length;
        tokio::task::spawn_blocking(move || EdgeIndex::open(&scratch, dimension, &name, average))
            .await??
    };
    let knowledge = KnowledgeBase::new(
        Arc::new(index),
        embedder.clone(),
        detector.clone(),
        knowledge_settings.clone(),
    );
    let started = Instant::now();
    let mut languages = HashSet::new();
    for faq in &corpus.faqs {
        let article = faq_article(faq, &detector, knowledge_settings.chunk_chars);
        languages.insert(article.language.clone());
        knowledge.ingest_article(article, true).await?;
    }
    let chunks = knowledge.len().await?;
    println!(
        "indexed {} faqs as {chunks} chunks in {:.1} s with {} (languages: {languages:?})",
        corpus.faqs.len(),
        started.elapsed().as_secs_f64(),
        embedder.name()
    );
    let single_language = (languages.len() == 1)
        .then(|| languages.iter().next().cloned())
        .flatten();
    // Each query's text, and the FAQ entry it should find.
    let (texts, relevant): (Vec<String>, Vec<String>) = queries
        .queries
        .iter()
        .map(|query| (query.query.clone(), query.faq_id.clone()))
        .unzip();
    let mut vectors = Vec::new();
    for batch in texts.chunks(256) {
        vectors.extend(embedder.embed(batch.to_vec()).await?);
    }
    let mut headline = Vec::new();
    println!(
        "{:<8} {:>7} {:>9} {:>9}",
        "method", "MRR@10", "Recall@1", "Recall@5"
    );
    // The benchmark ranks FAQ entries, and an entry may be several passages: each side scores an
    // entry by its best passage, and hybrid fuses those entry scores with the knowledge base's
    // fusion (the same confidence weighting the assistant uses on passages).
    let fusion_params = crate::knowledge::fusion::FusionParams {
        dense_temperature: knowledge_settings.dense_temperature,
        lexical_temperature: knowledge_settings.lexical_temperature,
    };
    let mut per_side: HashMap<&str, Vec<Vec<(String, f32)>>> = HashMap::new();
    for (name, mode) in [
        ("lexical", SearchMode::Lexical),
        ("dense", SearchMode::Dense),
    ] {
        let mut side = Vec::with_capacity(texts.len());
        for (text, vector) in texts.iter().zip(&vectors) {
            let language = single_language
                .clone()
                .or_else(|| {
                    detector
                        .detect(text)
                        .map(|detection| detection.language.to_string())
                })
                .unwrap_or_else(|| "en".into());
            let passages = knowledge
                .search_with_vector(
                    text,
                    &language,
                    vector.clone(),
                    mode,
                    knowledge_settings.candidates.max(40),
                )
                .await?;
            let mut best: Vec<(String, f32)> = Vec::new();
            for passage in passages {
                if !best.iter().any(|(source, _)| *source == passage.source) {
                    best.push((passage.source, passage.score));
                }
            }
            side.push(best);
        }
        per_side.insert(name, side);
    }
    let mut hybrid_rankings = Vec::new();
    for name in ["lexical", "dense", "hybrid"] {
        let rankings: Vec<Vec<String>> = if name == "hybrid" {
            per_side["dense"]
                .iter()
                .zip(&per_side["lexical"])
                .map(|(dense, lexical)| {
                    crate::knowledge::fusion::fuse(dense, lexical, fusion_params)
                        .into_iter()
                        .map(|(source, _)| source)
                        .collect()
                })
                .collect()
        } else {
            per_side[name]
                .iter()
                .map(|side| side.iter().map(|(source, _)| source.clone()).collect())
                .collect()
        };
        let scores = rank_scores(&rankings, &relevant);
        println!(
            "{name:<8} {:>7.4} {:>9.4} {:>9.4}",
            scores.mrr10, scores.recall1, scores.recall5
        );
        headline.push(format!(
            "{name}_mrr10={:.4} {name}_recall1={:.4} {name}_recall5={:.4}",
            scores.mrr10, scores.recall1, scores.recall5
        ));
        if name == "hybrid" {
            hybrid_rankings = rankings;
        }
    }
    if let Some(dir) = &options.report {
        let questions: HashMap<&str, &str> = corpus
            .faqs
            .iter()
            .map(|faq| (faq.id.as_str(), faq.question.as_str()))
            .collect();
        let outcomes: Vec<report::QueryOutcome> = texts
            .iter()
            .zip(&relevant)
            .zip(&hybrid_rankings)
            .map(|((query, wanted), ranking)| report::QueryOutcome {
                query: query.clone(),
                expected: wanted.clone(),
                rank: ranking
                    .iter()
                    .take(10)
                    .position(|source| source == wanted)
                    .map(|index| index + 1),
                top: ranking.first().map(|source| {
                    let question = questions.get(source.as_str()).copied().unwrap_or_default();
                    (source.clone(), question.to_string())
                }),
            })
            .collect();
        for file in report::write_retrieval(dir, &outcomes)? {
            println!("wrote {}", file.display());
        }
    }
    if let Some(dump) = &options.dump {
        let mut rows = Vec::new();
        for ((text, vector), wanted) in texts.iter().zip(&vectors).zip(&relevant) {
            let language = single_language.clone().unwrap_or_else(|| "en".into());
            let mut sides = serde_json::Map::new();
            for (name, mode) in [
                ("lexical", SearchMode::Lexical),
                ("dense", SearchMode::Dense),
            ] {
                let passages = knowledge
                    .search_with_vector(
                        text,
                        &language,
                        vector.clone(),
                        mode,
                        knowledge_settings.candidates,
                    )
                    .await?;
                let scored: Vec<serde_json::Value> = passages
                    .iter()
                    .map(|passage| serde_json::json!([passage.source, passage.score]))
                    .collect();
                sides.insert(name.into(), serde_json::Value::Array(scored));
            }
            rows.push(serde_json::json!({"query": text, "relevant": wanted, "candidates": sides}));
        }
        std::fs::write(dump, serde_json::to_string(&rows)?)?;
    }
    drop(knowledge);
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}", headline.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_scores_count_positions() {
        let ranked = vec![
            vec!["a".to_string(), "b".into()],
            vec!["x".into(), "y".into(), "c".into()],
            vec!["z".into()],
        ];
        let relevant = vec!["a".to_string(), "c".into(), "q".into()];
        let scores = rank_scores(&ranked, &relevant);
        assert!((scores.mrr10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-9);
        assert!((scores.recall1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((scores.recall5 - 2.0 / 3.0).abs() < 1e-9);
    }
}
