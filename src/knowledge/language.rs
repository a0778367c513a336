//! Language identification for English, Spanish and Catalan.
//!
//! [lingua](https://github.com/pemistahl/lingua-rs) with only these three languages' models
//! built in (cargo features) and preloaded at start: n-gram models trained on large corpora,
//! in their high-accuracy mode, which is the one that copes with chat-sized text. Short
//! messages are still the hard case ("hola" is Spanish and Catalan alike), so
//! [`Detection::confidence`] says how sure the detector is and callers keep the conversation's
//! language when it is low.

use lingua::{Language, LanguageDetectorBuilder};

/// The languages the assistant speaks, in a stable order.
pub const LANGUAGES: [&str; 3] = ["en", "es", "ca"];

/// [`LANGUAGES`] as lingua names them, in the same order.
const MODELS: [Language; 3] = [Language::English, Language::Spanish, Language::Catalan];

#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub language: &'static str,
    /// How likely `language` is against the other two, 0..1 (1/3 means no idea).
    pub confidence: f64,
}

/// A detector for [`LANGUAGES`]; built once at start, cheap to query, shared between threads.
pub struct LanguageDetector {
    detector: lingua::LanguageDetector,
}

impl std::fmt::Debug for LanguageDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanguageDetector")
            .field("languages", &LANGUAGES)
            .finish()
    }
}

impl Default for LanguageDetector {
    fn default() -> Self {
        LanguageDetector::new()
    }
}

impl LanguageDetector {
    /// Loads the three models (once per process: lingua shares them between detectors).
    pub fn new() -> LanguageDetector {
        LanguageDetector {
            detector: LanguageDetectorBuilder::from_languages(&MODELS)
                .with_preloaded_language_models()
                .build(),
        }
    }

    /// The most likely language; `None` when the text has no letters at all.
    pub fn detect(&self, text: &str) -> Option<Detection> {
        if !text.chars().any(char::is_alphabetic) {
            return None;
        }
        let (language, confidence) = self
            .detector
            .compute_language_confidence_values(text)
            .into_iter()
            .next()?;
        // Letters none of the models know (another script) give no evidence at all.
        if confidence <= 0.0 {
            return None;
        }
        let index = MODELS.iter().position(|known| *known == language)?;
        Some(Detection {
            language: LANGUAGES[index],
            confidence,
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
            ("la col·lecció de tardor ja és a la botiga", "ca"),
            ("la colección de otoño ya está en la tienda", "es"),
            ("can I change the delivery address of my order?", "en"),
        ];
        for (text, expected) in cases {
            let detection = detector.detect(text).expect("letters");
            assert_eq!(detection.language, expected, "{text}: {detection:?}");
        }
        assert!(detector.detect("1234 !!").is_none());
        assert!(detector.detect("").is_none());
    }

    #[test]
    fn is_sure_of_clear_text_and_unsure_of_shared_words() {
        let detector = LanguageDetector::default();
        let clear = detector
            .detect("vull un reemborsament de la meva comanda, si us plau")
            .expect("letters");
        assert_eq!(clear.language, "ca");
        assert!(clear.confidence > 0.8, "{clear:?}");
        // Spanish and Catalan alike: the caller must be told to keep the language it had.
        let shared = detector.detect("hola").expect("letters");
        assert!(shared.confidence < 0.8, "{shared:?}");
        for detection in [clear, shared] {
            assert!((0.0..=1.0).contains(&detection.confidence), "{detection:?}");
        }
    }

    #[test]
    fn long_articles_are_detected_with_confidence() {
        let detector = LanguageDetector::default();
        let article = "Enviaments\nEnviem a tota la península en dos o tres dies laborables. \
                       Les comandes de més de cinquanta euros no paguen despeses d'enviament, \
                       i les Illes Balears reben el paquet en quatre dies.";
        let detection = detector.detect(article).expect("letters");
        assert_eq!(detection.language, "ca");
        assert!(detection.confidence > 0.9, "{detection:?}");
    }

    #[test]
    fn normalises_tags() {
        assert_eq!(normalise("es-ES"), Some("es"));
        assert_eq!(normalise("CA"), Some("ca"));
        assert_eq!(normalise("fr"), None);
    }
}
