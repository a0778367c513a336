//! The OpenAI-compatible client against the scripted fake: streaming, tool calls, usage,
//! retries on 429 and 5xx, final refusals, timeouts, and a stream cut after text was shown.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::llm::{
    ChatMessage, ChatRequest, FinishReason, LlmError, LlmProvider, LlmSettings, OpenAiClient,
    ToolCall, ToolSpec,
};

use super::fake::{Answer, FakeLlm};

fn settings(fake: &FakeLlm) -> LlmSettings {
    LlmSettings {
        base_url: fake.base_url(),
        model: "fake-model".into(),
        api_key: "sk-test-secret".into(),
        first_token_timeout_ms: 1_000,
        request_timeout_ms: 5_000,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..LlmSettings::default()
    }
}

fn question() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You answer for the shop."),
            ChatMessage::user("Where is my order?"),
        ],
        ..ChatRequest::default()
    }
}

/// Collects streamed pieces.
#[derive(Default)]
struct Pieces(Mutex<Vec<String>>);

impl switchboard::llm::TextSink for Pieces {
    fn text(&self, piece: &str) {
        self.0.lock().unwrap().push(piece.to_string());
    }
}

#[tokio::test]
async fn a_server_that_ignores_stream_true_is_read_whole() {
    let fake = FakeLlm::start(vec![Answer::text("It left today.")]).await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    let pieces = Pieces::default();
    let completion = client.complete(&question(), Some(&pieces)).await.unwrap();
    assert_eq!(fake.received()[0].body["stream"], true);
    assert_eq!(completion.content, "It left today.");
    assert_eq!(*pieces.0.lock().unwrap(), ["It left today."]);
    assert_eq!(completion.usage.map(|usage| usage.total()), Some(25));
}

#[tokio::test]
async fn streamed_text_reaches_the_sink_in_order_and_the_request_follows_the_protocol() {
    let fake = FakeLlm::start(vec![Answer::streamed_text(&["It ", "left ", "today."])]).await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    let pieces = Pieces::default();
    let completion = client.complete(&question(), Some(&pieces)).await.unwrap();
    assert_eq!(*pieces.0.lock().unwrap(), ["It ", "left ", "today."]);
    assert_eq!(completion.content, "It left today.");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(
        completion.usage.map(|usage| usage.completion_tokens),
        Some(3)
    );
    assert_eq!(completion.attempts, 1);

    let received = fake.received();
    assert_eq!(received.len(), 1);
    let body = &received[0].body;
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You answer for the shop."})
    );
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(body.get("tools").is_none(), "no tools were offered: {body}");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer sk-test-secret")
    );
    assert!(
        !format!("{client:?}").contains("sk-test-secret"),
        "the key shows in Debug output"
    );
}

#[tokio::test]
async fn a_tool_call_streamed_in_pieces_comes_back_whole_and_tool_results_go_out_in_the_protocol() {
    let fake = FakeLlm::start(vec![
        Answer::streamed_call("call_7", "order_status", r#"{"order_id": "1043"}"#),
        Answer::text("Order 1043 is on its way."),
    ])
    .await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    let mut request = question();
    request.tools = vec![ToolSpec {
        name: "order_status".into(),
        description: "Where one of the customer's orders is.".into(),
        parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}},
                           "required": ["order_id"]}),
    }];
    let pieces = Pieces::default();
    let first = client.complete(&request, Some(&pieces)).await.unwrap();
    assert!(
        pieces.0.lock().unwrap().is_empty(),
        "a tool call is not text"
    );
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        first.tool_calls,
        [ToolCall {
            id: "call_7".into(),
            name: "order_status".into(),
            arguments: r#"{"order_id": "1043"}"#.into(),
        }]
    );

    request
        .messages
        .push(ChatMessage::assistant_calls("", first.tool_calls.clone()));
    request.messages.push(ChatMessage::tool_result(
        "call_7",
        r#"{"status": "shipped"}"#,
    ));
    let second = client.complete(&request, None).await.unwrap();
    assert_eq!(second.content, "Order 1043 is on its way.");

    let received = fake.received();
    let tools = &received[0].body["tools"];
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "order_status");
    assert_eq!(
        tools[0]["function"]["parameters"]["required"][0],
        "order_id"
    );
    let messages = &received[1].body["messages"];
    assert_eq!(received[1].body["stream"], false);
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_7");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["name"],
        "order_status"
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_7", "content": r#"{"status": "shipped"}"#})
    );
}

