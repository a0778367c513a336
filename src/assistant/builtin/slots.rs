//! Collecting an intent's slots: starting it with what its first message says, asking for the
//! first missing slot, and, once all are there, doing what the intent is for (a task, an order
//! lookup, a reply or a handoff).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{BuiltinAssistant, DialogueState, Flow, Outcome};
use crate::assistant::classifier::Prediction;
use crate::assistant::intents::{IntentSpec, ORDER_SLOT, OnComplete, render};
use crate::assistant::{Action, Turn};
use switchboard_connector::Choice;

/// Orders offered as quick replies at most.
const MAX_ORDER_CHOICES: usize = 4;

impl BuiltinAssistant {
    /// Ask for the first missing slot (unless the shop would refuse the request anyway), or
    /// finish the intent.
    pub(super) async fn advance(
        &self,
        outcome: &mut Outcome,
        state: &mut DialogueState,
        spec: &IntentSpec,
        language: &str,
        turn: &Turn,
        prediction: &Prediction,
    ) {
        let texts = self.responses.language(language);
        let Some(flow) = state.flow.as_mut() else {
            return;
        };
        if let Some(missing) = spec
            .slots
            .iter()
            .find(|slot| !flow.slots.contains_key(*slot))
        {
            if let Some(refusal) = self.refused_early(flow, spec, turn, language).await {
                outcome.messages.push(refusal);
                state.flow = None;
                return;
            }
            if flow.awaiting.as_deref() != Some(missing.as_str()) {
                flow.attempts = 0;
            }
            flow.awaiting = Some(missing.clone());
            outcome.messages.push(texts.prompt[missing].clone());
            if missing == ORDER_SLOT {
                outcome.choices = self.order_choices(turn, language).await;
            }
            return;
        }
        let flow = state.flow.take().expect("flow checked above");
        let mut values: HashMap<String, String> = flow.slots.clone().into_iter().collect();
        values.insert("language".into(), language.into());
        match spec.on_complete {
            OnComplete::Task => {
                let kind = spec.task.clone().unwrap_or_else(|| spec.name.clone());
                let mut details: serde_json::Map<String, Value> = flow
                    .slots
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect();
                let order_id = details
                    .remove(ORDER_SLOT)
                    .and_then(|value| value.as_str().map(str::to_string));
                // The workflow tells the customer what came of it (or why it cannot be).
                outcome.actions.push(Action::OpenTask {
                    kind,
                    order_id,
                    details,
                });
            }
            OnComplete::OrderStatus => {
                if let Some(order_id) = flow.slots.get(ORDER_SLOT) {
                    outcome.actions.push(Action::OrderStatus {
                        order_id: order_id.clone(),
                    });
                }
            }
            OnComplete::Reply => outcome
                .messages
                .push(render(&texts.reply[&spec.name], &values)),
            OnComplete::Handoff => {
                state.flow = Some(flow);
                let summary = self.summary("customer_request", state, prediction, turn, language);
                state.flow = None;
                self.handoff(
                    outcome,
                    texts.handoff.clone(),
                    "customer_request",
                    spec.queue.clone(),
                    summary,
                );
            }
            // Orders are taken by `start_order`, never through slots.
            OnComplete::Knowledge
            | OnComplete::Cancel
            | OnComplete::Order
            | OnComplete::Reorder => {}
        }
    }

    /// Fill slots from `text`: the awaited one from the whole message, others only by pattern.
    pub(super) fn fill_slots(&self, flow: &mut Flow, spec: &IntentSpec, text: &str) -> bool {
        let mut awaited_filled = false;
        for name in &spec.slots {
            if flow.slots.contains_key(name) {
                continue;
            }
            let whole = flow.awaiting.as_deref() == Some(name.as_str());
            if let Some(value) = self.intents.slots[name].extract(text, whole) {
                flow.slots.insert(name.clone(), value);
                if whole {
                    awaited_filled = true;
                }
            }
        }
        awaited_filled
    }

    pub(super) async fn start_intent(
        &self,
        outcome: &mut Outcome,
        state: &mut DialogueState,
        spec: &IntentSpec,
        language: &str,
        turn: &Turn,
        prediction: &Prediction,
    ) {
        state.last_intent = Some(spec.name.clone());
        let mut flow = Flow {
            intent: spec.name.clone(),
            slots: BTreeMap::new(),
            awaiting: None,
            attempts: 0,
            checked_order: None,
        };
        self.fill_slots(&mut flow, spec, &turn.text);
        self.take_from_opening(&mut flow, spec, &turn.text).await;
        state.flow = Some(flow);
        self.advance(outcome, state, spec, language, turn, prediction)
            .await;
    }

    /// The customer's latest orders as quick replies when their order number is asked for
    /// (a signed-in shop customer; nobody else's orders are ever listed). Picking one sends its
    /// label, whose number fills the slot.
    async fn order_choices(&self, turn: &Turn, language: &str) -> Vec<Choice> {
        let Some(shop) = turn.shop.as_ref().filter(|_| turn.verified) else {
            return Vec::new();
        };
        match shop.orders(&turn.conversation_id, language).await {
            Ok(orders) => orders
                .into_iter()
                .take(MAX_ORDER_CHOICES)
                .map(|order| Choice {
                    id: format!("order:{}", order.number),
                    label: format!("{} ({})", order.number, order.total),
                })
                .collect(),
            // A guest, or the shop unreachable: the number is asked for in words.
            Err(_) => Vec::new(),
        }
    }
}
