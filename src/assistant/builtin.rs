//! The builtin assistant: no LLM, no outside service, in English, Spanish and Catalan.
//!
//! Each turn: detect the language (keeping the conversation's when unsure), embed the message
//! once, classify the intent, then
//! - while collecting slots: take a valid value, re-prompt on an invalid one (hand over after
//!   `max_slot_attempts`), drop the flow on "forget it", or switch to a clearly different intent;
//! - otherwise act on the intent: start collecting its slots, reply, hand over, or answer from
//!   the knowledge base with a citation in the customer's language;
//! - when nothing fits well enough, say so; the second unsure turn in a row hands over.
//!
//! - slots are collected by [`slots`]; a request's opening message is read for more than its
//!   pattern slots (a reason, an address), and a request the shop would refuse is told before
//!   details are asked ([`opening`]);
//! - for an order intent, take the order ([`ordering`]): product, quantity, address, a summary
//!   to confirm.
//!
//! All per-conversation state lives in [`DialogueState`], returned in `Reply.state` and given
//! back in `Turn.state`: the assistant itself holds none, so any instance can take any turn.

mod opening;
mod ordering;
mod slots;

use ordering::OrderTurn;

pub use ordering::{DraftLine, OrderDraft, OrderStep};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::classifier::{
    ClassifierParams, Example, IntentClassifier, OUT_OF_SCOPE, Prediction, fold,
};
use super::intents::{IntentSpec, Intents, OnComplete, Responses, render};
use super::{Action, Assistant, AssistantError, AssistantSettings, Handoff, Reply, Turn};
use crate::config::Settings;
use crate::knowledge::language::{LanguageDetector, normalise};
use crate::knowledge::{Embedder, KnowledgeBase, Passage, SearchMode};

/// The least probability the detector must give a channel's language hint for the hint to
/// settle a first message it is unsure of.
const PLAUSIBLE_HINT: f64 = 0.2;

/// A passage shown to the customer, remembered for the handoff summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Citation {
    pub source: String,
    pub title: String,
    pub section: String,
    pub confidence: f32,
}

/// An intent whose slots are being collected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flow {
    pub intent: String,
    pub slots: BTreeMap<String, String>,
    /// The slot last asked for.
    pub awaiting: Option<String>,
    /// Invalid answers to `awaiting` so far.
    pub attempts: u32,
    /// The order the shop was asked about, and would not refuse this request for.
    #[serde(default)]
    pub checked_order: Option<String>,
}

/// What the assistant remembers of a conversation between turns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DialogueState {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub flow: Option<Flow>,
    /// Unsure turns in a row.
    #[serde(default)]
    pub low_confidence: u32,
    #[serde(default)]
    pub last_passages: Vec<Citation>,
    #[serde(default)]
    pub last_intent: Option<String>,
    /// An order being taken.
    #[serde(default)]
    pub order: Option<OrderDraft>,
}

pub struct BuiltinAssistant {
    settings: AssistantSettings,
    intents: Intents,
    responses: Responses,
    classifier: IntentClassifier,
    detector: Arc<LanguageDetector>,
    embedder: Arc<dyn Embedder>,
    knowledge: Arc<KnowledgeBase>,
}

/// Everything one turn decides.
struct Outcome {
    messages: Vec<String>,
    handoff: Option<Handoff>,
    actions: Vec<Action>,
    choices: Vec<switchboard_connector::Choice>,
}

impl BuiltinAssistant {
    /// Load the model, the dialogue files and the knowledge base (ingesting the configured
    /// folders), and train the intent classifier.
    pub async fn build(settings: &Settings) -> Result<BuiltinAssistant, AssistantError> {
        let embedder = settings.assistant.embedder().await?;
        BuiltinAssistant::build_with(settings, embedder).await
    }

