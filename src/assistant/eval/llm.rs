//! `switchboard eval llm`: LLM mode on a set of conversations with the demo shop, through the
//! real web chat, router, workflow and knowledge base, on the configured model server (or
//! `--url`).
//!
//! Each conversation names its customer, what they write, turn by turn, and what should come
//! of it: an answer from the knowledge base (which must cite a passage it was given), a task
//! opened on an order, no task on an order (a hostile request), a lookup of the customer's
//! orders, or a handoff. The figures:
//! - containment: conversations never handed to a person;
//! - tool accuracy: conversations whose expected task, refusal, lookup or handoff happened;
//! - citation rate: questions answered by the model with a citation; the rest were answered by
//!   the builtin assistant (fallback rate);
//! - leaks: personal data the customers wrote (e-mail addresses, phone, card and IBAN-like
//!   numbers, postal addresses) found in any request the model server received. Must be 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use crate::assistant::redact::Vault;
use crate::bench::shop_chat::{ModelServer, ShopChat};
use crate::config::Settings;
use crate::llm::proxy::RecordingProxy;

#[derive(Debug, clap::Args)]
pub struct LlmEval {
    /// The conversations (TOML, as tests/data/llm_conversations.toml).
    #[arg(long, default_value = "tests/data/llm_conversations.toml")]
    pub conversations: PathBuf,
    #[command(flatten)]
    pub server: ModelServer,
    /// Only the first N conversations.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The headline figures of a run (shares are `None` when nothing was there to count).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmFigures {
    pub conversations: usize,
    pub containment: Option<f64>,
    pub tool_accuracy: Option<f64>,
    pub citation_rate: Option<f64>,
    pub fallback_rate: Option<f64>,
    /// Personal data values found in requests the model server received.
    pub leaks: usize,
    pub tokens_per_conversation: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationSet {
    conversation: Vec<Case>,
}

/// What should come of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    /// Answered from the knowledge base, with a citation.
    Answer,
    /// A task of `task` opened on `order`.
    Task,
    /// No task on `order` (another customer's, or asked for by an injection).
    NoTask,
    /// The customer's orders or requests looked up.
    Lookup,
    /// Handed to a person.
    Handoff,
}

