//! What the message that starts an intent already says, so the customer is not asked for it
//! again, and whether the request can be done at all, so they are not asked for details of a
//! request the shop will refuse.
//!
//! "I'd like my money back for order 1043, the lamp arrived damaged" starts a refund with its
//! order number (a pattern slot, taken anywhere) and its reason: a free-text slot with
//! `opening = "rest"` takes the clauses other than the one most like the request itself. A slot
//! with `opening = "address"` takes a postal address in the message. Before asking for anything
//! beyond the order, the shop is asked whether it would refuse such a task on that order (an
//! order already shipped cannot be cancelled); if so, the customer hears why at once.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::{BuiltinAssistant, Flow};
use crate::assistant::Turn;
use crate::assistant::intents::{IntentSpec, ORDER_SLOT, OnComplete, Opening};
use crate::assistant::redact;

/// Where one clause ends: punctuation followed by a space or the end.
static CLAUSE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[,;:.!?¿¡]+(?:\s+|$)|\s+[-–—]+\s+").expect("clause pattern"));

/// Words that start a clause giving a reason or a detail, in English, Spanish and Catalan.
static CUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:because|since|cause|as the|porque|ya que|pues|perqu[eè]|ja que|com que)\b",
    )
    .expect("cue pattern")
});

/// A clause that says something: at least this many words besides any order number.
const MIN_WORDS: usize = 2;
/// A clause with an order number in it needs this many other words to say more than "order
/// 1043".
const MIN_WORDS_BESIDE_A_NUMBER: usize = 4;

impl BuiltinAssistant {
    /// Fill the free-text slots of `spec` that have an `opening` from `text`, the message that
    /// starts the intent.
    pub(super) async fn take_from_opening(&self, flow: &mut Flow, spec: &IntentSpec, text: &str) {
        for name in &spec.slots {
            if flow.slots.contains_key(name) {
                continue;
            }
            let slot = &self.intents.slots[name];
            let value = match slot.spec.opening {
                Some(Opening::Address) => redact::find_address(text).map(str::to_string),
                Some(Opening::Rest) => self.rest_of_request(&spec.name, text).await,
                None => None,
            };
            if let Some(value) = value.and_then(|value| slot.extract(&value, true)) {
                flow.slots.insert(name.clone(), value);
            }
        }
    }

    /// What `text` says besides the request for `intent`: its clauses other than the one the
    /// classifier finds most like the request, leaving out questions (answered on their own,
    /// never a reason) and any that only greets, thanks or names the order.
    async fn rest_of_request(&self, intent: &str, text: &str) -> Option<String> {
        let clauses = clauses(text);
        if clauses.len() < 2 {
            return None;
        }
        let texts: Vec<String> = clauses
            .iter()
            .map(|range| text[range.clone()].to_string())
            .collect();
        let embeddings = match self.embedder.embed(texts.clone()).await {
            Ok(embeddings) => embeddings,
            Err(error) => {
                tracing::warn!(%error, "could not read the rest of a request");
                return None;
            }
        };
        let request = texts
            .iter()
            .zip(&embeddings)
            .map(|(clause, embedding)| self.classifier.probability_of(clause, embedding, intent))
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(index, _)| index)?;
        let rest: Vec<&str> = texts
            .iter()
            .zip(&embeddings)
            .enumerate()
            .filter(|(index, _)| *index != request && !asks(text, &clauses[*index]))
            .filter(|(_, (clause, embedding))| self.says_something(clause, embedding))
            .map(|(_, (clause, _))| clause.as_str())
            .collect();
        (!rest.is_empty()).then(|| rest.join(", "))
    }

    /// A clause that is more than a greeting, a thanks, a "never mind" or an order number.
    fn says_something(&self, clause: &str, embedding: &[f32]) -> bool {
        let small_talk = self
            .classifier
            .predict(clause, embedding)
            .intent
            .and_then(|intent| self.intents.get(&intent))
            .is_some_and(|spec| {
                matches!(
                    spec.on_complete,
                    OnComplete::Reply | OnComplete::Cancel | OnComplete::Handoff
                )
            });
        if small_talk {
            return false;
        }
        let numbered = self
            .intents
            .slots
            .get(ORDER_SLOT)
            .is_some_and(|slot| slot.extract(clause, false).is_some());
        let words = clause
            .split_whitespace()
            .filter(|word| word.chars().any(char::is_alphabetic))
            .count();
        if numbered {
            words >= MIN_WORDS_BESIDE_A_NUMBER
        } else {
            words >= MIN_WORDS
        }
    }

    /// Before the customer is asked for more than the order: would the shop refuse a task of
    /// this kind on this order anyway? The refusal to tell them, if so (once per order; an
    /// outage is not a refusal, the task is judged again when it is opened).
    pub(super) async fn refused_early(
        &self,
        flow: &mut Flow,
        spec: &IntentSpec,
        turn: &Turn,
        language: &str,
    ) -> Option<String> {
        if spec.on_complete != OnComplete::Task {
            return None;
        }
        let shop = turn.shop.as_ref()?;
        let order_id = flow.slots.get(ORDER_SLOT)?.clone();
        if flow.checked_order.as_deref() == Some(order_id.as_str()) {
            return None;
        }
        let kind = spec.task.as_deref().unwrap_or(&spec.name);
        match shop
            .check_task(&turn.conversation_id, language, kind, &order_id)
            .await
        {
            Ok(()) => {
                flow.checked_order = Some(order_id);
                None
            }
            Err(refusal) if refusal.code == "unavailable" => None,
            Err(refusal) => Some(refusal.message),
        }
    }
}