    /// As [`BuiltinAssistant::build`], with the embedding model already loaded.
    pub async fn build_with(
        settings: &Settings,
        embedder: Arc<dyn Embedder>,
    ) -> Result<BuiltinAssistant, AssistantError> {
        let started = Instant::now();
        let assistant = &settings.assistant;
        let intents = Intents::load(&assistant.intents_file)?;
        let responses = Responses::load(&assistant.responses_file, &intents)?;
        if normalise(&assistant.default_language) != Some(assistant.default_language.as_str()) {
            return Err(AssistantError::Config(format!(
                "assistant.default_language {:?} is not one of en, es, ca",
                assistant.default_language
            )));
        }
        let samples: Vec<(String, String)> = intents
            .examples()
            .into_iter()
            .map(|(language, text, _)| (language, text))
            .collect();
        let detector = Arc::new(LanguageDetector::train(&samples));
        let knowledge = KnowledgeBase::open_embedded(
            &settings.data_dir,
            embedder.clone(),
            detector.clone(),
            settings.knowledge.clone(),
        )
        .await?;
        let report = knowledge.ingest_configured().await?;
        let classifier = train_classifier(&intents, embedder.as_ref()).await?;
        tracing::info!(
            embedder = embedder.name(),
            intents = intents.intents.len(),
            threshold = classifier.threshold(),
            articles_ingested = report.articles,
            articles_unchanged = report.unchanged,
            millis = started.elapsed().as_millis() as u64,
            "builtin assistant ready"
        );
        Ok(BuiltinAssistant {
            settings: assistant.clone(),
            intents,
            responses,
            classifier,
            detector,
            embedder,
            knowledge: Arc::new(knowledge),
        })
    }

    pub fn knowledge(&self) -> &Arc<KnowledgeBase> {
        &self.knowledge
    }

    pub fn intents(&self) -> &Intents {
        &self.intents
    }

    pub fn settings(&self) -> &AssistantSettings {
        &self.settings
    }

    /// The language to answer `turn` in (the conversation's unless the message clearly is in
    /// another).
    pub fn language_for(&self, turn: &Turn) -> String {
        let state: DialogueState = serde_json::from_value(turn.state.clone()).unwrap_or_default();
        self.choose_language(turn, &state)
    }

    /// Whether the conversation is in the middle of something this assistant leads (details
    /// being collected, an order being taken), which its next turn must continue.
    pub fn is_busy(state: &Value) -> bool {
        let state: DialogueState = serde_json::from_value(state.clone()).unwrap_or_default();
        state.flow.is_some() || state.order.is_some()
    }

    /// What the customer is told when the conversation goes to people, in `language`.
    pub fn handoff_text(&self, language: &str) -> String {
        self.responses.language(language).handoff.clone()
    }

    fn choose_language(&self, turn: &Turn, state: &DialogueState) -> String {
        let kept = state.language.as_deref().and_then(normalise);
        // Before this assistant has answered here (a new conversation, or one reopened after it
        // was resolved, which starts the assistant afresh): what the channel reports for the
        // person (a browser's or Telegram's language), or the language the conversation had.
        let hint = turn.language.as_deref().and_then(normalise);
        let Some(detection) = self.detector.detect(&turn.text) else {
            return kept
                .or(hint)
                .map_or_else(|| self.settings.default_language.clone(), str::to_string);
        };
        if detection.confidence >= self.settings.language_switch_confidence {
            return detection.language.to_string();
        }
        // An unsure message keeps the conversation's language. Before that, the hint settles it
        // only when the text fits the hint too: "hola" from a browser in Spanish is Spanish,
        // from a browser (or a Telegram user) in English it is not English.
        match (kept, hint) {
            (Some(kept), _) => kept,
            (None, Some(hint)) if detection.probability(hint) >= PLAUSIBLE_HINT => hint,
            _ => detection.language,
        }
        .to_string()
    }

    /// "Forget it": a cancel intent the classifier is sure of, or one of its examples word for
    /// word (short phrases are where a classifier is least sure).
    fn is_cancel(&self, text: &str, prediction: &Prediction) -> bool {
        let cancel_intents = || {
            self.intents
                .intents
                .iter()
                .filter(|intent| intent.on_complete == OnComplete::Cancel)
        };
        let said = words(text);
        let verbatim = cancel_intents().any(|intent| {
            intent
                .examples
                .values()
                .flatten()
                .any(|example| words(example) == said)
        });
        let predicted = prediction.intent.as_deref().is_some_and(|name| {
            cancel_intents().any(|intent| intent.name == name)
                && prediction.probability >= self.settings.switch_intent_probability
        });
        verbatim || predicted
    }

