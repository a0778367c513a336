//! `switchboard eval intents` and `switchboard eval retrieval`: measure the classifier and the
//! knowledge base on labelled files, the user's or public benchmarks; `switchboard eval llm`
//! ([`llm`]): LLM mode on a set of conversations with the demo shop.
//!
//! Both print a human-readable report whose last line holds the headline figures as
//! space-separated `name=value` pairs; with `--report DIR` they also write what went wrong,
//! example by example ([`report`]).

pub mod llm;
pub mod report;
mod retrieval;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::AssistantError;
use super::classifier::{ClassifierParams, Example, IntentClassifier, OUT_OF_SCOPE, score};
use crate::config::Settings;
use crate::knowledge::Embedder;
use crate::knowledge::language::LanguageDetector;

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Train the intent classifier on one labelled file and test it on another.
    Intents(IntentsEval),
    /// Index a FAQ corpus and rank its labelled queries with lexical, dense and hybrid search.
    Retrieval(RetrievalEval),
    /// LLM mode on conversations with the demo shop, through the real web chat: containment,
    /// tool accuracy, citation rate and personal data leaked to the model server.
    Llm(llm::LlmEval),
}

#[derive(Debug, clap::Args)]
pub struct IntentsEval {
    /// CSV with `text` and `category|intent|label` columns (optional `language`), a JSON
    /// object of splits as `FILE#split1,split2` (CLINC150 layout; label `oos` = out of scope),
    /// or an intents file (`.toml`, as config/demo/intents.toml).
    #[arg(long)]
    train: String,
    /// Same layouts as --train. Without it, --holdout splits the training file.
    #[arg(long)]
    test: Option<String>,
    /// Hold out this share of --train (stratified, seeded) as the test set.
    #[arg(long)]
    holdout: Option<f64>,
    /// Seed of the holdout split and of training.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Training epochs. Unset, this and the two below are the classifier's settings for the
    /// data: for an intents file the assistant's own.
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rate (AdaGrad).
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Weight of the embedding features against the n-gram features.
    #[arg(long)]
    embedding_weight: Option<f32>,
    /// Keep embeddings in this file between runs (keyed by text), to try settings quickly.
    #[arg(long)]
    embedding_cache: Option<PathBuf>,
    /// Write the mistakes, per-intent precision/recall/F1 and a confusion matrix page here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RetrievalEval {
    /// `{"faqs": [{"id", "question", "answers": [...]}]}`.
    #[arg(long)]
    corpus: PathBuf,
    /// `{"queries": [{"query", "faq_id"}]}`.
    #[arg(long)]
    queries: PathBuf,
    /// Also write every query's lexical and dense candidates with their scores to this JSON
    /// file, to study the fusion.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Write every query's rank and the entry ranked first instead (`queries.csv`) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub async fn run(command: EvalCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        EvalCommand::Intents(options) => intents(options, settings).await,
        EvalCommand::Retrieval(options) => retrieval::run(options, settings).await,
        EvalCommand::Llm(options) => llm::run(options, settings).await,
    }
}

/// One labelled utterance read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub text: String,
    pub label: String,
    pub language: Option<String>,
}

fn data_error(spec: &str, message: impl std::fmt::Display) -> AssistantError {
    AssistantError::Config(format!("{spec}: {message}"))
}

/// Whether `spec` names an intents file (as config/demo/intents.toml), not a data set.
fn is_intents_file(spec: &str) -> bool {
    spec.ends_with(".toml") && !spec.contains('#')
}

/// The classifier settings `eval intents` trains on `spec` with: an intents file as the
/// assistant trains it, so that the figures are the assistant's; other data sets with the
/// general settings.
fn base_params(spec: &str) -> ClassifierParams {
    if is_intents_file(spec) {
        ClassifierParams::for_intents_file()
    } else {
        ClassifierParams::default()
    }
}

