//! The agent console: the people who take over from the bot and the back-office staff who
//! work tasks, in the browser, served by the binary itself.
//!
//! - [`accounts`]: roles, argon2id passwords, sessions and CSRF tokens, sign-in limits;
//! - [`teams`] and [`hours`]: teams, their queues, members, assignment rule and business hours
//!   (the router asks them whether people are there when the bot hands over);
//! - [`work`]: what agents do to conversations (claim, assign, transfer, hand back, resolve,
//!   reply, notes, labels), each checked against who may do it, then done through the router,
//!   which alone moves ownership;
//! - [`contacts`]: search, a contact's 360-degree view, merging two contacts;
//! - [`admin`]: people, teams, API keys, canned replies and channels, for admins;
//! - [`assign`]: automatic assignment of queued conversations to online agents;
//! - [`feed`]: the queue's live feed, resumable, for every console of the process;
//! - [`reports`]: figures computed from the conversation and task events;
//! - [`http`]: the pages, their assets and the JSON endpoints under `/console`;
//! - [`cli`]: `switchboard user create|list`.

pub mod accounts;
pub mod admin;
pub mod assign;
pub mod auth;
pub mod cli;
pub mod contacts;
pub mod feed;
pub mod hours;
pub mod http;
mod pages;
pub mod reports;
pub mod teams;
pub mod work;

use std::sync::Arc;

use serde::Deserialize;

use crate::events::EventBus;
use crate::router::Router;
use crate::store::console::TeamRow;
use crate::store::{Store, StoreError, new_id, now_ms};
use crate::workflow::WorkflowService;

pub use accounts::{Role, Staff};
pub use teams::Teams;

/// `[console]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Hours a console session lasts.
    pub session_hours: u64,
    /// Whether the session cookie is marked Secure: "auto" (when http.public_url is https),
    /// "always" or "never".
    pub secure_cookies: String,
    /// Sign-in attempts allowed per minute for one account, and from one client address.
    pub login_attempts_per_account: u32,
    pub login_attempts_per_address: u32,
    /// Seconds a queued conversation may wait for its first answer from a person before the
    /// queue shows it as late.
    pub first_response_target_secs: u64,
    /// Seconds a customer's unanswered message may wait before the queue shows it as late.
    pub waiting_target_secs: u64,
    /// Ask customers to rate a conversation when it is resolved.
    pub satisfaction: bool,
    /// Automatic assignment: how often queues are looked at, the most conversations an agent
    /// is given at once, and how long after their console was last seen an agent still
    /// counts as online.
    pub assign_interval_ms: u64,
    pub max_conversations_per_agent: u32,
    pub online_timeout_secs: u64,
}

impl Default for ConsoleSettings {
    fn default() -> ConsoleSettings {
        ConsoleSettings {
            session_hours: 12,
            secure_cookies: "auto".into(),
            login_attempts_per_account: 5,
            login_attempts_per_address: 30,
            first_response_target_secs: 300,
            waiting_target_secs: 120,
            satisfaction: true,
            assign_interval_ms: 2000,
            max_conversations_per_agent: 5,
            online_timeout_secs: 90,
        }
    }
}

/// Why the console refused or failed; mapped to `{"error": {"code", "message"}}` at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("sign in first")]
    Unauthenticated,
    #[error("wrong email or password")]
    BadCredentials,
    #[error("too many sign-in attempts, wait a minute")]
    RateLimited,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { code: &'static str, what: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Workflow(#[from] crate::workflow::WorkflowError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl ConsoleError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConsoleError {
        ConsoleError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> ConsoleError {
        ConsoleError::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }
}

pub(crate) fn new_team(name: &str) -> TeamRow {
    TeamRow {
        id: new_id(),
        name: name.to_string(),
        restricted: false,
        assignment: "manual".into(),
        hours: "{}".into(),
        out_of_hours: "queue".into(),
        last_assigned: None,
        created_at: now_ms(),
    }
}

/// The console's service: accounts, teams, and the conversation work that goes through the
/// router.
pub struct Console {
    pub store: Store,
    pub router: Arc<Router>,
    pub bus: Arc<dyn EventBus>,
    pub workflow: Arc<WorkflowService>,
    pub teams: Arc<Teams>,
    pub channels: Arc<crate::channels::Channels>,
    pub settings: ConsoleSettings,
    pub feed: Arc<feed::Feed>,
    login_limits: accounts::LoginLimits,
    secure_cookies: bool,
    default_queue: String,
}

impl Console {
    /// The teams, loaded, with the router's default queue among them (every handoff lands in
    /// a team's queue).
    pub async fn load_teams(store: &Store, default_queue: &str) -> Result<Arc<Teams>, StoreError> {
        store.ensure_team(&new_team(default_queue)).await?;
        let teams = Arc::new(Teams::default());
        teams.reload(store).await?;
        Ok(teams)
    }

    pub fn new(parts: ConsoleParts) -> Arc<Console> {
        let secure_cookies = match parts.settings.secure_cookies.as_str() {
            "always" => true,
            "never" => false,
            _ => parts.public_url.starts_with("https://"),
        };
        let feed = feed::Feed::start(
            parts.store.clone(),
            parts.bus.clone(),
            parts.router.cached_conversations(),
        );
        Arc::new(Console {
            login_limits: accounts::LoginLimits::new(
                parts.settings.login_attempts_per_account,
                parts.settings.login_attempts_per_address,
            ),
            store: parts.store,
            router: parts.router,
            bus: parts.bus,
            workflow: parts.workflow,
            teams: parts.teams,
            channels: parts.channels,
            settings: parts.settings,
            feed,
            secure_cookies,
            default_queue: parts.default_queue,
        })
    }

    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    pub fn default_queue(&self) -> &str {
        &self.default_queue
    }
}

/// What the console is built from.
pub struct ConsoleParts {
    pub store: Store,
    pub router: Arc<Router>,
    pub bus: Arc<dyn EventBus>,
    pub workflow: Arc<WorkflowService>,
    pub teams: Arc<Teams>,
    pub channels: Arc<crate::channels::Channels>,
    pub settings: ConsoleSettings,
    pub public_url: String,
    pub default_queue: String,
}