    fn summary(
        &self,
        reason: &str,
        state: &DialogueState,
        prediction: &Prediction,
        turn: &Turn,
        language: &str,
    ) -> Value {
        let flow = state.flow.as_ref();
        json!({
            "reason": reason,
            "language": language,
            "intent": flow.map(|flow| flow.intent.clone()).or(state.last_intent.clone()),
            "slots": flow.map(|flow| json!(flow.slots)).unwrap_or(json!({})),
            "order": state.order,
            "last_passages": state.last_passages,
            "last_message": turn.text,
            "classifier": {"best": prediction.best, "probability": prediction.probability},
        })
    }

    fn handoff(
        &self,
        outcome: &mut Outcome,
        message: String,
        reason: &str,
        queue: Option<String>,
        summary: Value,
    ) {
        outcome.messages.push(message);
        outcome.handoff = Some(Handoff {
            reason: reason.into(),
            queue,
            summary,
        });
    }

    async fn answer_from_knowledge(
        &self,
        outcome: &mut Outcome,
        state: &mut DialogueState,
        turn: &Turn,
        embedding: Vec<f32>,
        language: &str,
        prediction: &Prediction,
    ) -> Result<(), AssistantError> {
        let passages = self
            .knowledge
            .search_with_vector(
                &turn.text,
                language,
                embedding,
                SearchMode::Hybrid,
                self.knowledge.settings().top_k,
            )
            .await?;
        let texts = self.responses.language(language);
        // Fusion ranks by relevance; the answer shown is the most confident of the top passages
        // in the customer's language (an article's introduction often ranks first on meaning
        // alone but answers less of the question than the section that covers its words).
        let in_language: Vec<&Passage> = passages
            .iter()
            .filter(|passage| passage.language == language)
            .collect();
        let pool = if in_language.is_empty() {
            passages.iter().collect()
        } else {
            in_language
        };
        let best = pool
            .into_iter()
            .max_by(|a, b| a.confidence().total_cmp(&b.confidence()));
        match best {
            Some(passage) if passage.confidence() >= self.settings.answer_min_confidence => {
                state.low_confidence = 0;
                state.last_passages = vec![citation(passage)];
                outcome
                    .messages
                    .push(render(&texts.answer, &passage_values(passage)));
            }
            _ => {
                state.low_confidence += 1;
                if let Some(passage) = best {
                    state.last_passages = vec![citation(passage)];
                }
                if state.low_confidence >= self.settings.low_confidence_handoff {
                    let summary = self.summary("low_confidence", state, prediction, turn, language);
                    state.low_confidence = 0;
                    self.handoff(
                        outcome,
                        texts.handoff.clone(),
                        "low_confidence",
                        None,
                        summary,
                    );
                } else {
                    outcome.messages.push(texts.not_sure.clone());
                    outcome.choices = self.suggestions(&prediction.best, language);
                }
            }
        }
        Ok(())
    }

