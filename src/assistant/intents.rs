//! The dialogue's configuration: intents with their examples and slots (`intents.toml`) and
//! what the assistant says in each language (`responses.toml`).
//!
//! Both files are validated when loaded, so a missing prompt or an unknown slot is a start-up
//! error with the file and the name, never a silent gap in a conversation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use super::AssistantError;
use crate::knowledge::language::{LANGUAGES, normalise};

/// The slot holding an order number: a task's `order_id` and the order an order-status
/// intent looks up.
pub const ORDER_SLOT: &str = "order_number";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnComplete {
    Task,
    Handoff,
    Reply,
    Knowledge,
    Cancel,
    /// Look the order (slot `order_number`) up and tell its status.
    OrderStatus,
    /// Take a new order: product, quantity, address, a summary to confirm (texts in
    /// `[LANG.order]`).
    Order,
    /// As `order`, starting from the customer's past orders ("the same as last time").
    Reorder,
}

impl OnComplete {
    /// The intent takes an order.
    pub fn takes_order(self) -> bool {
        matches!(self, OnComplete::Order | OnComplete::Reorder)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub name: String,
    pub on_complete: OnComplete,
    /// The back-office task kind, for `on_complete = "task"`.
    #[serde(default)]
    pub task: Option<String>,
    /// The queue, for `on_complete = "handoff"` (default: the router's).
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub slots: Vec<String>,
    /// Example utterances by language.
    pub examples: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    pub name: String,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub min_chars: Option<usize>,
    #[serde(default)]
    pub normalize: Option<String>,
    /// How a free-text slot is taken from the message that starts its intent, so the customer
    /// is not asked for what they already said.
    #[serde(default)]
    pub opening: Option<Opening>,
}

/// Where a free-text slot's value is found in the message that starts an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opening {
    /// A postal address in it ("... to Carrer de Mallorca 401, 08013 Barcelona").
    Address,
    /// What it says besides the request itself ("I want my money back for order 1043, the
    /// lamp arrived damaged": "the lamp arrived damaged").
    Rest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentsFile {
    #[serde(default)]
    slot: Vec<SlotSpec>,
    intent: Vec<IntentSpec>,
}

/// A slot ready to validate values.
#[derive(Debug, Clone)]
pub struct Slot {
    pub spec: SlotSpec,
    pattern: Option<Regex>,
}

impl Slot {
    /// Free text (no pattern): any answer of the right length is valid.
    pub fn is_free_text(&self) -> bool {
        self.pattern.is_none()
    }

