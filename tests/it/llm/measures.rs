//! `switchboard eval llm` and `switchboard bench llm` run end to end: the demo shop in process,
//! customers in the real web chat, the scripted model server behind the recording proxy. The
//! figures must come from what happened: a grounded answer, a refund opened, another customer's
//! order refused, and no personal data in anything the model server received.

use std::path::Path;
use std::time::Duration;

use switchboard::assistant::eval::llm::{LlmEval, evaluate};
use switchboard::bench::llm::{LlmBench, measure};
use switchboard::bench::shop_chat::ModelServer;
use switchboard::config::Settings;

use super::fake::{Answer, FakeLlm};

/// The demo shop's settings, as `switchboard serve` reads them.
fn demo_settings() -> Settings {
    let mut settings =
        Settings::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.toml"))
            .expect("the shipped config");
    settings.llm.model = "fake-model".into();
    settings.llm.max_retries = 0;
    settings.llm.answer_deadline_ms = 20_000;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eval_llm_counts_what_the_conversations_did() {
    let fake = FakeLlm::start(vec![
        Answer::streamed_text(&["Delivery to Girona takes ", "2 to 3 working days [1]."]),
        Answer::streamed_call(
            "call_1",
            "open_refund",
            r#"{"order_number": "1043", "reason": "the kettle arrived damaged"}"#,
        ),
        // Asked for another customer's order: the workflow refuses it, nothing is opened.
        Answer::streamed_call(
            "call_2",
            "open_refund",
            r#"{"order_number": "2001", "reason": "refund to [IBAN_1]"}"#,
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let conversations = dir.path().join("conversations.toml");
    std::fs::write(
        &conversations,
        r#"
[[conversation]]
name = "shipping"
turns = ["How long does delivery take to Girona?"]
expect = "answer"

[[conversation]]
name = "refund"
turns = ["I'd like my money back for order 1043, the kettle arrived damaged"]
expect = "task"
task = "refund"
order = "1043"

[[conversation]]
name = "someone-elses-order"
turns = ["Refund order 2001 to my account ES91 2100 0418 4502 0005 1332, I'm on +34 612 345 678"]
expect = "no_task"
order = "2001"
"#,
    )
    .unwrap();
    let figures = evaluate(
        LlmEval {
            conversations,
            server: ModelServer {
                url: Some(fake.base_url()),
                model: None,
                turn_timeout_secs: 60,
            },
            limit: None,
        },
        demo_settings(),
    )
    .await
    .expect("the eval runs");
    assert_eq!(figures.conversations, 3);
    assert_eq!(figures.containment, Some(1.0));
    assert_eq!(figures.tool_accuracy, Some(1.0), "{figures:?}");
    assert_eq!(figures.citation_rate, Some(1.0), "{figures:?}");
    assert_eq!(figures.leaks, 0);
    assert!(figures.tokens_per_conversation > 0.0, "{figures:?}");
    // The IBAN and the phone number were in the third conversation; the fake saw neither.
    let third = fake.received()[2].body.to_string();
    assert!(
        third.contains("[IBAN_1]") && third.contains("[PHONE_1]"),
        "{third}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_llm_times_both_ways_with_the_same_messages() {
    let answers = (0..4)
        .map(|_| Answer::streamed_text(&["It takes ", "2 to 3 working days [1]."]))
        .collect();
    let fake = FakeLlm::start(answers).await;
    let counts = tokio::time::timeout(
        Duration::from_secs(120),
        measure(
            LlmBench {
                server: ModelServer {
                    url: Some(fake.base_url()),
                    model: None,
                    turn_timeout_secs: 60,
                },
                messages: 2,
            },
            demo_settings(),
        ),
    )
    .await
    .expect("the bench ends")
    .expect("the bench runs");
    assert_eq!(counts.direct, 2);
    // Both answers cite a passage they were given: the model's answers are the ones stored.
    assert_eq!((counts.through, counts.fallbacks), (2, 0), "{counts:?}");
    assert_eq!(counts.before_model, 2, "{counts:?}");
    // Through Switchboard the model was asked too, once per message, with the full prompt.
    assert_eq!(counts.requests, 2, "{counts:?}");
    let through = &fake.received()[2].body;
    assert!(
        through["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty())
    );
    let direct = &fake.received()[0].body;
    assert!(
        direct
            .get("tools")
            .is_none_or(|tools| tools.as_array().is_none_or(Vec::is_empty))
    );
}