/// Whether the clause at `range` of `text` is a question: a question mark ends it, or an
/// inverted one opens it.
fn asks(text: &str, range: &Range<usize>) -> bool {
    text[range.end..].trim_start().starts_with('?') || text[..range.start].trim_end().ends_with('¿')
}

/// The clauses of `text`, split at punctuation and before a cue such as "because", trimmed,
/// a leading cue word left out.
fn clauses(text: &str) -> Vec<Range<usize>> {
    let mut cuts = vec![0];
    for found in CLAUSE_END.find_iter(text) {
        cuts.push(found.start());
        cuts.push(found.end());
    }
    cuts.push(text.len());
    let mut clauses = Vec::new();
    for pair in cuts.chunks(2) {
        let [start, end] = [pair[0], pair[1]];
        let mut from = start;
        for cue in CUE.find_iter(&text[start..end]) {
            if text[start..start + cue.start()].trim().is_empty() {
                continue;
            }
            clauses.push(from..start + cue.start());
            from = start + cue.start();
        }
        clauses.push(from..end);
    }
    clauses
        .into_iter()
        .filter_map(|range| {
            let clause = &text[range.clone()];
            let leading_cue = CUE
                .find(clause)
                .filter(|cue| cue.start() == clause.len() - clause.trim_start().len())
                .map_or(0, |cue| cue.end());
            let body = &clause[leading_cue..];
            let start = range.start + leading_cue + (body.len() - body.trim_start().len());
            let end = range.start + leading_cue + body.trim_end().len();
            (start < end).then_some(start..end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        clauses(text)
            .into_iter()
            .map(|range| &text[range])
            .collect()
    }

    #[test]
    fn clauses_split_at_punctuation_and_before_a_reason() {
        assert_eq!(
            split("I'd like my money back for order 1043, the lamp arrived damaged."),
            [
                "I'd like my money back for order 1043",
                "the lamp arrived damaged"
            ]
        );
        assert_eq!(
            split("Refund order 1043 because it arrived broken"),
            ["Refund order 1043", "it arrived broken"]
        );
        assert_eq!(
            split("Hola! Quiero un reembolso del pedido 1043 porque llegó roto"),
            ["Hola", "Quiero un reembolso del pedido 1043", "llegó roto"]
        );
        assert_eq!(
            split("Vull el reemborsament de la comanda 1043 perquè va arribar trencada"),
            [
                "Vull el reemborsament de la comanda 1043",
                "va arribar trencada"
            ]
        );
        // A number with a comma or a point in it is one clause.
        assert_eq!(
            split("it cost 45,00 or 45.00 EUR"),
            ["it cost 45,00 or 45.00 EUR"]
        );
        assert_eq!(split("because"), Vec::<&str>::new());
        let text = "Refund order 1043, how long does it take? ¿Y cuánto cuesta?";
        let asked: Vec<bool> = clauses(text)
            .iter()
            .map(|range| asks(text, range))
            .collect();
        assert_eq!(asked, [false, true, true]);
        assert_eq!(split(""), Vec::<&str>::new());
    }
}
