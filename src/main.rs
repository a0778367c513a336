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
        }
    })
}