    async fn turn(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        let mut state: DialogueState =
            serde_json::from_value(turn.state.clone()).unwrap_or_default();
        let language = self.choose_language(turn, &state);
        state.language = Some(language.clone());
        let texts = self.responses.language(&language);
        let embedding = self.embedder.embed_one(&turn.text).await?;
        let prediction = self.classifier.predict(&turn.text, &embedding);
        let predicted_spec = prediction
            .intent
            .as_deref()
            .filter(|intent| *intent != OUT_OF_SCOPE)
            .and_then(|intent| self.intents.get(intent));
        let mut outcome = Outcome {
            messages: Vec::new(),
            handoff: None,
            actions: Vec::new(),
            choices: Vec::new(),
        };

        if let Some(draft) = state.order.take() {
            let other = self
                .continue_order(
                    &mut outcome,
                    &mut state,
                    draft,
                    &language,
                    turn,
                    &prediction,
                )
                .await;
            match other {
                OrderTurn::Done => {}
                OrderTurn::Switch(other) => {
                    self.begin(
                        &mut outcome,
                        &mut state,
                        &other,
                        &language,
                        turn,
                        &prediction,
                    )
                    .await;
                }
                OrderTurn::Question => {
                    self.answer_from_knowledge(
                        &mut outcome,
                        &mut state,
                        turn,
                        embedding,
                        &language,
                        &prediction,
                    )
                    .await?;
                    match state.order.clone() {
                        Some(_) if outcome.handoff.is_some() => state.order = None,
                        Some(draft) => self.ask_again(&mut outcome, &draft, &language),
                        None => {}
                    }
                }
            }
            return Ok(self.finish(outcome, state, language));
        }

        if let Some(mut flow) = state.flow.take() {
            let spec =
                self.intents.get(&flow.intent).cloned().ok_or_else(|| {
                    AssistantError::Failed(format!("unknown intent {}", flow.intent))
                })?;
            if self.is_cancel(&turn.text, &prediction) {
                outcome.messages.push(texts.cancelled.clone());
                return Ok(self.finish(outcome, state, language));
            }
            // A clearly different request: an explicit request for a person always wins; others
            // only when the message is not a valid answer (checked below), except while a free
            // text answer is awaited, which would swallow any message.
            let other = predicted_spec.filter(|other| {
                other.name != spec.name
                    && other.on_complete != OnComplete::Knowledge
                    && other.on_complete != OnComplete::Cancel
                    && (other.on_complete == OnComplete::Handoff
                        || prediction.probability >= self.settings.switch_intent_probability)
            });
            let awaiting_free_text = flow
                .awaiting
                .as_ref()
                .and_then(|name| self.intents.slots.get(name))
                .is_some_and(|slot| slot.is_free_text());
            let switch_first = other.is_some_and(|other| {
                other.on_complete == OnComplete::Handoff || awaiting_free_text
            });
            if !switch_first && self.fill_slots(&mut flow, &spec, &turn.text) {
                state.flow = Some(flow);
                self.advance(
                    &mut outcome,
                    &mut state,
                    &spec,
                    &language,
                    turn,
                    &prediction,
                )
                .await;
                return Ok(self.finish(outcome, state, language));
            }
            if let Some(other) = other {
                state.flow = Some(flow);
                if other.on_complete == OnComplete::Handoff {
                    let summary =
                        self.summary("customer_request", &state, &prediction, turn, &language);
                    state.flow = None;
                    self.handoff(
                        &mut outcome,
                        texts.handoff.clone(),
                        "customer_request",
                        other.queue.clone(),
                        summary,
                    );
                    return Ok(self.finish(outcome, state, language));
                }
                state.flow = None;
                let other = other.clone();
                self.begin(
                    &mut outcome,
                    &mut state,
                    &other,
                    &language,
                    turn,
                    &prediction,
                )
                .await;
                return Ok(self.finish(outcome, state, language));
            }
            // A question while a slot is awaited: answer it, then ask again (not a failed
            // attempt at the slot).
            let question = predicted_spec
                .is_some_and(|spec| spec.on_complete == OnComplete::Knowledge)
                && prediction.probability >= self.settings.switch_intent_probability
                && !awaiting_free_text;
            if question {
                let awaiting = flow.awaiting.clone();
                state.flow = Some(flow);
                self.answer_from_knowledge(
                    &mut outcome,
                    &mut state,
                    turn,
                    embedding,
                    &language,
                    &prediction,
                )
                .await?;
                if outcome.handoff.is_some() {
                    state.flow = None;
                } else if let Some(prompt) = awaiting.and_then(|slot| texts.prompt.get(&slot)) {
                    outcome.messages.push(prompt.clone());
                }
                return Ok(self.finish(outcome, state, language));
            }
            flow.attempts += 1;
            let awaiting = flow.awaiting.clone().unwrap_or_default();
            state.flow = Some(flow);
            if state.flow.as_ref().map(|flow| flow.attempts).unwrap_or(0)
                >= self.settings.max_slot_attempts
            {
                let summary =
                    self.summary("slot_not_understood", &state, &prediction, turn, &language);
                state.flow = None;
                self.handoff(
                    &mut outcome,
                    texts.too_many_attempts.clone(),
                    "slot_not_understood",
                    None,
                    summary,
                );
                return Ok(self.finish(outcome, state, language));
            }
            let reprompt = texts
                .invalid
                .get(&awaiting)
                .cloned()
                .unwrap_or_else(|| texts.not_sure.clone());
            outcome.messages.push(reprompt);
            return Ok(self.finish(outcome, state, language));
        }

        match predicted_spec.map(|spec| (spec.on_complete, spec.clone())) {
            Some((OnComplete::Cancel, _)) => {
                state.low_confidence = 0;
                outcome.messages.push(texts.nothing_to_cancel.clone());
            }
            Some((OnComplete::Knowledge, _)) | None => {
                self.answer_from_knowledge(
                    &mut outcome,
                    &mut state,
                    turn,
                    embedding,
                    &language,
                    &prediction,
                )
                .await?;
            }
            Some((_, spec)) => {
                state.low_confidence = 0;
                self.begin(
                    &mut outcome,
                    &mut state,
                    &spec,
                    &language,
                    turn,
                    &prediction,
                )
                .await;
            }
        }
        Ok(self.finish(outcome, state, language))
    }

