//! Personal data found in a customer's words: kept away from the model provider in LLM mode,
//! and a postal address the builtin assistant can take from a request ([`find_address`]).
//!
//! Before a customer's words (or a tool's answer) go to the model, e-mail addresses, phone
//! numbers, card-like and IBAN-like numbers and postal addresses are replaced by placeholders
//! such as `[EMAIL_1]`. The [`Vault`] remembers what each placeholder stands for, for the whole
//! conversation (the same value keeps its placeholder), and puts the values back where the
//! model's reply or a tool's arguments use them. The provider sees the placeholders only.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a placeholder hides, in the order the kinds are looked for: an e-mail before anything
/// with digits, a long number (card, IBAN) before a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Iban,
    Card,
    Phone,
    Address,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Iban => "IBAN",
            Kind::Card => "CARD",
            Kind::Phone => "PHONE",
            Kind::Address => "ADDRESS",
        }
    }

    /// Whether a match of the kind's pattern really is one (checksums, digit counts).
    fn accepts(self, found: &str) -> bool {
        let digits = found.chars().filter(char::is_ascii_digit).count();
        match self {
            Kind::Email | Kind::Address => true,
            // A country code, two check digits and at least ten more digits or letters with
            // digits among them: checked as IBAN-like, not validated (a mistyped IBAN is still
            // a customer's account).
            Kind::Iban => digits >= 10,
            // 13 to 19 digits: cards, and any long account-like number (order numbers are
            // shorter).
            Kind::Card => (13..=19).contains(&digits),
            Kind::Phone => (9..=15).contains(&digits),
        }
    }
}

static PATTERNS: LazyLock<Vec<(Kind, Regex)>> = LazyLock::new(|| {
    let street_en = r"(?:Street|St\.?|Road|Rd\.?|Avenue|Ave\.?|Lane|Ln\.?|Drive|Dr\.?|Boulevard|Blvd\.?|Way|Court|Ct\.?|Place|Pl\.?|Square|Sq\.?|Terrace|Close|Crescent|Gardens|Row)";
    let street_es_ca = r"(?i:c/|calle|carrer|avda\.?|avenida|avinguda|avgda\.?|av\.|plaza|pza\.?|pla[çc]a|paseo|passeig|pg\.|camino|cam[ií]|ronda|rambla|travessera|traves[ií]a|carretera|ctra\.?)";
    let tail = r"(?:,?\s*\d{4,5}(?:\s+\p{Lu}[\p{L}'’-]+){0,3})?(?:,\s*\p{Lu}[\p{L}'’-]*(?:\s+\p{Lu}[\p{L}'’-]*){0,2})*";
    let patterns = [
        (
            Kind::Email,
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}".to_string(),
        ),
        (
            Kind::Iban,
            // Groups in capitals (as IBANs are printed), so that a word after one is not taken
            // for its last group.
            r"\b(?i:[A-Z]{2})\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[0-9]{1,3})?\b".to_string(),
        ),
        (Kind::Card, r"\b(?:\d[ -]?){12,18}\d\b".to_string()),
        (Kind::Phone, r"(?:\+|\b)\d[\d ().-]{7,18}\d\b".to_string()),
        (
            Kind::Address,
            format!(
                r"\b{street_es_ca}\s+[\p{{L}}\d'’ .ºª-]{{2,50}}?,?\s*(?:n[ºo°]\.?\s*)?\d{{1,4}}[A-Za-z]?\b(?:,?\s*\d{{1,2}}[ºª]\s*\d{{0,2}}[ºªa-zA-Z]?)?{tail}"
            ),
        ),
        (
            Kind::Address,
            format!(
                r"\b\d{{1,5}}[A-Za-z]?\s+(?:\p{{Lu}}[\p{{L}}'’.-]*\s+){{1,4}}{street_en}\b{tail}"
            ),
        ),
    ];
    patterns
        .into_iter()
        .map(|(kind, pattern)| (kind, Regex::new(&pattern).expect("redaction pattern")))
        .collect()
});

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\[(EMAIL|IBAN|CARD|PHONE|ADDRESS)_(\d{1,4})\]").expect("placeholder pattern")
});

/// The placeholders of one conversation and what they stand for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vault {
    /// (placeholder, value), in the order they were first seen.
    #[serde(default)]
    entries: Vec<(String, String)>,
}

impl Vault {
    /// `text` with every piece of personal data replaced by its placeholder.
    pub fn redact(&mut self, text: &str) -> String {
        let mut text = text.to_string();
        for (kind, pattern) in PATTERNS.iter() {
            let mut redacted = String::with_capacity(text.len());
            let mut last = 0;
            for found in pattern.find_iter(&text) {
                let value = found.as_str().trim_end_matches([',', ' ']);
                if !kind.accepts(value) || PLACEHOLDER.is_match(value) {
                    continue;
                }
                redacted.push_str(&text[last..found.start()]);
                redacted.push_str(&self.placeholder(*kind, value));
                last = found.start() + value.len();
            }
            redacted.push_str(&text[last..]);
            text = redacted;
        }
        text
    }

