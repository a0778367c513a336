//! What the order flow says and how it reads the customer's answers: the prompt and buttons of
//! each step, the summary, and the numbers, yes and no of `[LANG.order]` in responses.toml.

use std::collections::HashMap;

use switchboard_connector::Choice;

use super::{OrderDraft, OrderStep};
use crate::assistant::builtin::{BuiltinAssistant, intent_choice, words};
use crate::assistant::classifier::fold;
use crate::assistant::intents::{OnComplete, render};
use crate::assistant::shop::ProductOffer;
use crate::workflow::notify::amount;

/// Units one answer may name (the workflow's own maximum is usually far lower).
const MAX_UNITS: i64 = 999;
/// Words after a number that make it a size, not a quantity ("Green tea, 100 g").
const UNITS: [&str; 10] = ["g", "kg", "ml", "l", "cl", "cm", "mm", "eur", "euros", "w"];

impl BuiltinAssistant {
    /// What the draft's step asks.
    pub(super) fn prompt_text(&self, draft: &OrderDraft, language: &str) -> String {
        let texts = self.order_texts(language);
        match (draft.step, draft.lines.first()) {
            (OrderStep::Product, _) => texts.ask_product.clone(),
            (OrderStep::Choose, _) => texts.choose_product.clone(),
            (OrderStep::Quantity, Some(line)) => render(
                &texts.ask_quantity,
                &HashMap::from([
                    ("name".to_string(), line.name.clone()),
                    (
                        "price".to_string(),
                        amount(line.unit_price_cents, &line.currency, language),
                    ),
                    ("stock".to_string(), line.stock.max(0).to_string()),
                ]),
            ),
            (OrderStep::Quantity, None) => texts.ask_product.clone(),
            (OrderStep::Address, _) => texts.ask_address.clone(),
            (OrderStep::Confirm, _) => self.summary_text(draft, language),
        }
    }

    pub(super) fn step_choices(&self, draft: &OrderDraft, language: &str) -> Vec<Choice> {
        let texts = self.order_texts(language);
        match draft.step {
            OrderStep::Choose => draft
                .options
                .iter()
                .map(|offer| Choice {
                    id: format!("product:{}", offer.sku),
                    label: self.choice_label(offer, language),
                })
                .collect(),
            OrderStep::Quantity => {
                let stock = draft.lines.first().map(|line| line.stock).unwrap_or(0);
                (1..=3)
                    .filter(|quantity| *quantity <= stock)
                    .map(|quantity| Choice {
                        id: format!("quantity:{quantity}"),
                        label: quantity.to_string(),
                    })
                    .collect()
            }
            OrderStep::Confirm => [
                ("order:confirm", &texts.confirm),
                ("order:address", &texts.change_address),
                ("order:cancel", &texts.cancel),
            ]
            .into_iter()
            .map(|(id, label)| Choice {
                id: id.into(),
                label: label.clone(),
            })
            .collect(),
            OrderStep::Product | OrderStep::Address => Vec::new(),
        }
    }

    pub(super) fn choice_label(&self, offer: &ProductOffer, language: &str) -> String {
        render(
            &self.order_texts(language).choice,
            &HashMap::from([
                ("name".to_string(), offer.name.clone()),
                (
                    "price".to_string(),
                    amount(offer.price_cents, &offer.currency, language),
                ),
            ]),
        )
    }

    /// The summary to confirm: every line, the total the shop quoted, where it goes.
    pub(super) fn summary_text(&self, draft: &OrderDraft, language: &str) -> String {
        let texts = self.order_texts(language);
        let lines: Vec<String> = draft
            .lines
            .iter()
            .map(|line| {
                render(
                    &texts.line,
                    &HashMap::from([
                        ("quantity".to_string(), line.quantity.to_string()),
                        ("name".to_string(), line.name.clone()),
                        (
                            "price".to_string(),
                            amount(line.unit_price_cents, &line.currency, language),
                        ),
                        (
                            "total".to_string(),
                            amount(
                                line.unit_price_cents.saturating_mul(line.quantity),
                                &line.currency,
                                language,
                            ),
                        ),
                    ]),
                )
            })
            .collect();
        let mut text = String::new();
        if let Some(order) = &draft.from_order {
            text.push_str(&render(
                &texts.reorder_from,
                &HashMap::from([
                    ("order".to_string(), order.clone()),
                    (
                        "date".to_string(),
                        draft.from_date.clone().unwrap_or_default(),
                    ),
                ]),
            ));
            text.push('\n');
        }
        text.push_str(&render(
            &texts.summary,
            &HashMap::from([
                ("lines".to_string(), lines.join("\n")),
                (
                    "total".to_string(),
                    amount(
                        draft.total_cents.unwrap_or_default(),
                        draft.currency.as_deref().unwrap_or_default(),
                        language,
                    ),
                ),
                (
                    "address".to_string(),
                    draft.address.clone().unwrap_or_default(),
                ),
            ]),
        ));
        text
    }

