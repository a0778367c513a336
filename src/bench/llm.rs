//! `switchboard bench llm`: what LLM mode adds to the model server's own time.
//!
//! The same customer messages go, one at a time, first straight to the model server (the
//! message alone, with a one-line system prompt, streamed) and then through Switchboard: the
//! demo shop in this process, a signed-in customer writing in the real web chat, so each turn
//! pays for the router, retrieval, redaction, the full prompt with its passages and tools, and
//! the checks. Time to first token (the first draft frame in the web chat, or the answer when
//! none came) and total time (the stored answer) are printed side by side, p50 and p99, so the
//! overhead is read as a difference; so is Switchboard's own time before the model is asked
//! (from the customer's message to the request reaching the model server, through a recording
//! proxy), which separates our work from the model's longer prompt. Turns the builtin
//! assistant answered instead are counted: its answer after a refused draft, or with no draft.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

use super::percentile_ms;
use super::shop_chat::{ModelServer, ShopChat};
use crate::config::Settings;
use crate::llm::proxy::RecordingProxy;
use crate::llm::{ChatMessage, ChatRequest, LlmProvider, OpenAiClient, TextSink};

#[derive(Debug, clap::Args)]
pub struct LlmBench {
    #[command(flatten)]
    pub server: ModelServer,
    /// Messages sent each way (the built-in list, repeated as needed).
    #[arg(long, default_value_t = 24)]
    pub messages: usize,
}

/// How many answers each way measured, and the builtin assistant's turns instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmBenchCounts {
    pub direct: u64,
    /// Answered by the model through Switchboard.
    pub through: u64,
    /// Answered by the builtin assistant instead.
    pub fallbacks: u64,
    /// Turns whose time before the model was measured.
    pub before_model: u64,
    pub requests: usize,
}

/// Questions and requests a shop's customers send, in the three languages.
const MESSAGES: [&str; 12] = [
    "How long does delivery take to Girona?",
    "Which payment methods do you accept?",
    "Can I return an opened item?",
    "When will I get my money back after a refund?",
    "¿Cuánto cuesta el envío?",
    "¿Puedo pagar con tarjeta?",
    "¿Cómo devuelvo un artículo?",
    "¿Cuándo me cobráis el pedido?",
    "Quant triga l'enviament?",
    "Com canvio el correu del meu compte?",
    "Quines formes de pagament accepteu?",
    "Puc tornar un article que va arribar trencat?",
];

/// One way's timings, in microseconds.
struct Timings {
    first_token: Histogram<u64>,
    total: Histogram<u64>,
}

impl Timings {
    fn new() -> anyhow::Result<Timings> {
        Ok(Timings {
            first_token: Histogram::new(3)?,
            total: Histogram::new(3)?,
        })
    }

    fn record(&mut self, first_token: Duration, total: Duration) -> anyhow::Result<()> {
        self.first_token
            .record(first_token.as_micros().max(1) as u64)?;
        self.total.record(total.as_micros().max(1) as u64)?;
        Ok(())
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<14} first token p50 {:>8.1} ms  p99 {:>8.1} ms   total p50 {:>8.1} ms  p99 {:>8.1} ms",
            percentile_ms(&self.first_token, 0.5),
            percentile_ms(&self.first_token, 0.99),
            percentile_ms(&self.total, 0.5),
            percentile_ms(&self.total, 0.99),
        );
    }
}

pub async fn run(options: LlmBench, settings: Settings) -> anyhow::Result<()> {
    measure(options, settings).await.map(|_| ())
}