    /// Act on a recognised request: take an order, or collect the intent's slots.
    async fn begin(
        &self,
        outcome: &mut Outcome,
        state: &mut DialogueState,
        spec: &IntentSpec,
        language: &str,
        turn: &Turn,
        prediction: &Prediction,
    ) {
        if spec.on_complete.takes_order() {
            self.start_order(outcome, state, spec, language, turn).await;
        } else {
            state.order = None;
            self.start_intent(outcome, state, spec, language, turn, prediction)
                .await;
        }
    }

    fn finish(&self, outcome: Outcome, state: DialogueState, language: String) -> Reply {
        Reply {
            messages: outcome.messages,
            handoff: outcome.handoff,
            state: Some(serde_json::to_value(&state).unwrap_or(Value::Null)),
            language: Some(language),
            actions: outcome.actions,
            choices: outcome.choices,
        }
    }

    /// Quick replies when the assistant is unsure: the likeliest intent and talking to a
    /// person, each labelled with the intent's first example in the conversation's language.
    /// Picking one sends its label, which the classifier knows from its own examples.
    fn suggestions(&self, likeliest: &str, language: &str) -> Vec<switchboard_connector::Choice> {
        let person = self
            .intents
            .intents
            .iter()
            .find(|intent| intent.on_complete == OnComplete::Handoff);
        let candidates = [self.intents.get(likeliest), person];
        let mut choices: Vec<switchboard_connector::Choice> = Vec::new();
        for intent in candidates.into_iter().flatten() {
            if choices.iter().any(|choice| choice.id == intent.name) {
                continue;
            }
            choices.extend(intent_choice(intent, language));
        }
        choices
    }
}

/// A quick reply that sends `intent`'s first example in `language` (English if it has none
/// there), which the classifier knows from its own examples.
fn intent_choice(intent: &IntentSpec, language: &str) -> Option<switchboard_connector::Choice> {
    let label = intent
        .examples
        .get(language)
        .or_else(|| intent.examples.get("en"))?
        .first()?;
    Some(switchboard_connector::Choice {
        id: intent.name.clone(),
        label: label.clone(),
    })
}

/// A text folded (case, accents, punctuation) to its words, one space apart: how short answers
/// are compared with the configured phrases.
fn words(text: &str) -> String {
    fold(text).split_whitespace().collect::<Vec<_>>().join(" ")
}

fn citation(passage: &Passage) -> Citation {
    Citation {
        source: passage.source.clone(),
        title: passage.title.clone(),
        section: passage.section.clone(),
        confidence: passage.confidence(),
    }
}

fn passage_values(passage: &Passage) -> HashMap<String, String> {
    HashMap::from([
        ("text".to_string(), passage.text.clone()),
        ("title".to_string(), passage.title.clone()),
        (
            "section".to_string(),
            if passage.section.is_empty() {
                passage.title.clone()
            } else {
                passage.section.clone()
            },
        ),
        ("source".to_string(), passage.source.clone()),
    ])
}

/// Embed every example and train (on a blocking thread).
pub async fn train_classifier(
    intents: &Intents,
    embedder: &dyn Embedder,
) -> Result<IntentClassifier, AssistantError> {
    let examples = intents.examples();
    let vectors = embedder
        .embed(examples.iter().map(|(_, text, _)| text.clone()).collect())
        .await?;
    let examples: Vec<Example> = examples
        .into_iter()
        .zip(vectors)
        .map(|((_, text, label), embedding)| Example {
            text,
            label,
            embedding,
        })
        .collect();
    let params = ClassifierParams::for_intents_file();
    let (classifier, report) =
        tokio::task::spawn_blocking(move || IntentClassifier::train(&examples, params))
            .await
            .map_err(|error| AssistantError::Failed(error.to_string()))?
            .map_err(AssistantError::Config)?;
    tracing::debug!(?report, "intent classifier trained");
    Ok(classifier)
}

#[async_trait]
impl Assistant for BuiltinAssistant {
    async fn respond(&self, turn: &Turn) -> Result<Reply, AssistantError> {
        self.turn(turn).await
    }
}
