//! The builtin assistant with the real model, the demo shop's intents and knowledge base:
//! ingest and re-ingest, retrieval, classification with out-of-scope, multi-turn slot filling,
//! language switching and handoff, through the real router and web chat where it matters.
//!
//! The model must be in `models/all-MiniLM-L6-v2` (scripts/test fetches it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use switchboard::assistant::builtin::BuiltinAssistant;
use switchboard::assistant::{Action, Assistant, Turn};
use switchboard::config::Settings;
use switchboard::knowledge::language::LanguageDetector;
use switchboard::knowledge::{EdgeIndex, KnowledgeBase, KnowledgeSettings, SearchMode};
use tokio::sync::OnceCell;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Visitor, open_socket_with, options_with, same_origin};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn assistant_settings(data_dir: &Path) -> Settings {
    let mut settings = Settings {
        data_dir: data_dir.to_path_buf(),
        ..Settings::default()
    };
    settings.assistant.kind = "builtin".into();
    settings.assistant.model_dir = repo("models/all-MiniLM-L6-v2");
    settings.assistant.intents_file = repo("config/demo/intents.toml");
    settings.assistant.responses_file = repo("config/demo/responses.toml");
    settings.knowledge.ingest_dirs = vec![repo("config")];
    settings
}

/// One assistant for the whole run: it holds no conversation state, and loading the model and
/// training once keeps the suite quick.
pub(crate) async fn shared_assistant() -> Arc<BuiltinAssistant> {
    static ASSISTANT: OnceCell<(Arc<BuiltinAssistant>, tempfile::TempDir)> = OnceCell::const_new();
    ASSISTANT
        .get_or_init(|| async {
            let dir = tempfile::tempdir().expect("temp dir");
            let assistant = BuiltinAssistant::build(&assistant_settings(dir.path()))
                .await
                .expect("the builtin assistant starts (is the model in models/?)");
            (Arc::new(assistant), dir)
        })
        .await
        .0
        .clone()
}

/// The app on `backend` with the shared builtin assistant.
async fn assistant_app(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        |_| {},
        options_with(Some(shared_assistant().await), vec![]),
    )
    .await
}

