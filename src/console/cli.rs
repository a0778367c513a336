//! `switchboard user create|list`: console accounts from the command line, on the configured
//! database (the first admin is made this way). The password is read from the environment
//! variable named by `--password-env`, or from standard input, never from the command line.

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;

use super::accounts::{NewUser, Role};
use super::{Console, ConsoleParts};
use crate::config::Settings;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a console account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// agent, backoffice or admin.
        #[arg(long)]
        role: String,
        /// Back-office roles, comma-separated (finance,logistics).
        #[arg(long, default_value = "")]
        roles: String,
        /// Teams, comma-separated (created if missing).
        #[arg(long, default_value = "")]
        teams: String,
        /// Read the password from this environment variable instead of standard input.
        #[arg(long)]
        password_env: Option<String>,
        /// Succeed without changing anything when the account exists.
        #[arg(long)]
        if_missing: bool,
    },
    /// List console accounts.
    List,
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

pub async fn run(command: UserCommand, settings: Settings) -> anyhow::Result<()> {
    let store = crate::app::open_store(&settings, 2).await?;
    match command {
        UserCommand::List => {
            for user in store.users().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}{}",
                    user.id,
                    user.email,
                    user.role,
                    user.roles,
                    user.name,
                    if user.disabled_at.is_some() {
                        "\t(disabled)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        UserCommand::Create {
            email,
            name,
            role,
            roles,
            teams,
            password_env,
            if_missing,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role must be agent, backoffice or admin, not {role:?}")
            })?;
            let normalised = switchboard_connector::normalise_email(&email);
            if if_missing && store.user_by_email(&normalised).await?.is_some() {
                println!("{normalised} exists; nothing changed");
                return Ok(());
            }
            let password = match password_env {
                Some(variable) => std::env::var(&variable)
                    .with_context(|| format!("environment variable {variable} is not set"))?,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("reading the password from standard input")?;
                    text.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let console = console_for_tools(store, &settings).await?;
            let user = console
                .create_user(NewUser {
                    email,
                    name,
                    password,
                    role,
                    roles: list(&roles),
                    teams: list(&teams),
                })
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            println!("created {} ({}) id {}", user.email, user.role, user.id);
            Ok(())
        }
    }
}

/// A console over the store alone, for tools: no channels, no assistant.
async fn console_for_tools(
    store: Store,
    settings: &Settings,
) -> anyhow::Result<std::sync::Arc<Console>> {
    use std::sync::Arc;
    let teams = Console::load_teams(&store, &settings.router.default_queue).await?;
    let channels = Arc::new(crate::channels::Channels::default());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let bus: Arc<dyn crate::events::EventBus> = Arc::new(crate::events::LocalBus::default());
    let delivery = crate::outbox::Delivery::new(
        store.clone(),
        channels.clone(),
        metrics.clone(),
        bus.clone(),
        settings.outbox.clone(),
    );
    let workflow = crate::workflow::WorkflowService::open(store.clone(), &settings.workflow)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let router = crate::router::Router::new(crate::router::RouterParts {
        store: store.clone(),
        assistant: Arc::new(crate::assistant::EchoAssistant),
        actions: None,
        shop: None,
        channels: channels.clone(),
        metrics,
        delivery,
        bus: bus.clone(),
        settings: settings.router.clone(),
        handoff: None,
    });
    Ok(Console::new(ConsoleParts {
        store,
        router,
        bus,
        workflow,
        teams,
        channels,
        settings: settings.console.clone(),
        public_url: settings.http.public_url.clone(),
        default_queue: settings.router.default_queue.clone(),
    }))
}
