//! `switchboard bench ...`: load generators that print their figures.
//!
//! Each benchmark prints a human-readable report and, as its last line, the headline figures
//! as space-separated `name=value` pairs, so scripts can pick them up.

pub mod assistant;
pub mod baseline;
pub mod console;
pub mod customers;
#[cfg(feature = "channel-email")]
pub mod email;
mod idle;
pub mod llm;
pub mod router;
pub mod shop_chat;
pub mod soak;
pub mod tasks;

use clap::Subcommand;

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load the conversation router over real WebSockets from many simulated web chat visitors.
    Router(router::RouterBench),
    /// Answer latency and throughput of the builtin assistant with a large knowledge base.
    Assistant(assistant::AssistantBench),
    /// LLM mode's overhead: the same prompts straight to the model server and through
    /// Switchboard's web chat, time to first token and total time side by side.
    Llm(llm::LlmBench),
    /// Create tasks through the REST API over HTTP, idempotency keys on.
    Tasks(tasks::TasksBench),
    /// Agents' live queue feeds while the router is under load: delivery latency, and the
    /// router's throughput beside the same run without agents.
    Console(console::ConsoleBench),
    /// A busy support inbox against the mail peer (tests/peers/mail): mails/s ingested and
    /// answered, p50/p99 from the MX's acceptance to the answer in the customer's inbox, memory.
    #[cfg(feature = "channel-email")]
    Email(email::EmailBench),
    /// A steady mix of chat, API calls and idle sockets for minutes: memory, descriptors and
    /// p99 at start and end, so leaks and drift show.
    Soak(soak::SoakBench),
}

pub async fn run(command: BenchCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        BenchCommand::Router(options) => router::run(options, settings).await,
        BenchCommand::Assistant(options) => assistant::run(options, settings).await,
        BenchCommand::Llm(options) => llm::run(options, settings).await,
        BenchCommand::Tasks(options) => tasks::run(options, settings).await,
        BenchCommand::Console(options) => console::run(options, settings).await,
        #[cfg(feature = "channel-email")]
        BenchCommand::Email(options) => email::run(options, settings).await,
        BenchCommand::Soak(options) => soak::run(options).await,
    }
}

/// Latency percentiles from a histogram of microseconds, in milliseconds.
pub fn percentile_ms(histogram: &hdrhistogram::Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// The CPU time this process has used so far, all threads together (`None` where the platform
/// has no such clock).
pub fn process_cpu() -> Option<std::time::Duration> {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        Some(std::time::Duration::new(
            now.tv_sec.try_into().ok()?,
            now.tv_nsec.try_into().ok()?,
        ))
    }
    #[cfg(not(unix))]
    None
}

/// Raise the open-files limit to its hard maximum: thousands of sockets need it.
pub fn raise_fd_limit() -> u64 {
    raise_fd_limit_to(0)
}

/// [`raise_fd_limit`], first lifting the hard limit to `wanted` when it is lower and the
/// process may (root may, up to the kernel's `fs.nr_open`).
pub fn raise_fd_limit_to(wanted: u64) -> u64 {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get()
        && hard < wanted
        && let Err(error) = rlimit::Resource::NOFILE.set(wanted, wanted)
    {
        eprintln!("could not raise the open files hard limit to {wanted}: {error}");
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            eprintln!("could not raise the open files limit: {error}");
            0
        }
    }
}