    /// Find a valid value in `text`. With a pattern, the first match anywhere; free-text
    /// slots only accept the whole message (`whole` = the customer is answering this slot).
    pub fn extract(&self, text: &str, whole: bool) -> Option<String> {
        let value = match &self.pattern {
            Some(pattern) => pattern.find(text)?.as_str().to_string(),
            None => {
                if !whole {
                    return None;
                }
                let trimmed = text.trim();
                if trimmed.chars().count() < self.spec.min_chars.unwrap_or(1) {
                    return None;
                }
                trimmed.to_string()
            }
        };
        Some(match self.spec.normalize.as_deref() {
            Some("digits") => value.chars().filter(char::is_ascii_digit).collect(),
            Some("lowercase") => value.to_lowercase(),
            _ => value,
        })
    }
}

/// Every intent and slot, validated.
#[derive(Debug, Clone)]
pub struct Intents {
    pub intents: Vec<IntentSpec>,
    pub slots: HashMap<String, Slot>,
}

fn invalid(path: &Path, message: impl Into<String>) -> AssistantError {
    AssistantError::Config(format!("{}: {}", path.display(), message.into()))
}

impl Intents {
    pub fn load(path: &Path) -> Result<Intents, AssistantError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| invalid(path, error.to_string()))?;
        Intents::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Intents, AssistantError> {
        let file: IntentsFile =
            toml::from_str(text).map_err(|error| invalid(path, error.to_string()))?;
        let mut slots = HashMap::new();
        for spec in file.slot {
            let pattern = match &spec.pattern {
                Some(pattern) => Some(Regex::new(pattern).map_err(|error| {
                    invalid(path, format!("slot {:?}: bad pattern: {error}", spec.name))
                })?),
                None => None,
            };
            if let Some(normalize) = &spec.normalize
                && !["digits", "lowercase"].contains(&normalize.as_str())
            {
                return Err(invalid(
                    path,
                    format!(
                        "slot {:?}: normalize must be \"digits\" or \"lowercase\"",
                        spec.name
                    ),
                ));
            }
            if spec.opening.is_some() && pattern.is_some() {
                return Err(invalid(
                    path,
                    format!(
                        "slot {:?}: opening is for free-text slots; a slot with a pattern is \
                         taken from any message that matches it",
                        spec.name
                    ),
                ));
            }
            slots.insert(spec.name.clone(), Slot { spec, pattern });
        }
        let mut seen = std::collections::HashSet::new();
        for intent in &file.intent {
            if !seen.insert(intent.name.clone()) {
                return Err(invalid(
                    path,
                    format!("intent {:?} is defined twice", intent.name),
                ));
            }
            for slot in &intent.slots {
                if !slots.contains_key(slot) {
                    return Err(invalid(
                        path,
                        format!("intent {:?} uses unknown slot {slot:?}", intent.name),
                    ));
                }
            }
            if intent.on_complete == OnComplete::Task && intent.task.is_none() {
                return Err(invalid(
                    path,
                    format!(
                        "intent {:?}: on_complete = \"task\" needs `task`",
                        intent.name
                    ),
                ));
            }
            if intent.on_complete == OnComplete::OrderStatus
                && !intent.slots.iter().any(|slot| slot == ORDER_SLOT)
            {
                return Err(invalid(
                    path,
                    format!(
                        "intent {:?}: on_complete = \"order_status\" needs the slot {ORDER_SLOT:?}",
                        intent.name
                    ),
                ));
            }
            for language in intent.examples.keys() {
                if normalise(language) != Some(language.as_str()) {
                    return Err(invalid(
                        path,
                        format!(
                            "intent {:?}: examples language {language:?} is not one of en, es, ca",
                            intent.name
                        ),
                    ));
                }
            }
            if intent.examples.values().map(Vec::len).sum::<usize>() == 0 {
                return Err(invalid(
                    path,
                    format!("intent {:?} has no examples", intent.name),
                ));
            }
        }
        if file.intent.len() < 2 {
            return Err(invalid(path, "define at least two intents"));
        }
        Ok(Intents {
            intents: file.intent,
            slots,
        })
    }

    pub fn get(&self, name: &str) -> Option<&IntentSpec> {
        self.intents.iter().find(|intent| intent.name == name)
    }

