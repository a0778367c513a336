//! Intent classification: multinomial logistic regression, trained at start-up, with
//! out-of-scope detection.
//!
//! Features are a sentence embedding (meaning, strong in English) concatenated with hashed
//! character 2-5-grams and word 1-2-grams, TF-IDF weighted (surface form: carries Spanish and
//! Catalan, typos and inflections, where an English embedding model is weak). Training is
//! AdaGrad SGD on the softmax loss with L2, written here so that nothing but Rust runs.
//!
//! The regression's probabilities are blended with a k-nearest-neighbours vote over the training
//! examples (similarity: mostly the embedding, partly the n-grams), which recovers intents that
//! a linear boundary splits badly; how much the vote weighs (possibly nothing) is chosen on
//! the validation split.
//!
//! Out of scope: when the training data has examples labelled [`OUT_OF_SCOPE`] they form their
//! own class; in any case a threshold on the top probability rejects unsure predictions: the
//! highest that costs at most `max_in_scope_loss` of in-scope accuracy on the validation split.
//! Blend and threshold are tuned on a validation split of the training data (never on test
//! data), then the model is retrained on everything.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;

/// The label meaning "none of the intents".
pub const OUT_OF_SCOPE: &str = "oos";

#[derive(Debug, Clone)]
pub struct ClassifierParams {
    /// Hash buckets for n-gram features.
    pub buckets: usize,
    /// Scale of the (unit-length) embedding part relative to the (unit-length) n-gram part.
    pub embedding_weight: f32,
    pub ngram_weight: f32,
    pub epochs: usize,
    pub learning_rate: f32,
    pub l2: f32,
    /// Share of the training data held out to tune the out-of-scope threshold.
    pub validation_fraction: f64,
    /// The out-of-scope threshold may cost at most this much in-scope validation accuracy.
    pub max_in_scope_loss: f64,
    /// Neighbours in the k-nearest-neighbours vote.
    pub neighbours: usize,
    /// Weights of the vote tried on the validation split (the smallest of the best wins).
    pub knn_blends: Vec<f32>,
    pub seed: u64,
}

impl Default for ClassifierParams {
    fn default() -> Self {
        ClassifierParams {
            buckets: 1 << 17,
            embedding_weight: 3.0,
            ngram_weight: 1.0,
            epochs: 40,
            learning_rate: 0.03,
            l2: 1e-5,
            validation_fraction: 0.2,
            max_in_scope_loss: 0.02,
            neighbours: 10,
            knn_blends: vec![0.0, 0.3, 0.6],
            seed: 7,
        }
    }
}

impl ClassifierParams {
    /// The settings for an intents file as a deployment writes one (a few hundred examples):
    /// fewer buckets keep the model small and start-up fast, more epochs make up for the few
    /// examples. What the builtin assistant trains with, and `eval intents` on such a file.
    pub fn for_intents_file() -> ClassifierParams {
        ClassifierParams {
            buckets: 1 << 15,
            epochs: 60,
            ..ClassifierParams::default()
        }
    }
}

/// One labelled utterance with its embedding.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub label: String,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// `None`: out of scope.
    pub intent: Option<String>,
    /// The most likely in-scope intent, even when rejected.
    pub best: String,
    pub probability: f32,
}

type Sparse = Vec<(u32, f32)>;

/// Share of the neighbour similarity that comes from the embedding (the rest: n-grams).
const KNN_EMBEDDING_SHARE: f32 = 0.75;
/// Softness of the neighbour vote: weights are exp((similarity - best) / this).
const KNN_TEMPERATURE: f32 = 0.05;

/// A training example as the neighbour vote sees it: both parts unit length.
struct Neighbour {
    embedding: Vec<f32>,
    /// Sorted by bucket.
    ngrams: Sparse,
    class: usize,
}

fn sparse_dot(a: &Sparse, b: &Sparse) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

/// Accents off, lower case, letters and digits only: "Cancel·lar" and "cancelar" share n-grams.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.to_lowercase().chars() {
        let folded = match character {
            'à' | 'á' | 'â' | 'ä' => 'a',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            '·' => continue,
            other if other.is_alphanumeric() => other,
            _ => ' ',
        };
        out.push(folded);
    }
    out
}