impl Expect {
    fn label(self) -> &'static str {
        match self {
            Expect::Answer => "answer",
            Expect::Task => "task",
            Expect::NoTask => "no_task",
            Expect::Lookup => "lookup",
            Expect::Handoff => "handoff",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_customer")]
    customer: String,
    turns: Vec<String>,
    expect: Expect,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    order: Option<String>,
}

fn default_customer() -> String {
    "ana@example.com".into()
}

/// A conversation's outcome.
#[derive(Debug, Default)]
struct Outcome {
    handed_off: bool,
    expected_happened: bool,
    /// Question turns, and those the model answered with a citation.
    questions: usize,
    cited: usize,
    leaks: Vec<String>,
    /// What came back, turn by turn (shown for a conversation whose expectation was missed).
    replies: Vec<String>,
    tokens: u64,
}

pub async fn run(options: LlmEval, settings: Settings) -> anyhow::Result<()> {
    evaluate(options, settings).await.map(|_| ())
}

/// Run the conversations, print the report, and return its figures.
pub async fn evaluate(options: LlmEval, mut settings: Settings) -> anyhow::Result<LlmFigures> {
    let text = std::fs::read_to_string(&options.conversations)
        .with_context(|| format!("reading {}", options.conversations.display()))?;
    let set: ConversationSet = toml::from_str(&text)
        .with_context(|| format!("parsing {}", options.conversations.display()))?;
    for case in &set.conversation {
        let needs_order = matches!(case.expect, Expect::Task | Expect::NoTask);
        anyhow::ensure!(
            !needs_order || case.order.is_some(),
            "conversation {:?}: expect = {:?} needs an order",
            case.name,
            case.expect
        );
        anyhow::ensure!(
            case.expect != Expect::Task || case.task.is_some(),
            "conversation {:?}: expect = \"task\" needs a task type",
            case.name
        );
    }
    let upstream = options.server.choose(&mut settings)?;
    let model = settings.llm.model.clone();
    let proxy = RecordingProxy::start(&upstream).await?;
    let shop = ShopChat::start(settings, proxy.base_url()).await?;
    // The shop is shut down before its scratch directory goes, whatever happened.
    let outcome = run_cases(&shop, &proxy, &set, &options, &upstream, &model).await;
    shop.shutdown().await;
    outcome
}

async fn run_cases(
    shop: &ShopChat,
    proxy: &RecordingProxy,
    set: &ConversationSet,
    options: &LlmEval,
    upstream: &str,
    model: &str,
) -> anyhow::Result<LlmFigures> {
    let wait = options.server.turn_timeout();
    let cases: Vec<&Case> = set
        .conversation
        .iter()
        .take(options.limit.unwrap_or(usize::MAX))
        .collect();
    println!(
        "eval llm: {} conversations on {upstream} (model {model:?})",
        cases.len()
    );
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for case in &cases {
        let outcome = converse(shop, proxy, case, wait)
            .await
            .with_context(|| format!("conversation {:?}", case.name))?;
        println!(
            "  {:<32} {:<8} {}{}{}",
            case.name,
            case.expect.label(),
            if outcome.expected_happened {
                "ok"
            } else {
                "MISSED"
            },
            if outcome.handed_off {
                ", handed off"
            } else {
                ""
            },
            if outcome.leaks.is_empty() {
                String::new()
            } else {
                format!(", LEAKED {:?}", outcome.leaks)
            },
        );
        if !outcome.expected_happened {
            for text in &case.turns {
                println!("      customer: {}", shorten(text));
            }
            for reply in &outcome.replies {
                println!("      {}", shorten(reply));
            }
        }
        outcomes.push(outcome);
    }
    let seconds = started.elapsed().as_secs_f64();

    let count = outcomes.len().max(1) as f64;
    let contained = outcomes.iter().filter(|o| !o.handed_off).count();
    let with_action: Vec<(&&Case, &Outcome)> = cases
        .iter()
        .zip(&outcomes)
        .filter(|(case, _)| case.expect != Expect::Answer)
        .collect();
    let right = with_action
        .iter()
        .filter(|(_, o)| o.expected_happened)
        .count();
    let questions: usize = outcomes.iter().map(|o| o.questions).sum();
    let cited: usize = outcomes.iter().map(|o| o.cited).sum();
    let leaks: usize = outcomes.iter().map(|o| o.leaks.len()).sum();
    let tokens: u64 = outcomes.iter().map(|o| o.tokens).sum();
    let share = |part: usize, whole: usize| (whole > 0).then(|| part as f64 / whole as f64);
    let figures = LlmFigures {
        conversations: outcomes.len(),
        containment: share(contained, outcomes.len()),
        tool_accuracy: share(right, with_action.len()),
        citation_rate: share(cited, questions),
        fallback_rate: share(questions - cited, questions),
        leaks,
        tokens_per_conversation: tokens as f64 / count,
    };
    let shown = |share: Option<f64>| share.map_or("n/a".to_string(), |share| format!("{share:.3}"));
    println!(
        "{} conversations, {} turns in {seconds:.1} s; {} questions, {} with an expected action",
        outcomes.len(),
        cases.iter().map(|c| c.turns.len()).sum::<usize>(),
        questions,
        with_action.len()
    );
    println!(
        "conversations={} containment={} tool_accuracy={} citation_rate={} fallback_rate={} leaks={} tokens_per_conversation={:.0}",
        figures.conversations,
        shown(figures.containment),
        shown(figures.tool_accuracy),
        shown(figures.citation_rate),
        shown(figures.fallback_rate),
        figures.leaks,
        figures.tokens_per_conversation,
    );
    Ok(figures)
}

/// One conversation through the web chat, and what came of it.
async fn converse(
    shop: &ShopChat,
    proxy: &RecordingProxy,
    case: &Case,
    wait: Duration,
) -> anyhow::Result<Outcome> {
    let first_request = proxy.count();
    let mut customer = shop.customer(&case.customer).await?;
    let mut outcome = Outcome::default();
    let mut vault = Vault::default();
    for text in &case.turns {
        vault.redact(text);
        let frames = customer.say(text, wait).await?;
        outcome.replies.extend(
            frames
                .replies
                .iter()
                .map(|(author, text)| format!("{author}: {}", text.replace('\n', " "))),
        );
        if case.expect == Expect::Answer {
            outcome.questions += 1;
            let cited = frames
                .replies
                .iter()
                .any(|(author, text)| author == "bot" && cites(text));
            outcome.cited += usize::from(cited);
        }
    }
    let conversation_id = shop.end_conversation(&customer).await?;
    let app = shop.app();
    let events = app.store.conversation_events(&conversation_id).await?;
    outcome.handed_off = events
        .iter()
        .any(|event| event.kind.as_str() == "owner.changed" && event.data["change"] == "handoff");
    let requests = proxy.received_since(first_request);
    for value in vault.values() {
        if requests
            .iter()
            .any(|request| request.to_string().contains(value))
        {
            outcome.leaks.push(value.to_string());
        }
    }
    let conversation = app.store.conversation(&conversation_id).await?;
    let usage = &conversation.assistant_state["llm"]["usage"];
    outcome.tokens = usage["prompt_tokens"].as_u64().unwrap_or(0)
        + usage["completion_tokens"].as_u64().unwrap_or(0);
    let tasks = async {
        let context = app.workflow.context_for(&conversation_id).await?;
        app.workflow.tasks_of_customer(context).await
    };
    let on_order = |tasks: &[crate::workflow::Task]| {
        tasks
            .iter()
            .filter(|task| {
                task.order_id == case.order
                    && task.conversation_id.as_deref() == Some(conversation_id.as_str())
            })
            .map(|task| task.kind.clone())
            .collect::<Vec<_>>()
    };
    outcome.expected_happened = match case.expect {
        Expect::Answer => outcome.cited == outcome.questions,
        Expect::Handoff => outcome.handed_off,
        Expect::Lookup => requests.iter().any(looked_up),
        Expect::Task => on_order(&tasks.await?).contains(case.task.as_ref().expect("checked")),
        Expect::NoTask => on_order(&tasks.await.unwrap_or_default()).is_empty(),
    };
    Ok(outcome)
}

/// `text` cut to a line's length.
fn shorten(text: &str) -> String {
    const MAX: usize = 110;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// A reply written by the model with a citation: "[1]" in its text.
fn cites(text: &str) -> bool {
    text.char_indices().any(|(at, c)| {
        c == '['
            && text[at + 1..].split_once(']').is_some_and(|(number, _)| {
                !number.is_empty() && number.chars().all(|c| c.is_ascii_digit())
            })
    })
}

/// Whether a request to the model carried the answer of an order or request lookup.
fn looked_up(request: &Value) -> bool {
    request["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|message| {
            message["tool_calls"].as_array().is_some_and(|calls| {
                calls.iter().any(|call| {
                    matches!(
                        call["function"]["name"].as_str(),
                        Some("list_orders" | "list_requests")
                    )
                })
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_citation_is_a_bracketed_number() {
        assert!(cites("Returns take 30 days [1].\n\nSources: [1] Returns"));
        assert!(!cites("Returns take 30 days. Source: Returns, Policy"));
        assert!(!cites("Call [EMAIL_1] or see []"));
    }

    #[test]
    fn the_shipped_conversation_set_reads() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/llm_conversations.toml"
        );
        let set: ConversationSet = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(set.conversation.len() >= 12);
        for expect in [
            Expect::Answer,
            Expect::Task,
            Expect::NoTask,
            Expect::Lookup,
            Expect::Handoff,
        ] {
            assert!(
                set.conversation.iter().any(|case| case.expect == expect),
                "{expect:?}"
            );
        }
    }
}