#[tokio::test]
async fn busy_and_failing_servers_are_retried_with_their_retry_after() {
    let fake = FakeLlm::start(vec![
        Answer::Status {
            status: 429,
            body: json!({"error": {"message": "slow down"}}),
            retry_after: Some("0.15".into()),
        },
        Answer::status(503, "loading the model"),
        Answer::text("Hello."),
    ])
    .await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    let started = Instant::now();
    let completion = client.complete(&question(), None).await.unwrap();
    assert_eq!(completion.content, "Hello.");
    assert_eq!(completion.attempts, 3);
    assert_eq!(fake.received().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the server's Retry-After was not waited for: {:?}",
        started.elapsed()
    );

    // Out of retries: the last error says what the server said.
    let fake = FakeLlm::start(vec![
        Answer::status(500, "boom one"),
        Answer::status(502, "boom two"),
        Answer::status(500, "upstream request timeout"),
    ])
    .await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    match client.complete(&question(), None).await {
        Err(LlmError::Unavailable { attempts, message }) => {
            assert_eq!(attempts, 3);
            // A server error that mentions a timeout is still the server failing.
            assert!(message.contains("upstream request timeout"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(fake.left(), 0);
}

#[tokio::test]
async fn a_refused_request_is_not_retried() {
    let fake = FakeLlm::start(vec![
        Answer::status(404, "model fake-model not found"),
        Answer::text("never asked for"),
    ])
    .await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    match client.complete(&question(), None).await {
        Err(LlmError::Refused { status, message }) => {
            assert_eq!(status, 404);
            assert_eq!(message, "model fake-model not found");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_starts_answering_times_out_on_every_attempt() {
    let stall = || Answer::Stall(Duration::from_secs(30), Box::new(Answer::text("late")));
    let fake = FakeLlm::start(vec![stall(), stall()]).await;
    let client = OpenAiClient::new(LlmSettings {
        first_token_timeout_ms: 300,
        max_retries: 1,
        ..settings(&fake)
    })
    .unwrap();
    let started = Instant::now();
    let pieces = Pieces::default();
    match client.complete(&question(), Some(&pieces)).await {
        Err(LlmError::Timeout(message)) => assert!(message.contains("2 attempts"), "{message}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "two 300 ms attempts took {took:?}"
    );
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test]
async fn a_stream_cut_after_text_was_shown_is_not_sent_again() {
    let fake = FakeLlm::start(vec![
        Answer::Stream {
            chunks: vec![
                json!({"choices": [{"index": 0, "delta": {"content": "Your refund "}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": "is"}}]}),
            ],
            gap: Duration::from_millis(5),
            cut: true,
        },
        Answer::streamed_text(&["a second answer the customer must not see"]),
    ])
    .await;
    let client = OpenAiClient::new(settings(&fake)).unwrap();
    let pieces = Pieces::default();
    match client.complete(&question(), Some(&pieces)).await {
        Err(LlmError::Unavailable { message, .. }) => {
            assert!(message.contains("ended before the answer"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(*pieces.0.lock().unwrap(), ["Your refund ", "is"]);
    assert_eq!(
        fake.received().len(),
        1,
        "a shown answer was asked for again"
    );
}

#[tokio::test]
async fn a_server_that_is_not_there_is_unavailable_and_bad_settings_are_named() {
    let port = crate::helpers::free_port();
    let client = OpenAiClient::new(LlmSettings {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        max_retries: 1,
        retry_base_ms: 10,
        ..LlmSettings::default()
    })
    .unwrap();
    match client.complete(&question(), None).await {
        Err(LlmError::Unavailable { attempts, message }) => {
            assert_eq!(attempts, 2);
            assert!(message.to_lowercase().contains("connect"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    for (base_url, model) in [
        ("", "m"),
        ("http://127.0.0.1:1/v1", ""),
        ("127.0.0.1:8000", "m"),
    ] {
        let error = OpenAiClient::new(LlmSettings {
            base_url: base_url.into(),
            model: model.into(),
            ..LlmSettings::default()
        })
        .unwrap_err();
        assert!(matches!(error, LlmError::Config(_)), "{error:?}");
    }
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_off_not_read_into_memory() {
    let fake = FakeLlm::start(vec![
        Answer::Endless { status: 200 },
        Answer::Endless { status: 200 },
        Answer::Endless { status: 503 },
        Answer::text("Back."),
    ])
    .await;
    // The size cap, not a deadline, must end these: the event parser of an unoptimised build
    // can take over a second on a megabyte without a line break.
    let client = OpenAiClient::new(LlmSettings {
        first_token_timeout_ms: 15_000,
        request_timeout_ms: 30_000,
        ..settings(&fake)
    })
    .unwrap();
    let started = Instant::now();
    for sink in [
        Some(&Pieces::default() as &dyn switchboard::llm::TextSink),
        None,
    ] {
        match client.complete(&question(), sink).await {
            Err(LlmError::Protocol(message)) => {
                assert!(message.contains("larger than"), "{message}")
            }
            other => panic!("expected the answer cut off, got {other:?}"),
        }
    }
    println!("two endless answers cut off in {:?}", started.elapsed());
    // An error status whose body never ends still ends the attempt, which is retried.
    let completion = client.complete(&question(), None).await.unwrap();
    assert_eq!(completion.content, "Back.");
    assert_eq!(completion.attempts, 2);
}