fn hash(kind: &str, text: &str) -> u64 {
    crate::knowledge::document::stable_hash(&[kind, text])
}

/// Hashed n-gram counts of a text (before weighting).
fn ngram_counts(text: &str, buckets: usize) -> HashMap<u32, f32> {
    let folded = fold(text);
    let words: Vec<&str> = folded.split_whitespace().collect();
    let mut counts: HashMap<u32, f32> = HashMap::new();
    let mut add = |key: u64| {
        *counts.entry((key % buckets as u64) as u32).or_default() += 1.0;
    };
    for (index, word) in words.iter().enumerate() {
        add(hash("w", word));
        if let Some(next) = words.get(index + 1) {
            add(hash("b", &format!("{word} {next}")));
        }
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for size in 2..=5 {
            for window in padded.windows(size) {
                add(hash("c", &window.iter().collect::<String>()));
            }
        }
    }
    counts
}

pub struct IntentClassifier {
    params: ClassifierParams,
    labels: Vec<String>,
    /// Row per feature, one column per class.
    weights: Vec<f32>,
    bias: Vec<f32>,
    embedding_dimension: usize,
    idf: Vec<f32>,
    oos_class: Option<usize>,
    threshold: f32,
    /// The training examples, for the neighbour vote.
    memory: Vec<Neighbour>,
    /// Weight of the neighbour vote in the final probabilities.
    knn_weight: f32,
}

/// Figures from the validation split used for tuning.
#[derive(Debug, Clone, Default)]
pub struct TrainReport {
    pub threshold: f32,
    /// In-scope accuracy on the validation split without any rejection.
    pub validation_top_accuracy: f64,
    /// In-scope accuracy at the chosen threshold.
    pub validation_accuracy: f64,
    pub validation_oos_recall: Option<f64>,
    /// The chosen weight of the neighbour vote.
    pub knn_weight: f32,
    /// In-scope validation accuracy (without rejection) at each weight tried.
    pub blend_accuracies: Vec<(f32, f64)>,
}

/// In-scope accuracy and (with out-of-scope examples) out-of-scope recall of validation
/// outcomes `(truth is oos, top in-scope probability or -1 for the oos class, correct)` when
/// predictions below `threshold` are rejected.
fn validation_scores(outcomes: &[(bool, f32, bool)], threshold: f32) -> (f64, Option<f64>) {
    let (mut in_total, mut in_correct, mut oos_total, mut oos_caught) = (0, 0, 0, 0);
    for (truth_oos, probability, correct) in outcomes {
        let rejected = *probability < threshold;
        if *truth_oos {
            oos_total += 1;
            if rejected {
                oos_caught += 1;
            }
        } else {
            in_total += 1;
            if !rejected && *correct {
                in_correct += 1;
            }
        }
    }
    (
        in_correct as f64 / in_total.max(1) as f64,
        (oos_total > 0).then(|| oos_caught as f64 / oos_total as f64),
    )
}

