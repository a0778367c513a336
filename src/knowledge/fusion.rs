//! Hybrid fusion: lexical and dense rankings combined, each weighted by how sure it is.
//!
//! Reciprocal rank fusion treats both sides as equally reliable on every query, so a side that
//! has no idea (BM25 on a paraphrase that shares no words, MiniLM on Catalan) drags a good
//! ranking down. Here each side's scores become a probability distribution over its
//! candidates (a softmax; BM25 scores relative to the query's best, since their scale depends
//! on the query), and each side's weight is its own confidence: the probability it puts on its
//! best candidate. A peaked side dominates; a flat side barely moves the result.

use std::collections::HashMap;
use std::hash::Hash;

/// Temperatures of the two softmaxes.
#[derive(Debug, Clone, Copy)]
pub struct FusionParams {
    /// Cosine similarity units: 0.05 makes a 0.1 lead worth a factor e^2.
    pub dense_temperature: f32,
    /// Fraction of the best BM25 score: 0.3 makes a 30% lead worth a factor e. BM25 leads are
    /// weaker evidence than cosine leads (one rare shared word can make them).
    pub lexical_temperature: f32,
}

impl Default for FusionParams {
    fn default() -> Self {
        FusionParams {
            dense_temperature: 0.05,
            lexical_temperature: 0.3,
        }
    }
}

/// Probabilities over candidates, and the probability of the best one.
fn distribution<K: Clone + Eq + Hash>(
    scored: &[(K, f32)],
    temperature: f32,
) -> (HashMap<K, f32>, f32) {
    let mut out = HashMap::new();
    let Some(best) = scored.iter().map(|(_, score)| *score).reduce(f32::max) else {
        return (out, 0.0);
    };
    let temperature = temperature.max(1e-6);
    let mut sum = 0.0;
    for (key, score) in scored {
        let weight = ((score - best) / temperature).exp();
        sum += weight;
        out.insert(key.clone(), weight);
    }
    let mut peak: f32 = 0.0;
    for value in out.values_mut() {
        *value /= sum;
        peak = peak.max(*value);
    }
    (out, peak)
}

/// The fused ranking, best first, with scores in 0..1.
pub fn fuse<K: Clone + Eq + Hash>(
    dense: &[(K, f32)],
    lexical: &[(K, f32)],
    params: FusionParams,
) -> Vec<(K, f32)> {
    let (dense_probability, dense_confidence) = distribution(dense, params.dense_temperature);
    let lexical_best = lexical
        .iter()
        .map(|(_, score)| *score)
        .fold(0.0f32, f32::max);
    let (lexical_probability, lexical_confidence) =
        distribution(lexical, params.lexical_temperature * lexical_best.max(1e-6));
    let total = dense_confidence + lexical_confidence;
    if total <= 0.0 {
        return Vec::new();
    }
    let mut fused: HashMap<K, f32> = HashMap::new();
    for (key, probability) in dense_probability {
        *fused.entry(key).or_default() += dense_confidence * probability / total;
    }
    for (key, probability) in lexical_probability {
        *fused.entry(key).or_default() += lexical_confidence * probability / total;
    }
    let mut ranked: Vec<(K, f32)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confident_side_wins_and_agreement_adds_up() {
        // Dense is sure of "a"; lexical is flat between "b" and "c".
        let dense = vec![("a", 0.80), ("b", 0.55), ("c", 0.50)];
        let lexical = vec![("b", 10.0), ("c", 9.8), ("a", 9.5)];
        let ranked = fuse(&dense, &lexical, FusionParams::default());
        assert_eq!(ranked[0].0, "a");
        // Both sides agree on "b": it beats everything.
        let dense = vec![("a", 0.70), ("b", 0.69)];
        let lexical = vec![("b", 10.0), ("a", 2.0)];
        let ranked = fuse(&dense, &lexical, FusionParams::default());
        assert_eq!(ranked[0].0, "b");
        assert!(fuse::<&str>(&[], &[], FusionParams::default()).is_empty());
    }
}