/// Read a CSV or a `FILE.json#split,split` spec.
pub fn read_labelled(spec: &str) -> Result<Vec<Labelled>, AssistantError> {
    let (path, splits) = match spec.split_once('#') {
        Some((path, splits)) => (path, Some(splits)),
        None => (spec, None),
    };
    if is_intents_file(spec) {
        // An intents file such as config/demo/intents.toml: its examples, with their language.
        let intents = super::intents::Intents::load(Path::new(path))?;
        return Ok(intents
            .examples()
            .into_iter()
            .map(|(language, text, label)| Labelled {
                text,
                label,
                language: Some(language),
            })
            .collect());
    }
    let text = std::fs::read_to_string(path).map_err(|error| data_error(path, error))?;
    let is_json = path.ends_with(".json") || splits.is_some();
    let rows = if is_json {
        let splits = splits.ok_or_else(|| {
            data_error(
                spec,
                "a JSON file needs its splits: FILE.json#train,oos_train",
            )
        })?;
        let object: HashMap<String, Vec<(String, String)>> =
            serde_json::from_str(&text).map_err(|error| {
                data_error(
                    path,
                    format!("expected an object of [text, label] lists: {error}"),
                )
            })?;
        let mut rows = Vec::new();
        for split in splits.split(',').map(str::trim) {
            let items = object.get(split).ok_or_else(|| {
                let mut names: Vec<&String> = object.keys().collect();
                names.sort();
                data_error(path, format!("no split {split:?} (splits: {names:?})"))
            })?;
            rows.extend(items.iter().map(|(text, label)| Labelled {
                text: text.clone(),
                label: label.clone(),
                language: None,
            }));
        }
        rows
    } else {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|error| data_error(path, error))?
            .clone();
        let column = |names: &[&str]| {
            headers
                .iter()
                .position(|header| names.contains(&header.trim().to_lowercase().as_str()))
        };
        let text_column = column(&["text"]).ok_or_else(|| data_error(path, "no `text` column"))?;
        let label_column = column(&["category", "intent", "label"])
            .ok_or_else(|| data_error(path, "no label column (`category`, `intent` or `label`)"))?;
        let language_column = column(&["language", "lang"]);
        let mut rows = Vec::new();
        for (line, record) in reader.records().enumerate() {
            let record =
                record.map_err(|error| data_error(path, format!("row {}: {error}", line + 2)))?;
            let field = |index: usize| record.get(index).unwrap_or_default().trim().to_string();
            rows.push(Labelled {
                text: field(text_column),
                label: field(label_column),
                language: language_column.map(field).filter(|value| !value.is_empty()),
            });
        }
        rows
    };
    if rows.is_empty() {
        return Err(data_error(spec, "no examples"));
    }
    if let Some(row) = rows
        .iter()
        .find(|row| row.text.is_empty() || row.label.is_empty())
    {
        return Err(data_error(
            spec,
            format!("an example has an empty text or label: {row:?}"),
        ));
    }
    Ok(rows)
}

