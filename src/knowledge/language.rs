//! Language identification for English, Spanish and Catalan.
//!
//! A naive Bayes model over character 1- to 4-grams and whole words, trained from example text
//! written for this project (`language/*.txt`) plus whatever the deployment adds (intent
//! examples, knowledge articles). Short chat messages are the hard case ("hola" is Spanish and
//! Catalan alike), so [`Detection::confidence`] says how sure the model is and callers keep the
//! conversation's language when it is low.

use std::collections::HashMap;

/// The languages the assistant speaks, in a stable order.
pub const LANGUAGES: [&str; 3] = ["en", "es", "ca"];

const BUILTIN_TEXT: [(&str, &str); 3] = [
    ("en", include_str!("language/en.txt")),
    ("es", include_str!("language/es.txt")),
    ("ca", include_str!("language/ca.txt")),
];

/// Whole words weigh more than single n-grams: they are the strongest cue in short messages.
const WORD_WEIGHT: f64 = 3.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub language: &'static str,
    /// Posterior probability of `language` given the text, 0..1 (1/3 means no idea).
    pub confidence: f64,
}

#[derive(Default, Clone)]
struct Profile {
    counts: HashMap<String, f64>,
    total: f64,
}

impl Profile {
    fn add(&mut self, feature: String, weight: f64) {
        *self.counts.entry(feature).or_default() += weight;
        self.total += weight;
    }
}

/// A trained detector; cheap to query, built once at start.
#[derive(Clone)]
pub struct LanguageDetector {
    profiles: Vec<Profile>,
    vocabulary: f64,
}

/// Lower case, letters (with accents) and apostrophes kept, everything else a word break.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|character: char| {
            !(character.is_alphabetic() || character == '\'' || character == '·')
        })
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

fn features(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for word in words(text) {
        out.push((format!("w:{word}"), WORD_WEIGHT));
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for size in 1..=4 {
            for window in padded.windows(size) {
                out.push((window.iter().collect(), 1.0));
            }
        }
    }
    out
}

impl Default for LanguageDetector {
    fn default() -> Self {
        LanguageDetector::train(&[])
    }
}

impl LanguageDetector {
    /// Train on the built-in text plus `extra` `(language, text)` samples; samples in other
    /// languages are ignored.
    pub fn train(extra: &[(String, String)]) -> LanguageDetector {
        let mut profiles = vec![Profile::default(); LANGUAGES.len()];
        let mut add = |language: &str, text: &str| {
            if let Some(index) = LANGUAGES.iter().position(|known| *known == language) {
                for (feature, weight) in features(text) {
                    profiles[index].add(feature, weight);
                }
            }
        };
        for (language, text) in BUILTIN_TEXT {
            add(language, text);
        }
        for (language, text) in extra {
            add(language, text);
        }
        let mut vocabulary: std::collections::HashSet<&String> = Default::default();
        for profile in &profiles {
            vocabulary.extend(profile.counts.keys());
        }
        let vocabulary = vocabulary.len() as f64;
        LanguageDetector {
            profiles,
            vocabulary,
        }
    }

    /// The most likely language; `None` when the text has no letters at all.
    pub fn detect(&self, text: &str) -> Option<Detection> {
        let features = features(text);
        if features.is_empty() {
            return None;
        }
        let scores: Vec<f64> = self
            .profiles
            .iter()
            .map(|profile| {
                features
                    .iter()
                    .map(|(feature, weight)| {
                        let count = profile.counts.get(feature).copied().unwrap_or(0.0);
                        weight * ((count + 0.5) / (profile.total + 0.5 * self.vocabulary)).ln()
                    })
                    .sum::<f64>()
            })
            .collect();
        // Scale per feature: long texts would otherwise always look certain; a tenth of a nat
        // of evidence per feature already makes a clear winner.
        let scale = 1.0 / (features.len() as f64).sqrt();
        let best = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores
            .iter()
            .map(|score| ((score - best) * scale).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        let (index, _) = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        Some(Detection {
            language: LANGUAGES[index],
            confidence: exps[index] / sum,
        })
    }
}

/// `en`, `es` or `ca` from a tag such as `es-ES`, `CA`, `english`; `None` otherwise.
pub fn normalise(tag: &str) -> Option<&'static str> {
    let lower = tag.trim().to_lowercase();
    let primary = lower.split(['-', '_']).next().unwrap_or_default();
    match primary {
        "en" | "english" => Some("en"),
        "es" | "spanish" | "español" | "castellano" => Some("es"),
        "ca" | "catalan" | "català" => Some("ca"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_three_languages_apart_on_chat_sized_text() {
        let detector = LanguageDetector::default();
        let cases = [
            ("where is my parcel? it has not arrived", "en"),
            ("quiero un reembolso de mi pedido", "es"),
            ("vull un reemborsament de la meva comanda", "ca"),
            ("quant triga l'enviament a Girona?", "ca"),
            ("¿cuánto tarda el envío a Madrid?", "es"),
            ("how long does shipping take?", "en"),
            ("deixa-ho", "ca"),
            ("déjalo", "es"),
        ];
        for (text, expected) in cases {
            let detection = detector.detect(text).expect("letters");
            assert_eq!(detection.language, expected, "{text}: {detection:?}");
        }
        assert!(detector.detect("1234 !!").is_none());
    }

    #[test]
    fn normalises_tags() {
        assert_eq!(normalise("es-ES"), Some("es"));
        assert_eq!(normalise("CA"), Some("ca"));
        assert_eq!(normalise("fr"), None);
    }
}