    /// The button that asks for a person (the handoff intent's first example).
    pub(super) fn person_choice(&self, language: &str) -> Vec<Choice> {
        self.intents
            .intents
            .iter()
            .find(|intent| intent.on_complete == OnComplete::Handoff)
            .and_then(|intent| intent_choice(intent, language))
            .into_iter()
            .collect()
    }

    /// The number of units `text` names: digits (not a size such as "100 g", not an order
    /// number) or a number word of `language`. A number with a sign or a fraction ("-3",
    /// "2.5") names none. Words worth one ("one", "una") count only as the whole answer: they
    /// are also pronouns and articles ("the blue one").
    pub(super) fn quantity_in(&self, text: &str, language: &str) -> Option<i64> {
        if signed_or_fractional(text) {
            return None;
        }
        let numbers = &self.order_texts(language).numbers;
        let folded = fold(text);
        let tokens: Vec<&str> = folded.split_whitespace().collect();
        tokens.iter().enumerate().find_map(|(index, token)| {
            let value = if token.chars().all(|c| c.is_ascii_digit()) {
                let next = tokens.get(index + 1).copied().unwrap_or_default();
                if token.len() > 3 || UNITS.contains(&next) {
                    return None;
                }
                token.parse::<i64>().ok()
            } else {
                numbers
                    .iter()
                    .find(|(name, _)| words(name) == *token)
                    .map(|(_, value)| *value)
                    .filter(|value| *value != 1 || tokens.len() == 1)
            };
            value.filter(|value| (1..=MAX_UNITS).contains(value))
        })
    }

    /// The answer is nothing but a number of units ("3", "three", "3 please" is not).
    pub(super) fn only_quantity(&self, text: &str, language: &str) -> Option<i64> {
        let said = words(text);
        (!said.contains(' '))
            .then(|| self.quantity_in(text, language))
            .flatten()
    }

    /// A yes and nothing else: every word of the answer belongs to a yes of `language` or to
    /// the confirm button ("yes please", "sí, fes la comanda"), so "ok, wait" or "yes but send
    /// it elsewhere" is not one.
    pub(super) fn says_yes(&self, text: &str, language: &str) -> bool {
        let texts = self.order_texts(language);
        let said = words(text);
        if said.is_empty() {
            return false;
        }
        let known: std::collections::HashSet<String> = texts
            .yes
            .iter()
            .chain(std::iter::once(&texts.confirm))
            .flat_map(|yes| {
                words(yes)
                    .split(' ')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        said.split(' ').all(|word| known.contains(word))
    }

    pub(super) fn says_no(&self, text: &str, language: &str) -> bool {
        let texts = self.order_texts(language);
        let said = words(text);
        said == words(&texts.cancel) || texts.no.iter().any(|no| words(no) == said)
    }
}

/// "-3", "- 3", "2.5", "2,5": not a number of units.
fn signed_or_fractional(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().any(|(index, c)| {
        let digit_after = chars[index + 1..]
            .iter()
            .find(|c| !c.is_whitespace())
            .is_some_and(char::is_ascii_digit);
        let digit_before = index > 0 && chars[index - 1].is_ascii_digit();
        let digit_next = chars.get(index + 1).is_some_and(char::is_ascii_digit);
        let sign = *c == '-' && digit_after && (index == 0 || !chars[index - 1].is_alphanumeric());
        let fraction = (*c == '.' || *c == ',') && digit_before && digit_next;
        sign || fraction
    })
}