/// Split `rows` into (train, test), `fraction` of every label to test.
pub fn holdout(rows: Vec<Labelled>, fraction: f64, seed: u64) -> (Vec<Labelled>, Vec<Labelled>) {
    let mut by_label: BTreeMap<String, Vec<Labelled>> = BTreeMap::new();
    for row in rows {
        by_label.entry(row.label.clone()).or_default().push(row);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (_, mut group) in by_label {
        group.shuffle(&mut rng);
        let held = ((group.len() as f64) * fraction).round() as usize;
        test.extend(group.drain(..held.min(group.len())));
        train.extend(group);
    }
    (train, test)
}

async fn embed_all(
    embedder: &dyn Embedder,
    rows: &[Labelled],
    cache: &mut HashMap<String, Vec<f32>>,
) -> Result<Vec<Vec<f32>>, AssistantError> {
    let missing: Vec<String> = rows
        .iter()
        .map(|row| row.text.clone())
        .filter(|text| !cache.contains_key(text))
        .collect::<HashSet<String>>()
        .into_iter()
        .collect();
    for batch in missing.chunks(256) {
        let vectors = embedder.embed(batch.to_vec()).await?;
        cache.extend(batch.iter().cloned().zip(vectors));
    }
    Ok(rows.iter().map(|row| cache[&row.text].clone()).collect())
}

async fn intents(options: IntentsEval, settings: Settings) -> anyhow::Result<()> {
    let train_rows = read_labelled(&options.train)?;
    let (train_rows, test_rows) = match (&options.test, options.holdout) {
        (Some(_), Some(_)) => anyhow::bail!("give --test or --holdout, not both"),
        (Some(test), None) => (train_rows, read_labelled(test)?),
        (None, Some(fraction)) if fraction > 0.0 && fraction < 1.0 => {
            holdout(train_rows, fraction, options.seed)
        }
        (None, Some(fraction)) => {
            anyhow::bail!("--holdout must be between 0 and 1, got {fraction}")
        }
        (None, None) => anyhow::bail!("give --test FILE (or --holdout FRACTION)"),
    };
    let started = Instant::now();
    let embedder = settings.assistant.embedder().await?;
    println!(
        "embedder {}; {} training and {} test examples",
        embedder.name(),
        train_rows.len(),
        test_rows.len()
    );
    let cache_key = embedder.name().to_string();
    let mut cache: HashMap<String, Vec<f32>> = options
        .embedding_cache
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<(String, HashMap<String, Vec<f32>>)>(&text).ok())
        .filter(|(name, _)| *name == cache_key)
        .map(|(_, cache)| cache)
        .unwrap_or_default();
    let train_vectors = embed_all(embedder.as_ref(), &train_rows, &mut cache).await?;
    let test_vectors = embed_all(embedder.as_ref(), &test_rows, &mut cache).await?;
    if let Some(path) = &options.embedding_cache {
        std::fs::write(path, serde_json::to_string(&(cache_key, &cache))?)?;
    }
    let embedded = started.elapsed();
    let examples: Vec<Example> = train_rows
        .iter()
        .zip(train_vectors)
        .map(|(row, embedding)| Example {
            text: row.text.clone(),
            label: row.label.clone(),
            embedding,
        })
        .collect();
    let base = base_params(&options.train);
    let params = ClassifierParams {
        epochs: options.epochs.unwrap_or(base.epochs),
        seed: options.seed,
        learning_rate: options.learning_rate.unwrap_or(base.learning_rate),
        embedding_weight: options.embedding_weight.unwrap_or(base.embedding_weight),
        ..base
    };
    let trained = Instant::now();
    let (model, report) =
        tokio::task::spawn_blocking(move || IntentClassifier::train(&examples, params))
            .await?
            .map_err(anyhow::Error::msg)?;
    let training = trained.elapsed();
    // Without out-of-scope examples on either side there is nothing to reject: the top intent
    // is the answer (the threshold would only turn right answers into "oos").
    let has_oos = train_rows
        .iter()
        .chain(&test_rows)
        .any(|row| row.label == OUT_OF_SCOPE);
    let mut rejected = 0;
    let mut confidences = Vec::with_capacity(test_rows.len());
    let predictions: Vec<Option<String>> = test_rows
        .iter()
        .zip(&test_vectors)
        .map(|(row, vector)| {
            let prediction = model.predict(&row.text, vector);
            confidences.push(prediction.probability);
            if prediction.intent.is_none() {
                rejected += 1;
            }
            if has_oos {
                prediction.intent
            } else {
                Some(prediction.best)
            }
        })
        .collect();
    if !has_oos {
        println!(
            "no out-of-scope examples: scoring the top intent ({rejected} of {} would fall below the threshold)",
            test_rows.len()
        );
    }
    let truth: Vec<String> = test_rows.iter().map(|row| row.label.clone()).collect();
    let scores = score(&truth, &predictions);
    println!(
        "embedding {:.1} s, training {:.1} s; neighbour vote weight {:.1}; out-of-scope threshold {:.2} (validation accuracy {:.4}, without rejection {:.4}{})",
        embedded.as_secs_f64(),
        training.as_secs_f64(),
        report.knn_weight,
        report.threshold,
        report.validation_accuracy,
        report.validation_top_accuracy,
        report
            .validation_oos_recall
            .map(|recall| format!(", oos recall {recall:.4}"))
            .unwrap_or_default()
    );
    let blends: Vec<String> = report
        .blend_accuracies
        .iter()
        .map(|(weight, accuracy)| format!("{weight:.1}: {accuracy:.4}"))
        .collect();
    println!(
        "validation accuracy by neighbour vote weight: {}",
        blends.join(", ")
    );
    println!("accuracy   {:.4}", scores.accuracy);
    println!("macro-F1   {:.4}", scores.macro_f1);
    let mut headline = format!(
        "accuracy={:.4} macro_f1={:.4}",
        scores.accuracy, scores.macro_f1
    );
    if let (Some(in_scope), Some(recall)) = (scores.in_scope_accuracy, scores.oos_recall) {
        println!("in-scope accuracy  {in_scope:.4}");
        println!("out-of-scope recall {recall:.4}");
        headline.push_str(&format!(
            " in_scope_accuracy={in_scope:.4} oos_recall={recall:.4}"
        ));
    }
    let mut by_language: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for ((row, predicted), truth) in test_rows.iter().zip(&predictions).zip(&truth) {
        if let Some(language) = &row.language {
            let entry = by_language.entry(language.clone()).or_default();
            entry.1 += 1;
            let predicted = predicted
                .clone()
                .unwrap_or_else(|| OUT_OF_SCOPE.to_string());
            if predicted == *truth {
                entry.0 += 1;
            }
        }
    }
    for (language, (correct, total)) in &by_language {
        let accuracy = *correct as f64 / (*total).max(1) as f64;
        println!("accuracy[{language}] {accuracy:.4} ({correct}/{total})");
        headline.push_str(&format!(" accuracy_{language}={accuracy:.4}"));
    }
    // The language of each test message, detected as the assistant does: lingua with the
    // training examples as the deployment's own text.
    let samples: Vec<(String, String)> = train_rows
        .iter()
        .filter_map(|row| Some((row.language.clone()?, row.text.clone())))
        .collect();
    let detector = LanguageDetector::train(&samples);
    let mut detected: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut language_misses = Vec::new();
    for row in &test_rows {
        let Some(language) = row.language.as_deref() else {
            continue;
        };
        let detection = detector.detect(&row.text);
        let entry = detected.entry(language).or_default();
        entry.1 += 1;
        match detection {
            Some(detection) if detection.language == language => entry.0 += 1,
            _ => language_misses.push(report::LanguageMiss {
                text: row.text.clone(),
                language: language.to_string(),
                detected: detection
                    .as_ref()
                    .map(|detection| detection.language.to_string())
                    .unwrap_or_default(),
                confidence: detection.map_or(0.0, |detection| detection.confidence),
            }),
        }
    }
    if !detected.is_empty() {
        let (correct, total) = detected.values().fold((0, 0), |sum, (correct, total)| {
            (sum.0 + correct, sum.1 + total)
        });
        let accuracy = correct as f64 / total.max(1) as f64;
        let per_language: Vec<String> = detected
            .iter()
            .map(|(language, (correct, total))| format!("{language} {correct}/{total}"))
            .collect();
        println!(
            "language detection {accuracy:.4} ({correct}/{total}; {})",
            per_language.join(", ")
        );
        headline.push_str(&format!(" language_accuracy={accuracy:.4}"));
    }
    if let Some(dir) = &options.report {
        if !detected.is_empty() {
            let path = report::write_languages(dir, &language_misses)?;
            println!("wrote {}", path.display());
        }
        let outcomes: Vec<report::IntentOutcome> = test_rows
            .iter()
            .zip(&predictions)
            .zip(&confidences)
            .map(|((row, predicted), confidence)| report::IntentOutcome {
                text: row.text.clone(),
                language: row.language.clone(),
                expected: row.label.clone(),
                predicted: predicted
                    .clone()
                    .unwrap_or_else(|| OUT_OF_SCOPE.to_string()),
                confidence: *confidence,
            })
            .collect();
        for file in report::write_intents(dir, &outcomes)? {
            println!("wrote {}", file.display());
        }
    }
    println!("{headline}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intents_file_is_trained_as_the_assistant_trains_it() {
        let assistant = ClassifierParams::for_intents_file();
        let general = ClassifierParams::default();
        assert_ne!(
            (assistant.buckets, assistant.epochs),
            (general.buckets, general.epochs)
        );
        for spec in ["config/demo/intents.toml", "intents.toml"] {
            let params = base_params(spec);
            assert_eq!(
                (params.buckets, params.epochs),
                (assistant.buckets, assistant.epochs)
            );
        }
        for spec in [
            "train.csv",
            "clinc150/train_val.json#train,val",
            "data.toml#train",
        ] {
            let params = base_params(spec);
            assert_eq!(
                (params.buckets, params.epochs),
                (general.buckets, general.epochs)
            );
        }
    }

    #[test]
    fn holdout_is_stratified_and_deterministic() {
        let rows: Vec<Labelled> = (0..20)
            .map(|index| Labelled {
                text: format!("t{index}"),
                label: if index % 2 == 0 {
                    "a".into()
                } else {
                    "b".into()
                },
                language: None,
            })
            .collect();
        let (train, test) = holdout(rows.clone(), 0.2, 1);
        assert_eq!((train.len(), test.len()), (16, 4));
        assert_eq!(test.iter().filter(|row| row.label == "a").count(), 2);
        assert_eq!(holdout(rows, 0.2, 1).1, test);
    }
}