    /// `text` with every placeholder this vault knows replaced by its value; unknown ones stay.
    pub fn restore(&self, text: &str) -> String {
        PLACEHOLDER
            .replace_all(text, |found: &regex::Captures<'_>| {
                let wanted = found[0].to_ascii_uppercase();
                self.entries
                    .iter()
                    .find(|(placeholder, _)| *placeholder == wanted)
                    .map(|(_, value)| value.clone())
                    .unwrap_or_else(|| found[0].to_string())
            })
            .into_owned()
    }

    /// The values this vault hides, in the order they were first seen.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, value)| value.as_str())
    }

    /// Whether `text` still holds a value this vault hides (a check on what leaves).
    pub fn leaks(&self, text: &str) -> bool {
        self.entries.iter().any(|(_, value)| text.contains(value))
    }

    fn placeholder(&mut self, kind: Kind, value: &str) -> String {
        if let Some((placeholder, _)) = self.entries.iter().find(|(_, known)| known == value) {
            return placeholder.clone();
        }
        let number = self
            .entries
            .iter()
            .filter(|(placeholder, _)| placeholder.starts_with(&format!("[{}_", kind.label())))
            .count()
            + 1;
        let placeholder = format!("[{}_{number}]", kind.label());
        self.entries.push((placeholder.clone(), value.to_string()));
        placeholder
    }
}

/// The first postal address in `text` (a street pattern in English, Spanish or Catalan, with
/// its number and any postcode and town after it).
pub fn find_address(text: &str) -> Option<&str> {
    PATTERNS
        .iter()
        .filter(|(kind, _)| *kind == Kind::Address)
        .filter_map(|(_, pattern)| pattern.find(text))
        .min_by_key(|found| found.start())
        .map(|found| found.as_str().trim_end_matches([',', ' ', '.']))
}

/// `text` with every piece of personal data left out (what a search should look for).
pub fn without_personal_data(text: &str) -> String {
    let mut vault = Vault::default();
    let hidden = vault.redact(text);
    PLACEHOLDER.replace_all(&hidden, "").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> (String, Vault) {
        let mut vault = Vault::default();
        (vault.redact(text), vault)
    }

    #[test]
    fn hides_each_kind_and_restores_it() {
        let text = "I'm ana.garcia@example.com, call me on +34 612 345 678. Card 4111 1111 1111 1111, \
                    IBAN ES91 2100 0418 4502 0005 1332. Send it to Carrer de la Força 12, 17004 Girona.";
        let (hidden, vault) = redacted(text);
        assert_eq!(
            hidden,
            "I'm [EMAIL_1], call me on [PHONE_1]. Card [CARD_1], IBAN [IBAN_1]. Send it to [ADDRESS_1]."
        );
        assert_eq!(vault.restore(&hidden), text);
        assert!(!vault.leaks(&hidden));
        // A word after an IBAN or a card is not part of it.
        let (hidden, _) =
            redacted("IBAN es91 2100 0418 4502 0005 1332 or card 4111-1111-1111-1111 then");
        assert_eq!(hidden, "IBAN [IBAN_1] or card [CARD_1] then");
        assert!(vault.leaks(text));
    }

    #[test]
    fn addresses_in_three_languages() {
        for (text, address) in [
            (
                "please send it to 221B Baker Street, London instead",
                "221B Baker Street, London",
            ),
            (
                "envíalo a Calle del Prado 21, 28014 Madrid por favor",
                "Calle del Prado 21, 28014 Madrid",
            ),
            ("a la c/ Mallorca, 401, 3º 2ª", "c/ Mallorca, 401, 3º 2ª"),
            (
                "la nova adreça és Avinguda Diagonal 640, 08017 Barcelona",
                "Avinguda Diagonal 640, 08017 Barcelona",
            ),
        ] {
            let (hidden, vault) = redacted(text);
            assert_eq!(hidden, text.replace(address, "[ADDRESS_1]"), "{text}");
            assert_eq!(vault.restore(&hidden), text);
        }
    }

    #[test]
    fn an_address_is_found_in_a_request() {
        assert_eq!(
            find_address("Please send order 1043 to 12 Baker Street, London instead."),
            Some("12 Baker Street, London")
        );
        assert_eq!(
            find_address(
                "canvia l'adreça de la comanda 1043 a Carrer de Mallorca 401, 08013 Barcelona"
            ),
            Some("Carrer de Mallorca 401, 08013 Barcelona")
        );
        assert_eq!(find_address("change the address of order 1043"), None);
    }

    #[test]
    fn a_search_leaves_personal_data_out() {
        assert_eq!(
            without_personal_data("How do I change my email? It is ana@example.com."),
            "How do I change my email? It is ."
        );
    }

    #[test]
    fn leaves_order_numbers_dates_prices_and_plain_words() {
        for text in [
            "I'd like my money back for order 1043, the lamp arrived damaged",
            "it was 189.90 EUR on 2026-11-30",
            "the street outside is noisy",
            "order #10000123 please",
            "quiero cancelar el pedido 2001",
        ] {
            let (hidden, vault) = redacted(text);
            assert_eq!(hidden, text);
            assert_eq!(vault, Vault::default());
        }
    }

    #[test]
    fn a_value_keeps_its_placeholder_and_kinds_count_apart() {
        let mut vault = Vault::default();
        assert_eq!(vault.redact("a@example.com"), "[EMAIL_1]");
        assert_eq!(
            vault.redact("b@example.com or 612345678"),
            "[EMAIL_2] or [PHONE_1]"
        );
        assert_eq!(vault.redact("again a@example.com"), "again [EMAIL_1]");
        // A model that changes a placeholder's case still gets it restored; one it made up
        // stays as written.
        assert_eq!(
            vault.restore("write to [email_2], not [EMAIL_9]"),
            "write to b@example.com, not [EMAIL_9]"
        );
    }
}