/// Run the benchmark, print its figures, and return what it counted.
pub async fn measure(options: LlmBench, mut settings: Settings) -> anyhow::Result<LlmBenchCounts> {
    let upstream = options.server.choose(&mut settings)?;
    let wait = options.server.turn_timeout();
    let messages: Vec<&str> = MESSAGES
        .iter()
        .copied()
        .cycle()
        .take(options.messages)
        .collect();
    println!(
        "bench llm: {} messages each way on {upstream} (model {:?}), one at a time",
        messages.len(),
        settings.llm.model
    );

    // Straight to the model server, with the same client settings Switchboard uses.
    let mut direct_settings = settings.llm.clone();
    direct_settings.base_url = upstream.clone();
    direct_settings.first_token_timeout_ms = wait.as_millis() as u64;
    direct_settings.request_timeout_ms = wait.as_millis() as u64;
    let client = OpenAiClient::new(direct_settings).context("the model server's client")?;
    let mut direct = Timings::new()?;
    let ignore: Arc<dyn TextSink> = Arc::new(|_: &str| {});
    for message in &messages {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system("You answer a shop's customers briefly."),
                ChatMessage::user(*message),
            ],
            tools: Vec::new(),
            tool_choice: None,
            max_tokens: None,
        };
        let started = Instant::now();
        let completion = client
            .complete(&request, Some(ignore.as_ref()))
            .await
            .with_context(|| format!("asking the model server {message:?}"))?;
        direct.record(completion.first_token, started.elapsed())?;
    }

    // Through Switchboard: each message in a conversation of its own.
    let proxy = RecordingProxy::start(&upstream).await?;
    let shop = ShopChat::start(settings, proxy.base_url()).await?;
    let mut through = Timings::new()?;
    let mut before_model = Histogram::<u64>::new(3)?;
    let (mut refused, mut undrafted) = (0u64, 0u64);
    let measured = async {
        for message in &messages {
            let asked_before = proxy.count();
            let mut customer = shop.customer("ana@example.com").await?;
            let frames = customer.say(message, wait).await?;
            shop.end_conversation(&customer).await?;
            let total = frames
                .first_reply
                .with_context(|| format!("no answer to {message:?}"))?;
            through.record(frames.first_draft.unwrap_or(total), total)?;
            if let Some(arrived) = proxy.arrived_at(asked_before) {
                let ours = arrived.saturating_duration_since(frames.sent_at);
                before_model.record(ours.as_micros().max(1) as u64)?;
            }
            match (frames.first_draft, frames.answer_was_drafted()) {
                (_, true) => {}
                (Some(_), false) => refused += 1,
                (None, _) => undrafted += 1,
            }
        }
        anyhow::Ok(())
    }
    .await;
    // The shop is shut down before its scratch directory goes, whatever happened.
    shop.shutdown().await;
    measured?;
    let requests = proxy.count();
    let fallbacks = refused + undrafted;

    direct.print("model server");
    through.print("switchboard");
    println!(
        "switchboard before the model p50 {:>8.1} ms  p99 {:>8.1} ms (router, retrieval, redaction, prompt)",
        percentile_ms(&before_model, 0.5),
        percentile_ms(&before_model, 0.99),
    );
    let answered = through.total.len() - fallbacks;
    println!(
        "{answered} of {} answered by the model through Switchboard; the builtin assistant answered {refused} after refusing the model's answer and {undrafted} with no draft; {requests} requests reached the model server",
        messages.len()
    );
    let difference = |ours: &Histogram<u64>, theirs: &Histogram<u64>| {
        percentile_ms(ours, 0.5) - percentile_ms(theirs, 0.5)
    };
    println!(
        "direct_ttft_p50_ms={:.1} direct_ttft_p99_ms={:.1} direct_total_p50_ms={:.1} direct_total_p99_ms={:.1} switchboard_ttft_p50_ms={:.1} switchboard_ttft_p99_ms={:.1} switchboard_total_p50_ms={:.1} switchboard_total_p99_ms={:.1} overhead_ttft_p50_ms={:.1} before_model_p50_ms={:.1} before_model_p99_ms={:.1} fallbacks={fallbacks}",
        percentile_ms(&direct.first_token, 0.5),
        percentile_ms(&direct.first_token, 0.99),
        percentile_ms(&direct.total, 0.5),
        percentile_ms(&direct.total, 0.99),
        percentile_ms(&through.first_token, 0.5),
        percentile_ms(&through.first_token, 0.99),
        percentile_ms(&through.total, 0.5),
        percentile_ms(&through.total, 0.99),
        difference(&through.first_token, &direct.first_token),
        percentile_ms(&before_model, 0.5),
        percentile_ms(&before_model, 0.99),
    );
    Ok(LlmBenchCounts {
        direct: direct.total.len(),
        through: answered,
        fallbacks,
        before_model: before_model.len(),
        requests,
    })
}