impl IntentClassifier {
    /// Train on `examples` (labels may include [`OUT_OF_SCOPE`]), tuning the threshold on a
    /// held-out part first. Blocking and CPU-bound: call from `spawn_blocking`.
    pub fn train(
        examples: &[Example],
        params: ClassifierParams,
    ) -> Result<(IntentClassifier, TrainReport), String> {
        let labels: Vec<String> = {
            let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
            labels.sort();
            labels.dedup();
            labels
        };
        let in_scope = labels.iter().filter(|l| l.as_str() != OUT_OF_SCOPE).count();
        if in_scope < 2 {
            return Err(format!(
                "need examples of at least two intents, got {in_scope}"
            ));
        }
        let dimension = examples[0].embedding.len();
        if examples.iter().any(|e| e.embedding.len() != dimension) {
            return Err("examples have embeddings of different sizes".into());
        }
        // Stratified split: a share of every label goes to validation.
        let mut rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        let mut by_label: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, example) in examples.iter().enumerate() {
            by_label.entry(&example.label).or_default().push(index);
        }
        let mut fit = Vec::new();
        let mut validation = Vec::new();
        let mut label_names: Vec<&&str> = by_label.keys().collect();
        label_names.sort();
        let label_names: Vec<&str> = label_names.into_iter().copied().collect();
        for label in label_names {
            let mut indices = by_label[label].clone();
            indices.shuffle(&mut rng);
            let held = ((indices.len() as f64) * params.validation_fraction).round() as usize;
            let held = if indices.len() >= 3 { held.max(1) } else { 0 };
            validation.extend_from_slice(&indices[..held]);
            fit.extend_from_slice(&indices[held..]);
        }
        let mut report = TrainReport::default();
        let mut threshold = 0.0;
        let mut knn_weight = 0.0;
        if !validation.is_empty() {
            let subset: Vec<Example> = fit.iter().map(|&i| examples[i].clone()).collect();
            let mut probe = IntentClassifier::fit(&subset, &labels, dimension, &params, 0.0, 0.0);
            let outcomes_of = |probe: &IntentClassifier| -> Vec<(bool, f32, bool)> {
                validation
                    .iter()
                    .map(|&index| {
                        let example = &examples[index];
                        let (best, probability, is_oos_class) =
                            probe.raw_predict(&example.text, &example.embedding);
                        let truth_oos = example.label == OUT_OF_SCOPE;
                        let correct = !is_oos_class && best == example.label;
                        (
                            truth_oos,
                            if is_oos_class { -1.0 } else { probability },
                            correct,
                        )
                    })
                    .collect()
            };
            // The neighbour vote's weight: the best validation accuracy, the smallest on ties.
            let mut best_blend = (f64::NEG_INFINITY, 0.0f32, Vec::new());
            let mut blend_accuracies = Vec::new();
            let blends: &[f32] = if params.knn_blends.is_empty() {
                &[0.0]
            } else {
                &params.knn_blends
            };
            for &blend in blends {
                probe.knn_weight = blend;
                let outcomes = outcomes_of(&probe);
                let (accuracy, _) = validation_scores(&outcomes, f32::NEG_INFINITY);
                blend_accuracies.push((blend, accuracy));
                if accuracy > best_blend.0 + 1e-9 {
                    best_blend = (accuracy, blend, outcomes);
                }
            }
            let (_, chosen, outcomes) = best_blend;
            knn_weight = chosen;
            let evaluate = |t: f32| validation_scores(&outcomes, t);
            // The highest threshold that costs at most `max_in_scope_loss` of in-scope
            // accuracy. (Maximising accuracy plus out-of-scope recall overshoots: a validation
            // split holds few out-of-scope examples, and catching all of them is cheap there.)
            let (base_accuracy, _) = evaluate(0.0);
            for step in 0..100 {
                let t = step as f32 / 100.0;
                let (accuracy, _) = evaluate(t);
                if accuracy + params.max_in_scope_loss >= base_accuracy {
                    threshold = t;
                }
            }
            let (accuracy, recall) = evaluate(threshold);
            report = TrainReport {
                threshold,
                validation_top_accuracy: evaluate(f32::NEG_INFINITY).0,
                validation_accuracy: accuracy,
                validation_oos_recall: recall,
                knn_weight,
                blend_accuracies,
            };
        }
        let model =
            IntentClassifier::fit(examples, &labels, dimension, &params, threshold, knn_weight);
        Ok((model, report))
    }

    fn fit(
        examples: &[Example],
        labels: &[String],
        dimension: usize,
        params: &ClassifierParams,
        threshold: f32,
        knn_weight: f32,
    ) -> IntentClassifier {
        let classes = labels.len();
        let features = dimension + params.buckets;
        let counts: Vec<HashMap<u32, f32>> = examples
            .iter()
            .map(|example| ngram_counts(&example.text, params.buckets))
            .collect();
        let mut document_frequency = vec![0u32; params.buckets];
        for count in &counts {
            for bucket in count.keys() {
                document_frequency[*bucket as usize] += 1;
            }
        }
        let total = examples.len() as f32;
        let idf: Vec<f32> = document_frequency
            .iter()
            .map(|df| ((1.0 + total) / (1.0 + *df as f32)).ln() + 1.0)
            .collect();
        let label_index: HashMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(index, label)| (label.as_str(), index))
            .collect();
        let mut model = IntentClassifier {
            params: params.clone(),
            labels: labels.to_vec(),
            weights: vec![0.0; features * classes],
            bias: vec![0.0; classes],
            embedding_dimension: dimension,
            idf,
            oos_class: label_index.get(OUT_OF_SCOPE).copied(),
            threshold,
            memory: Vec::new(),
            knn_weight,
        };
        let data: Vec<(Sparse, usize)> = examples
            .iter()
            .zip(&counts)
            .map(|(example, count)| {
                (
                    model.vectorise(count, &example.embedding),
                    label_index[example.label.as_str()],
                )
            })
            .collect();
        model.memory = data
            .iter()
            .map(|(x, class)| {
                let (embedding, ngrams) = model.neighbour_parts(x);
                Neighbour {
                    embedding,
                    ngrams,
                    class: *class,
                }
            })
            .collect();
        let mut squared = vec![0.0f32; features * classes];
        let mut bias_squared = vec![0.0f32; classes];
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(params.seed ^ 0x5eed);
        let mut probabilities = vec![0.0f32; classes];
        for _ in 0..params.epochs {
            order.shuffle(&mut rng);
            for &index in &order {
                let (x, y) = &data[index];
                model.probabilities(x, &mut probabilities);
                for class in 0..classes {
                    let gradient = probabilities[class] - if class == *y { 1.0 } else { 0.0 };
                    if gradient.abs() < 1e-7 {
                        continue;
                    }
                    for (feature, value) in x {
                        let at = *feature as usize * classes + class;
                        let step = gradient * value + params.l2 * model.weights[at];
                        squared[at] += step * step;
                        model.weights[at] -=
                            params.learning_rate * step / (squared[at].sqrt() + 1e-8);
                    }
                    bias_squared[class] += gradient * gradient;
                    model.bias[class] -=
                        params.learning_rate * gradient / (bias_squared[class].sqrt() + 1e-8);
                }
            }
        }
        model
    }

    fn vectorise(&self, counts: &HashMap<u32, f32>, embedding: &[f32]) -> Sparse {
        let mut x: Sparse = Vec::with_capacity(embedding.len() + counts.len());
        for (index, value) in embedding.iter().enumerate() {
            x.push((index as u32, value * self.params.embedding_weight));
        }
        let mut ngrams: Vec<(u32, f32)> = counts
            .iter()
            .map(|(bucket, count)| (*bucket, (1.0 + count.ln()) * self.idf[*bucket as usize]))
            .collect();
        let norm = ngrams.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (bucket, value) in ngrams.iter_mut() {
                x.push((
                    self.embedding_dimension as u32 + *bucket,
                    *value / norm * self.params.ngram_weight,
                ));
            }
        }
        x
    }

    /// The unit-length embedding and n-gram parts of a feature vector.
    fn neighbour_parts(&self, x: &Sparse) -> (Vec<f32>, Sparse) {
        let dimension = self.embedding_dimension as u32;
        let mut embedding = vec![0.0f32; self.embedding_dimension];
        let mut ngrams: Sparse = Vec::new();
        for (feature, value) in x {
            if *feature < dimension {
                embedding[*feature as usize] = *value;
            } else {
                ngrams.push((*feature - dimension, *value));
            }
        }
        ngrams.sort_unstable_by_key(|(bucket, _)| *bucket);
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            embedding.iter_mut().for_each(|v| *v /= norm);
        }
        let norm = ngrams.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            ngrams.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        (embedding, ngrams)
    }

    /// Blend the neighbour vote into `out` (probabilities of the regression).
    fn blend_neighbours(&self, x: &Sparse, out: &mut [f32]) {
        if self.knn_weight <= 0.0 || self.memory.is_empty() {
            return;
        }
        let (embedding, ngrams) = self.neighbour_parts(x);
        let mut similar: Vec<(f32, usize)> = self
            .memory
            .iter()
            .map(|neighbour| {
                let dense: f32 = embedding
                    .iter()
                    .zip(&neighbour.embedding)
                    .map(|(a, b)| a * b)
                    .sum();
                let similarity = KNN_EMBEDDING_SHARE * dense
                    + (1.0 - KNN_EMBEDDING_SHARE) * sparse_dot(&ngrams, &neighbour.ngrams);
                (similarity, neighbour.class)
            })
            .collect();
        let k = self.params.neighbours.min(similar.len()).max(1);
        similar.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let nearest = &similar[..k];
        let top = nearest
            .iter()
            .map(|(similarity, _)| *similarity)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut votes = vec![0.0f32; out.len()];
        for (similarity, class) in nearest {
            votes[*class] += ((similarity - top) / KNN_TEMPERATURE).exp();
        }
        let total: f32 = votes.iter().sum();
        for (probability, vote) in out.iter_mut().zip(votes) {
            *probability = (1.0 - self.knn_weight) * *probability + self.knn_weight * vote / total;
        }
    }

    fn probabilities(&self, x: &Sparse, out: &mut [f32]) {
        let classes = self.labels.len();
        out.copy_from_slice(&self.bias);
        for (feature, value) in x {
            let row = &self.weights[*feature as usize * classes..(*feature as usize + 1) * classes];
            for (score, weight) in out.iter_mut().zip(row) {
                *score += weight * value;
            }
        }
        let max = out.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for score in out.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        for score in out.iter_mut() {
            *score /= sum;
        }
    }

    /// The top class (label, probability, whether it is the out-of-scope class).
    fn raw_predict(&self, text: &str, embedding: &[f32]) -> (String, f32, bool) {
        let x = self.vectorise(&ngram_counts(text, self.params.buckets), embedding);
        let mut probabilities = vec![0.0; self.labels.len()];
        self.probabilities(&x, &mut probabilities);
        self.blend_neighbours(&x, &mut probabilities);
        let (index, probability) = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(index, p)| (index, *p))
            .unwrap_or((0, 0.0));
        if Some(index) == self.oos_class {
            // Report the best in-scope intent too, for summaries.
            let best_in_scope = probabilities
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != self.oos_class)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, p)| (self.labels[i].clone(), *p))
                .unwrap_or_default();
            return (best_in_scope.0, best_in_scope.1, true);
        }
        (self.labels[index].clone(), probability, false)
    }

    pub fn predict(&self, text: &str, embedding: &[f32]) -> Prediction {
        let (best, probability, is_oos) = self.raw_predict(text, embedding);
        let rejected = is_oos || probability < self.threshold;
        Prediction {
            intent: (!rejected).then(|| best.clone()),
            best,
            probability,
        }
    }

    /// How likely `text` is intent `label` (0 for a label it does not know).
    pub fn probability_of(&self, text: &str, embedding: &[f32], label: &str) -> f32 {
        let Some(index) = self.labels.iter().position(|known| known == label) else {
            return 0.0;
        };
        let x = self.vectorise(&ngram_counts(text, self.params.buckets), embedding);
        let mut probabilities = vec![0.0; self.labels.len()];
        self.probabilities(&x, &mut probabilities);
        self.blend_neighbours(&x, &mut probabilities);
        probabilities[index]
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }
}