    /// `(language, text, intent)` for every example.
    pub fn examples(&self) -> Vec<(String, String, String)> {
        self.intents
            .iter()
            .flat_map(|intent| {
                intent.examples.iter().flat_map(move |(language, texts)| {
                    texts
                        .iter()
                        .map(move |text| (language.clone(), text.clone(), intent.name.clone()))
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageResponses {
    pub answer: String,
    pub not_sure: String,
    pub handoff: String,
    pub cancelled: String,
    pub nothing_to_cancel: String,
    pub too_many_attempts: String,
    #[serde(default)]
    pub prompt: HashMap<String, String>,
    #[serde(default)]
    pub invalid: HashMap<String, String>,
    #[serde(default)]
    pub reply: HashMap<String, String>,
    /// Taking an order; required when an intent has `on_complete = "order"` or `"reorder"`.
    #[serde(default)]
    pub order: Option<OrderTexts>,
}

/// What the assistant says while it takes an order. Placeholders: `{name}`, `{price}`,
/// `{stock}`, `{quantity}`, `{total}`, `{lines}`, `{address}`, `{order}`, `{date}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderTexts {
    pub ask_product: String,
    pub product_not_found: String,
    pub choose_product: String,
    /// A product offered as a choice.
    pub choice: String,
    pub ask_quantity: String,
    pub invalid_quantity: String,
    pub ask_address: String,
    pub invalid_address: String,
    /// One line of the summary.
    pub line: String,
    pub summary: String,
    /// Before the summary of a reorder.
    pub reorder_from: String,
    pub reorder_none: String,
    /// A product of the past order that is no longer sold.
    pub reorder_left_out: String,
    /// An order number named for a reorder that is not one of the customer's.
    pub reorder_unknown: String,
    /// None of the product is left.
    pub sold_out: String,
    /// Buttons under the summary.
    pub confirm: String,
    pub change_address: String,
    pub cancel: String,
    /// An answer to the summary that is neither yes nor no.
    pub not_confirmed: String,
    /// Orders cannot be taken here (no shop is connected).
    pub unavailable: String,
    /// Words that confirm (the whole answer, or its first word).
    pub yes: Vec<String>,
    /// Words that decline.
    pub no: Vec<String>,
    /// Number words and their values ("two" = 2).
    pub numbers: HashMap<String, i64>,
}

/// Response templates for every supported language.
#[derive(Debug, Clone)]
pub struct Responses {
    by_language: HashMap<String, LanguageResponses>,
}

impl Responses {
    /// Load and check that every language has every text the intents need.
    pub fn load(path: &Path, intents: &Intents) -> Result<Responses, AssistantError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| invalid(path, error.to_string()))?;
        Responses::parse(path, &text, intents)
    }

    pub fn parse(path: &Path, text: &str, intents: &Intents) -> Result<Responses, AssistantError> {
        let by_language: HashMap<String, LanguageResponses> =
            toml::from_str(text).map_err(|error| invalid(path, error.to_string()))?;
        for language in LANGUAGES {
            let Some(responses) = by_language.get(language) else {
                return Err(invalid(path, format!("no [{language}] section")));
            };
            for intent in &intents.intents {
                for slot in &intent.slots {
                    for (table, map) in [
                        ("prompt", &responses.prompt),
                        ("invalid", &responses.invalid),
                    ] {
                        if !map.contains_key(slot) {
                            return Err(invalid(
                                path,
                                format!("[{language}.{table}] has no {slot:?}"),
                            ));
                        }
                    }
                }
                if intent.on_complete.takes_order() && responses.order.is_none() {
                    return Err(invalid(
                        path,
                        format!(
                            "intent {:?} takes orders: [{language}.order] is missing",
                            intent.name
                        ),
                    ));
                }
                if intent.on_complete == OnComplete::Reply
                    && !responses.reply.contains_key(&intent.name)
                {
                    return Err(invalid(
                        path,
                        format!("[{language}.reply] has no {:?}", intent.name),
                    ));
                }
            }
        }
        Ok(Responses { by_language })
    }

    pub fn language(&self, language: &str) -> &LanguageResponses {
        self.by_language
            .get(language)
            .or_else(|| self.by_language.get("en"))
            .expect("every supported language is checked at load")
    }
}

/// Fill `{name}` placeholders from `values`; unknown placeholders stay as they are.
pub fn render(template: &str, values: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if values.contains_key(&after[..close]) => {
                out.push_str(&values[&after[..close]]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Intents {
        Intents::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/intents.toml"))
            .expect("demo intents load")
    }

    #[test]
    fn demo_files_load_and_agree() {
        let intents = demo();
        Responses::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/responses.toml"),
            &intents,
        )
        .expect("demo responses load");
        assert!(intents.get("refund").is_some());
    }

    #[test]
    fn slots_validate_and_normalise() {
        let intents = demo();
        let order = &intents.slots["order_number"];
        assert_eq!(
            order.extract("my order is #10423", false).as_deref(),
            Some("10423")
        );
        assert_eq!(order.extract("order 12", true), None);
        let email = &intents.slots["email"];
        assert_eq!(
            email.extract("it's Ana@Example.com", true).as_deref(),
            Some("ana@example.com")
        );
        let reason = &intents.slots["reason"];
        assert_eq!(reason.extract("it arrived broken", false), None);
        assert_eq!(
            reason.extract("it arrived broken", true).as_deref(),
            Some("it arrived broken")
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let path = Path::new("intents.toml");
        let error = Intents::parse(path, "[[intent]]\nname = \"a\"\non_complete = \"task\"\nslots = [\"x\"]\nexamples.en = [\"hi\"]\n")
            .expect_err("unknown slot");
        assert!(error.to_string().contains("unknown slot"), "{error}");
        let error = Intents::parse(
            path,
            "[[intent]]\nname = \"a\"\non_complete = \"fly\"\nexamples.en = [\"hi\"]\n",
        )
        .expect_err("bad action");
        assert!(error.to_string().contains("intents.toml"), "{error}");
    }

    #[test]
    fn renders_placeholders() {
        let values = HashMap::from([("order_number".to_string(), "1042".to_string())]);
        assert_eq!(
            render("order {order_number} {x}", &values),
            "order 1042 {x}"
        );
    }
}