fn turn(text: &str, state: &Value) -> Turn {
    Turn {
        conversation_id: "c-1".into(),
        contact_id: "p-1".into(),
        channel: "test".into(),
        verified: false,
        text: text.into(),
        language: None,
        state: state.clone(),
        shop: None,
        draft: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_embeddings_put_similar_sentences_closer() {
    let dir = repo("models/all-MiniLM-L6-v2");
    let embedder = switchboard::knowledge::embed::LocalEmbedder::load(&dir).expect("model loads");
    use switchboard::knowledge::Embedder;
    assert_eq!(embedder.dimension(), 384);
    let texts = [
        "How long does delivery take?",
        "When will my parcel arrive?",
        "Which payment methods do you accept?",
        "The cat sleeps on the sofa all afternoon.",
    ];
    let vectors = embedder
        .embed(texts.iter().map(|text| text.to_string()).collect())
        .await
        .unwrap();
    let cosine = switchboard::knowledge::embed::cosine;
    for vector in &vectors {
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
    }
    let similar = cosine(&vectors[0], &vectors[1]);
    assert!(
        similar > cosine(&vectors[0], &vectors[2]),
        "delivery vs payment"
    );
    assert!(
        similar > cosine(&vectors[0], &vectors[3]),
        "delivery vs cat"
    );
    assert!(similar > 0.5, "{similar}");
    // Batched with longer texts (padding) or alone: the same vector.
    let alone = embedder.embed_one(texts[1]).await.unwrap();
    assert!(cosine(&alone, &vectors[1]) > 0.9999);
    // Concurrent callers get their own vectors back.
    let embedder = Arc::new(embedder);
    let handles: Vec<_> = texts
        .iter()
        .map(|text| {
            let embedder = embedder.clone();
            let text = text.to_string();
            tokio::spawn(async move { embedder.embed_one(&text).await.unwrap() })
        })
        .collect();
    for (handle, expected) in handles.into_iter().zip(&vectors) {
        assert!(cosine(&handle.await.unwrap(), expected) > 0.9999);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_replaces_articles_and_retrieval_cites_them() {
    let assistant = shared_assistant().await;
    let embedder = assistant.knowledge().embedder().clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let index = EdgeIndex::open(
        &dir.path().join("kb"),
        embedder.dimension(),
        embedder.name(),
        60.0,
    )
    .expect("index opens");
    let knowledge = KnowledgeBase::new(
        Arc::new(index),
        embedder,
        Arc::new(LanguageDetector::default()),
        KnowledgeSettings::default(),
    );
    let articles = dir.path().join("articles");
    std::fs::create_dir_all(&articles).unwrap();
    let article = articles.join("gift-cards.md");
    std::fs::write(
        &article,
        "# Gift cards\n\n## Validity\n\nGift cards are valid for two years from purchase.\n\n## Balance\n\nCheck the balance of a gift card on the account page.\n",
    )
    .unwrap();
    std::fs::write(
        articles.join("opening-hours.html"),
        "<h1>Opening hours</h1><p>The showroom in Girona opens Monday to Saturday from 10:00 to 20:00.</p>",
    )
    .unwrap();
    let report = knowledge.ingest_path(&articles).await.expect("ingests");
    assert_eq!((report.articles, report.chunks), (2, 3));
    assert_eq!(knowledge.len().await.unwrap(), 3);

    // The same files again: nothing re-embedded, nothing duplicated.
    let again = knowledge.ingest_path(&articles).await.expect("ingests");
    assert_eq!((again.articles, again.unchanged), (0, 2));
    assert_eq!(knowledge.len().await.unwrap(), 3);

    for mode in [SearchMode::Lexical, SearchMode::Dense, SearchMode::Hybrid] {
        let passages = knowledge
            .search("how long is a gift card valid?", Some("en"), mode, 3)
            .await
            .unwrap();
        assert_eq!(passages[0].title, "Gift cards", "{mode:?}: {passages:?}");
        assert_eq!(passages[0].section, "Validity");
        assert!(passages[0].source.ends_with("gift-cards.md"));
    }

    // An edited article replaces its old version: one chunk fewer, old text gone.
    std::fs::write(
        &article,
        "# Gift cards\n\nGift cards never expire and can be used online and in the showroom.\n",
    )
    .unwrap();
    let edited = knowledge.ingest_path(&article).await.expect("ingests");
    assert_eq!((edited.articles, edited.chunks), (1, 1));
    assert_eq!(knowledge.len().await.unwrap(), 2);
    let passages = knowledge
        .search("do gift cards expire?", Some("en"), SearchMode::Hybrid, 3)
        .await
        .unwrap();
    assert!(passages[0].text.contains("never expire"), "{passages:?}");
    assert!(passages.iter().all(|p| !p.text.contains("two years")));

    // Bad input is refused with a reason.
    let odd = dir.path().join("notes.pdf");
    std::fs::write(&odd, "%PDF").unwrap();
    let error = knowledge.ingest_path(&odd).await.expect_err("pdf refused");
    assert!(
        error.to_string().contains("unsupported file type"),
        "{error}"
    );
    let error = knowledge
        .ingest_path(&dir.path().join("missing"))
        .await
        .expect_err("missing path");
    assert!(error.to_string().contains("missing"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_knowledge_answers_in_the_customers_language() {
    let assistant = shared_assistant().await;
    let knowledge = assistant.knowledge();
    let cases = [
        ("quant triga l'enviament a Girona?", "ca", "Enviaments"),
        ("¿qué formas de pago aceptáis?", "es", "Pagos"),
        ("how do I reset my password?", "en", "Your account"),
    ];
    for (question, language, title) in cases {
        let passages = knowledge
            .search(question, None, SearchMode::Hybrid, 3)
            .await
            .unwrap();
        assert_eq!(passages[0].language, language, "{question}: {passages:?}");
        assert_eq!(passages[0].title, title, "{question}: {passages:?}");
        let confidence = passages
            .iter()
            .map(|passage| passage.confidence())
            .fold(0.0f32, f32::max);
        assert!(
            confidence >= 0.45,
            "{question}: confident enough to answer: {passages:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_intents_and_rejects_out_of_scope() {
    let assistant = shared_assistant().await;
    let cases = [
        ("I want a refund", Some("refund")),
        ("quiero cancelar mi pedido", Some("cancel_order")),
        ("on és el meu paquet?", Some("track_order")),
        ("let me talk to a human", Some("talk_to_person")),
        ("what is the capital of Italy", None),
        ("recommend me a song to listen to", None),
    ];
    for (text, expected) in cases {
        let reply = assistant.respond(&turn(text, &json!({}))).await.unwrap();
        let state = reply.state.expect("state");
        let intent = state["last_intent"].as_str();
        match expected {
            Some(intent_name) => assert_eq!(intent, Some(intent_name), "{text}: {state}"),
            // Out of scope: no intent starts; the assistant says it is unsure.
            None => {
                assert!(state["flow"].is_null(), "{text}: {state}");
                assert_eq!(state["low_confidence"], 1, "{text}: {state}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_request_produces_a_task_action() {
    let assistant = shared_assistant().await;
    let reply = assistant
        .respond(&turn("please cancel order 55512", &json!({})))
        .await
        .unwrap();
    assert_eq!(reply.actions.len(), 1, "{reply:?}");
    assert_eq!(
        reply.actions[0],
        Action::OpenTask {
            kind: "cancellation".into(),
            order_id: Some("55512".into()),
            details: serde_json::Map::new(),
        }
    );
    assert!(reply.messages.is_empty(), "{:?}", reply.messages);

    // "forget it" in the middle of collecting drops the flow, in Spanish too.
    let first = assistant
        .respond(&turn("quiero un reembolso", &json!({})))
        .await
        .unwrap();
    let state = first.state.unwrap();
    assert_eq!(state["flow"]["awaiting"], "order_number");
    let dropped = assistant.respond(&turn("déjalo", &state)).await.unwrap();
    assert!(dropped.actions.is_empty());
    assert!(dropped.state.unwrap()["flow"].is_null());
    assert_eq!(
        dropped.messages,
        ["Sin problema, lo dejamos. ¿Te puedo ayudar con algo más?"]
    );
}

/// "hola" is Spanish and Catalan alike. On a first message the language the channel reports
/// for the person settles it when the text fits that language, and is passed over when the
/// text rules it out; once the conversation has a language, an unsure message keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsure_first_message_follows_the_channels_language_where_it_fits() {
    let assistant = shared_assistant().await;
    let greeting = |hint: Option<&str>, state: Value| {
        let mut turn = turn("hola", &state);
        turn.language = hint.map(str::to_string);
        turn
    };
    for (hint, expected) in [("es-ES", "es"), ("es", "es"), ("ca", "ca"), ("ca-ES", "ca")] {
        let reply = assistant
            .respond(&greeting(Some(hint), json!({})))
            .await
            .unwrap();
        assert_eq!(
            reply.language.as_deref(),
            Some(expected),
            "{hint}: {reply:?}"
        );
    }
    let english = assistant
        .respond(&greeting(Some("en-US"), json!({})))
        .await
        .unwrap();
    // Spanish or Catalan, as the detector leans: not English.
    assert!(
        matches!(english.language.as_deref(), Some("es" | "ca")),
        "{english:?}"
    );
    let kept = assistant
        .respond(&greeting(Some("ca"), json!({"language": "es"})))
        .await
        .unwrap();
    assert_eq!(kept.language.as_deref(), Some("es"), "{kept:?}");
}

/// The browser's `Accept-Language` reaches the assistant: a greeting from a browser in Spanish
/// is answered in Spanish, and the conversation keeps that language.
async fn greets_in_the_browsers_language(backend: Backend) {
    let app = assistant_app(backend).await;
    let url = app.ws_url();
    let origin = same_origin(&url);
    let socket = open_socket_with(
        &url,
        &[
            ("origin", &origin),
            ("accept-language", "es-ES,es;q=0.9,ca;q=0.8,en;q=0.7"),
        ],
    )
    .await;
    let mut visitor = Visitor::greet(socket, json!({"type": "hello"})).await;
    let greeting = chat(&mut visitor, "1", "hola").await;
    assert!(greeting.starts_with("¡Hola! Puedo"), "{greeting}");
    let conversation_id = app.conversation_of(&visitor).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.language.as_deref(), Some("es"));
}

both_backends!(browser_language, greets_in_the_browsers_language);

async fn chat(visitor: &mut Visitor, id: &str, text: &str) -> String {
    visitor.send_and_ack(id, text).await;
    visitor.bot_reply().await["text"]
        .as_str()
        .expect("text")
        .to_string()
}

async fn slot_filling_over_turns(backend: Backend) {
    let app = assistant_app(backend).await;
    let mut visitor = app.visitor().await;
    let asked = chat(&mut visitor, "1", "I want a refund").await;
    assert!(asked.contains("order number"), "{asked}");
    // A question in the middle is answered, then the order number is asked for again.
    let answer = chat(&mut visitor, "1b", "how long does shipping take?").await;
    assert!(answer.contains("Source: Shipping"), "{answer}");
    let again = visitor.bot_reply().await["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(again.contains("order number"), "{again}");
    let invalid = chat(&mut visitor, "2", "I don't remember, sorry").await;
    assert!(invalid.contains("4 to 10 digits"), "{invalid}");
    // The order number given, the shop is asked before the reason is: this visitor is linked
    // to no shop customer, so the order is not theirs, and they are told at once.
    let refused = chat(&mut visitor, "3", "it's 1042").await;
    assert_eq!(
        refused,
        "I can't find order 1042 among your orders. Please check the number, or ask to talk to a person."
    );
    // The request is over: the next message starts afresh.
    let asked = chat(&mut visitor, "4", "I want a refund").await;
    assert!(asked.contains("order number"), "{asked}");
}

both_backends!(multi_turn_slot_filling, slot_filling_over_turns);

async fn language_follows_the_customer(backend: Backend) {
    let app = assistant_app(backend).await;
    let mut visitor = app.visitor().await;
    let catalan = chat(&mut visitor, "1", "Quant triga l'enviament a Girona?").await;
    assert!(catalan.contains("Font: Enviaments"), "{catalan}");
    assert!(catalan.contains("1 dia feiner"), "{catalan}");
    let spanish = chat(&mut visitor, "2", "¿Y cuánto cuesta el envío a Madrid?").await;
    assert!(spanish.contains("Fuente: Envíos"), "{spanish}");
    let english = chat(&mut visitor, "3", "What payment methods do you accept?").await;
    assert!(english.contains("Source: Payment"), "{english}");
    let conversation_id = app.conversation_of(&visitor).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.language.as_deref(), Some("en"));
}

both_backends!(language_switching, language_follows_the_customer);

async fn hands_over_with_a_summary(backend: Backend) {
    let app = assistant_app(backend).await;
    let mut visitor = app.visitor().await;
    chat(&mut visitor, "1", "I want a refund").await;
    let handed = chat(&mut visitor, "2", "let me talk to a human").await;
    assert!(handed.contains("colleague"), "{handed}");
    let conversation_id = app.conversation_of(&visitor).await;
    let conversation = app.store().conversation(&conversation_id).await.unwrap();
    assert_eq!(conversation.state.status.as_str(), "queued");
    let handoff = crate::helpers::handoff_event(app.store(), &conversation_id).await;
    assert_eq!(handoff.data["reason"], "customer_request");
    let summary = &handoff.data["summary"];
    // The request in progress goes with it (its order number was still to come).
    assert_eq!(summary["intent"], "refund");
    assert_eq!(summary["slots"], json!({}));
    assert_eq!(summary["language"], "en");
}

both_backends!(handoff_on_request, hands_over_with_a_summary);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsure_twice_in_a_row_hands_over() {
    let assistant = shared_assistant().await;
    let first = assistant
        .respond(&turn("what is the capital of Italy", &json!({})))
        .await
        .unwrap();
    assert!(first.handoff.is_none());
    assert!(
        first.messages[0].contains("not sure"),
        "{:?}",
        first.messages
    );
    let second = assistant
        .respond(&turn(
            "write me a poem about the sea",
            &first.state.unwrap(),
        ))
        .await
        .unwrap();
    let handoff = second.handoff.expect("handed over");
    assert_eq!(handoff.reason, "low_confidence");
    assert_eq!(handoff.summary["reason"], "low_confidence");
}

fn switchboard() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWITCHBOARD__LOG__LEVEL", "warn");
    command
}

fn last_line_figures(output: std::process::Output) -> std::collections::HashMap<String, f64> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "eval failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("output").to_string();
    last.split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn eval_intents_runs_on_small_data() {
    let report = tempfile::tempdir().unwrap();
    let output = switchboard()
        .args([
            "eval",
            "intents",
            "--train",
            "tests/data/intents_train.csv",
            "--test",
            "tests/data/intents_test.csv",
            "--report",
        ])
        .arg(report.path())
        .output()
        .expect("runs");
    let figures = last_line_figures(output);
    // The report names every mistake: as many rows as the accuracy leaves wrong.
    let tests = std::fs::read_to_string("tests/data/intents_test.csv").unwrap();
    let examples = csv::Reader::from_reader(tests.as_bytes()).records().count();
    let mistakes = std::fs::read_to_string(report.path().join("mistakes.csv")).unwrap();
    let wrong = mistakes.lines().count() - 1;
    assert_eq!(
        wrong,
        (examples as f64 * (1.0 - figures["accuracy"])).round() as usize,
        "{mistakes}"
    );
    assert!(mistakes.starts_with("text,language,expected,predicted,confidence"));
    let intents = std::fs::read_to_string(report.path().join("intents.csv")).unwrap();
    assert!(intents.starts_with("intent,precision,recall,f1,support,predicted"));
    let page = std::fs::read_to_string(report.path().join("confusion.html")).unwrap();
    assert!(page.contains("<table id=\"confusion\">"), "{page}");
    for name in [
        "accuracy",
        "macro_f1",
        "in_scope_accuracy",
        "oos_recall",
        "accuracy_ca",
        "accuracy_es",
    ] {
        assert!(figures.contains_key(name), "{name} in {figures:?}");
    }
    assert!(figures["accuracy"] >= 0.7, "{figures:?}");

    let output = switchboard()
        .args(["eval", "intents", "--train", "tests/data/intents_train.csv"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--test"));
}

#[test]
fn eval_retrieval_runs_on_small_data() {
    let report = tempfile::tempdir().unwrap();
    let output = switchboard()
        .args([
            "eval",
            "retrieval",
            "--corpus",
            "tests/data/faq_corpus.json",
            "--queries",
            "tests/data/faq_queries.json",
            "--report",
        ])
        .arg(report.path())
        .output()
        .expect("runs");
    let figures = last_line_figures(output);
    // One row per query; the queries found first count as hybrid Recall@1.
    let queries = std::fs::read_to_string(report.path().join("queries.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(queries.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let firsts = rows.iter().filter(|row| &row[2] == "1").count();
    assert!(
        (firsts as f64 / rows.len() as f64 - figures["hybrid_recall1"]).abs() < 1e-3,
        "{queries}"
    );
    assert!(rows.iter().all(|row| !row[3].is_empty()), "{queries}");
    for method in ["lexical", "dense", "hybrid"] {
        for metric in ["mrr10", "recall1", "recall5"] {
            assert!(
                figures.contains_key(&format!("{method}_{metric}")),
                "{figures:?}"
            );
        }
    }
    assert!(
        figures["hybrid_mrr10"] >= figures["lexical_mrr10"].max(figures["dense_mrr10"]) - 0.05,
        "{figures:?}"
    );
}

/// A server speaking the OpenAI embeddings wire format: vectors derived from the input, the
/// bearer token checked, `data` returned out of order with `index` as real servers may.
/// `bench router --assistant builtin --messages FILE`: customer messages through the demo
/// shop's assistant. A visitor who asks for a person is handed over and must start a new
/// conversation; one that waited for the bot instead would never be answered, and the run
/// would report the visitor's error.
#[test]
fn bench_router_sends_customer_messages_through_the_builtin_assistant() {
    let dir = tempfile::tempdir().unwrap();
    // Every other message asks for a person, so that each visitor is handed over within two
    // turns, however slowly a busy machine answers.
    let messages = dir.path().join("messages.csv");
    std::fs::write(
        &messages,
        "text,intent\n\
         How long does delivery take to Girona?,question\n\
         I want to talk to a person please,talk_to_person\n\
         hola buenos días,greeting\n\
         quiero hablar con una persona,talk_to_person\n",
    )
    .unwrap();
    let output = switchboard()
        .args([
            "--config",
            "config/switchboard.toml",
            "bench",
            "router",
            "--assistant",
            "builtin",
            "--visitors",
            "3",
            "--seconds",
            "4",
            "--messages",
        ])
        .arg(&messages)
        .env("TMPDIR", dir.path())
        .output()
        .expect("runs");
    let figures = last_line_figures(output);
    assert_eq!(figures["errors"], 0.0, "{figures:?}");
    assert!(figures["msgs_per_s"] > 0.0, "{figures:?}");
    // What the answers cost: the process's CPU over the window, per answer.
    assert!(
        figures.get("cpu_us_per_msg").is_some_and(|cpu| *cpu > 0.0),
        "{figures:?}"
    );
    assert!(
        figures["conversations_left_bot"] >= 1.0,
        "asking for a person hands the conversation over: {figures:?}"
    );
}

async fn fake_embeddings_server() -> String {
    use axum::{Json, Router, http::HeaderMap, http::StatusCode, routing::post};
    async fn embeddings(headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"message": "bad key"}})),
            );
        }
        let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap_or_default();
        if inputs.iter().any(|text| text == "fail") {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": "boom"}})),
            );
        }
        let mut data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": [text.len() as f32, 1.0, 0.0]}))
            .collect();
        data.reverse();
        (
            StatusCode::OK,
            Json(json!({"object": "list", "data": data, "model": body["model"]})),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new().route("/v1/embeddings", post(embeddings)),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_embedder_speaks_the_wire_format() {
    use switchboard::knowledge::Embedder;
    use switchboard::knowledge::embed::{HttpEmbedder, HttpEmbedderConfig};
    let base_url = fake_embeddings_server().await;
    let config = |key: &str| HttpEmbedderConfig {
        base_url: base_url.clone(),
        model: "test-model".into(),
        api_key: Some(key.into()),
        timeout: std::time::Duration::from_secs(5),
    };
    let embedder = HttpEmbedder::connect(config("sk-test"))
        .await
        .expect("connects");
    assert_eq!(embedder.dimension(), 3);
    assert_eq!(embedder.name(), "http:test-model");
    let vectors = embedder
        .embed(vec!["abcd".into(), "ab".into()])
        .await
        .expect("embeds");
    // In input order, unit length.
    let expected = |length: f32| {
        let norm = (length * length + 1.0).sqrt();
        vec![length / norm, 1.0 / norm, 0.0]
    };
    assert_eq!(vectors, vec![expected(4.0), expected(2.0)]);
    let error = embedder
        .embed(vec!["fail".into()])
        .await
        .expect_err("server error");
    assert!(error.to_string().contains("500"), "{error}");
    let error = HttpEmbedder::connect(config("wrong"))
        .await
        .err()
        .expect("bad key refused");
    assert!(error.to_string().contains("401"), "{error}");
}
