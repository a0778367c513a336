use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::app::{App, AppOptions, shutdown_signal};
use switchboard::config::Settings;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Omnichannel customer service router"
)]
struct Cli {
    /// The config file; keys can be overridden by SWITCHBOARD__SECTION__KEY variables.
    #[arg(
        long,
        global = true,
        default_value = "config/switchboard.toml",
        env = "SWITCHBOARD_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Measure performance; prints figures, the last line as name=value pairs.
    Bench {
        #[command(subcommand)]
        which: switchboard::bench::BenchCommand,
    },
    /// Manage the knowledge base (stop the server first: it holds the index open).
    Kb {
        #[command(subcommand)]
        which: KbCommand,
    },
    /// Measure the intent classifier or retrieval on labelled data; the last line printed
    /// holds the figures as name=value pairs.
    Eval {
        #[command(subcommand)]
        which: switchboard::assistant::eval::EvalCommand,
    },
    /// Back-office tasks: list, show, approve, reject (on the configured database).
    Tasks {
        #[command(subcommand)]
        which: switchboard::workflow::cli::TasksCommand,
    },
    /// API keys for the REST API under /api/v1.
    Apikey {
        #[command(subcommand)]
        which: switchboard::workflow::cli::ApikeyCommand,
    },
    /// Console accounts: `user create` makes the first admin.
    User {
        #[command(subcommand)]
        which: switchboard::console::cli::UserCommand,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Ingest a Markdown, HTML or text file, or every such file under a folder; an article
    /// ingested again replaces its previous version.
    Ingest { path: PathBuf },
}

fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn kb_ingest(path: &std::path::Path, settings: Settings) -> anyhow::Result<()> {
    use std::sync::Arc;
    use switchboard::knowledge::{KnowledgeBase, language::LanguageDetector};
    // Owner-only before the index is written into it, as `serve` does.
    switchboard::datadir::prepare(&settings.data_dir)?;
    let embedder = settings.assistant.embedder().await?;
    let knowledge = KnowledgeBase::open_embedded(
        &settings.data_dir,
        embedder,
        Arc::new(LanguageDetector::default()),
        settings.knowledge.clone(),
    )
    .await?;
    let report = knowledge.ingest_path(path).await?;
    println!(
        "ingested {} articles ({} chunks), {} unchanged; the index holds {} chunks",
        report.articles,
        report.chunks,
        report.unchanged,
        knowledge.len().await?
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.config)
        .with_context(|| format!("reading config {}", cli.config.display()))?;
    init_tracing(&settings);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => {
                let app = App::start(settings, AppOptions::default()).await?;
                shutdown_signal().await;
                app.shutdown().await;
                Ok(())
            }
            Command::Bench { which } => switchboard::bench::run(which, settings).await,
            Command::Kb {
                which: KbCommand::Ingest { path },
            } => kb_ingest(&path, settings).await,
            Command::Eval { which } => switchboard::assistant::eval::run(which, settings).await,
            Command::Tasks { which } => {
                switchboard::workflow::cli::run_tasks(which, settings).await
            }
            Command::Apikey { which } => {
                switchboard::workflow::cli::run_apikey(which, settings).await
            }
            Command::User { which } => switchboard::console::cli::run(which, settings).await,
        }
    })
}