/// Accuracy, macro-F1 and out-of-scope figures of predictions against truth (`oos` = out of
/// scope; a prediction of `None` means out of scope).
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: Option<f64>,
    pub oos_recall: Option<f64>,
}

pub fn score(truth: &[String], predicted: &[Option<String>]) -> Scores {
    let as_label = |p: &Option<String>| p.clone().unwrap_or_else(|| OUT_OF_SCOPE.to_string());
    let mut correct = 0;
    let mut true_positive: HashMap<String, f64> = HashMap::new();
    let mut predicted_count: HashMap<String, f64> = HashMap::new();
    let mut truth_count: HashMap<String, f64> = HashMap::new();
    let (mut in_total, mut in_correct, mut oos_total, mut oos_caught) = (0, 0, 0, 0);
    for (truth, prediction) in truth.iter().zip(predicted) {
        let prediction = as_label(prediction);
        *truth_count.entry(truth.clone()).or_default() += 1.0;
        *predicted_count.entry(prediction.clone()).or_default() += 1.0;
        if *truth == prediction {
            correct += 1;
            *true_positive.entry(truth.clone()).or_default() += 1.0;
        }
        if truth == OUT_OF_SCOPE {
            oos_total += 1;
            if prediction == OUT_OF_SCOPE {
                oos_caught += 1;
            }
        } else {
            in_total += 1;
            if *truth == prediction {
                in_correct += 1;
            }
        }
    }
    let f1s: Vec<f64> = truth_count
        .keys()
        .map(|label| {
            let tp = true_positive.get(label).copied().unwrap_or(0.0);
            let precision = tp / predicted_count.get(label).copied().unwrap_or(0.0).max(1.0);
            let recall = tp / truth_count[label];
            if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            }
        })
        .collect();
    Scores {
        accuracy: correct as f64 / truth.len().max(1) as f64,
        macro_f1: f1s.iter().sum::<f64>() / f1s.len().max(1) as f64,
        in_scope_accuracy: (oos_total > 0).then(|| in_correct as f64 / in_total.max(1) as f64),
        oos_recall: (oos_total > 0).then(|| oos_caught as f64 / oos_total as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(text: &str, label: &str) -> Example {
        Example {
            text: text.into(),
            label: label.into(),
            // A flat embedding: the n-grams must do the work here.
            embedding: vec![0.0; 4],
        }
    }

    #[test]
    fn learns_from_ngrams_and_rejects_out_of_scope() {
        let mut examples = Vec::new();
        for text in [
            "where is my order",
            "track my parcel",
            "has my package shipped",
            "dónde está mi pedido",
            "on és la meva comanda",
            "seguir el meu paquet",
            "rastrear mi paquete",
            "track order",
        ] {
            examples.push(example(text, "track"));
        }
        for text in [
            "i want a refund",
            "give me my money back",
            "quiero un reembolso",
            "devolución del dinero",
            "vull un reemborsament",
            "torneu-me els diners",
            "refund please",
            "money back",
        ] {
            examples.push(example(text, "refund"));
        }
        for text in [
            "what is the weather",
            "tell me a joke",
            "who won the match",
            "play some music",
            "qué tiempo hace",
            "explica un acudit",
            "sing a song",
            "recipe for paella",
        ] {
            examples.push(example(text, OUT_OF_SCOPE));
        }
        let (model, _) = IntentClassifier::train(
            &examples,
            ClassifierParams {
                buckets: 1 << 12,
                ..ClassifierParams::default()
            },
        )
        .expect("trains");
        assert_eq!(
            model
                .predict("where is my parcel?", &[0.0; 4])
                .intent
                .as_deref(),
            Some("track")
        );
        assert_eq!(
            model
                .predict("quiero mi reembolso", &[0.0; 4])
                .intent
                .as_deref(),
            Some("refund")
        );
        assert_eq!(
            model.predict("tell me a funny joke", &[0.0; 4]).intent,
            None
        );
    }

    #[test]
    fn scores_count_oos_separately() {
        let truth: Vec<String> = ["a", "b", "oos", "oos"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let predicted = vec![Some("a".into()), Some("a".into()), None, Some("b".into())];
        let scores = score(&truth, &predicted);
        assert_eq!(scores.accuracy, 0.5);
        assert_eq!(scores.in_scope_accuracy, Some(0.5));
        assert_eq!(scores.oos_recall, Some(0.5));
    }

    #[test]
    fn refuses_a_single_intent() {
        let examples = vec![example("hello", "greet"), example("hi", "greet")];
        assert!(IntentClassifier::train(&examples, ClassifierParams::default()).is_err());
    }
}
