//! Settings: `config/switchboard.toml`, overridden by `SWITCHBOARD__SECTION__KEY` variables.
//!
//! Every key is documented in the shipped file; the defaults here match it, so a missing key
//! behaves as documented. Secrets never appear in `Debug` output.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard_connector::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Demo mode (`scripts/demo`): web chat instances with a `demo_email` sign the demo page
    /// in as that customer. Never in a deployment: whoever opens `/` would act as them.
    pub demo: bool,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub router: RouterSettings,
    pub assistant: AssistantSettings,
    /// `[llm]`: the model server of `assistant.kind = "llm"`.
    pub llm: crate::llm::LlmSettings,
    pub knowledge: KnowledgeSettings,
    pub outbox: OutboxSettings,
    pub supervisor: crate::channels::supervisor::SupervisorSettings,
    /// The `[[channel]]` tables: one per channel instance.
    pub channel: ChannelTables,
    pub workflow: crate::workflow::WorkflowSettings,
    pub console: crate::console::ConsoleSettings,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            data_dir: PathBuf::from("data"),
            demo: false,
            http: HttpSettings::default(),
            database: DatabaseSettings::default(),
            log: LogSettings::default(),
            router: RouterSettings::default(),
            assistant: AssistantSettings::default(),
            llm: crate::llm::LlmSettings::default(),
            knowledge: KnowledgeSettings::default(),
            outbox: OutboxSettings::default(),
            supervisor: Default::default(),
            channel: ChannelTables::default(),
            workflow: crate::workflow::WorkflowSettings::default(),
            console: crate::console::ConsoleSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// The address customers and platforms reach this server at (`https://shop.example`),
    /// for channels that register webhooks. Empty: not known.
    pub public_url: String,
    /// Seconds to wait for in-flight work after SIGTERM before giving up.
    pub shutdown_grace_secs: u64,
    /// A request's header must arrive within this many seconds, or the connection closes.
    pub header_read_timeout_secs: u64,
    /// Seconds a request (its body and its answer) may take; WebSockets are not bound by it.
    pub request_timeout_secs: u64,
    /// Open connections at once, WebSockets included; more are closed on accept.
    pub max_connections: usize,
    /// Open connections from one client address (0: no cap; behind a proxy every client
    /// shares the proxy's address, so set it to 0 there).
    pub max_connections_per_ip: usize,
    /// A header the trusted reverse proxy sets to the client address (`x-forwarded-for`:
    /// the last entry is taken). Empty: the TCP peer is the client.
    pub client_address_header: String,
    /// Requests per minute, and the burst above that, per API key on `/api/v1`.
    pub api_rate_per_minute: u32,
    pub api_rate_burst: u32,
    /// `/metrics` requires `Authorization: Bearer <token>` when set (never logged).
    pub metrics_token: Secret,
    /// `host:port` to serve `/metrics` on instead of the public address; empty: public.
    pub metrics_address: String,
    /// The CSP `frame-ancestors` of the pages that host the chat (the demo page): who may frame
    /// them. Every other page and API response may not be framed at all.
    pub frame_ancestors: String,
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            host: "127.0.0.1".into(),
            port: 8080,
            public_url: String::new(),
            shutdown_grace_secs: 20,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            client_address_header: String::new(),
            api_rate_per_minute: 600,
            api_rate_burst: 100,
            metrics_token: Secret::default(),
            metrics_address: String::new(),
            frame_ancestors: "'none'".into(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Empty: SQLite in `data_dir/switchboard.db`. `sqlite://PATH` or `postgres://...` otherwise.
    pub url: String,
    /// Connections in the pool: on SQLite this many readers beside the two writers; on
    /// PostgreSQL this many for scripts (the writes committed as one statement) and this many
    /// for reads and transactions, so up to twice this many server connections.
    pub max_connections: u32,
    /// SQLite's page cache per connection, in KiB (SQLite's own default is 2,000). A
    /// connection's cache fills as the database grows, so the pool holds at most
    /// `(max_connections + 2) * sqlite_cache_kib` of it (the readers and two writers).
    pub sqlite_cache_kib: u32,
}

impl Default for DatabaseSettings {
    fn default() -> DatabaseSettings {
        DatabaseSettings {
            url: String::new(),
            max_connections: 8,
            sqlite_cache_kib: 2000,
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("sqlite_cache_kib", &self.sqlite_cache_kib)
            .finish()
    }
}

/// `postgres://user:secret@host/db` shown as `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for log collectors.
    pub format: String,
    /// A tracing filter such as `info` or `switchboard=debug,info`; `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            format: "pretty".into(),
            level: "info,qdrant_edge=error".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    /// The queue a conversation goes to when the bot hands it over.
    pub default_queue: String,
    /// If the assistant takes longer than this, the customer sees a typing indicator.
    pub typing_after_ms: u64,
    /// The customer's next message on a resolved conversation's thread reopens it to the bot;
    /// false: it opens a new conversation and the resolved one stays as history.
    pub reopen_resolved: bool,
    /// Conversations kept in memory (with their threads and linked emails, and their owner in
    /// the console's live feed), the least recently used dropped first. Memory grows with new
    /// conversations until this many are cached, then stays level; a conversation not cached
    /// is read from the database.
    pub cached_conversations: usize,
}

impl Default for RouterSettings {
    fn default() -> RouterSettings {
        RouterSettings {
            default_queue: "support".into(),
            typing_after_ms: 300,
            reopen_resolved: true,
            cached_conversations: 10_000,
        }
    }
}

/// `[assistant]` and `[knowledge]` live with the code that reads them.
pub use crate::assistant::AssistantSettings;
pub use crate::knowledge::KnowledgeSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// How often the worker looks for due retries and for rows left by a crashed process.
    pub poll_interval_ms: u64,
    /// After this many failed attempts a row is dead-lettered.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a claimed row stays reserved for the instance that claimed it.
    pub lease_secs: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for OutboxSettings {
    fn default() -> OutboxSettings {
        OutboxSettings {
            poll_interval_ms: 500,
            max_attempts: 12,
            backoff_base_ms: 500,
            backoff_max_ms: 300_000,
            lease_secs: 30,
            concurrency: 64,
        }
    }
}

/// The `[[channel]]` tables as written, `kind` and `name` plus the kind's own keys. Each is
/// parsed by its kind's factory ([`crate::channels::Registry::build`]), which also reads
/// `${VAR}` values from the environment.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ChannelTables(pub Vec<serde_json::Map<String, serde_json::Value>>);

impl Default for ChannelTables {
    /// Web chat alone, as `web`: what a config without `[[channel]]` tables runs.
    fn default() -> ChannelTables {
        let mut web = serde_json::Map::new();
        web.insert("kind".into(), "webchat".into());
        web.insert("name".into(), "web".into());
        ChannelTables(vec![web])
    }
}

impl std::fmt::Debug for ChannelTables {
    /// Only kinds and names: the tables hold tokens and passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|table| {
                let text = |key: &str| table.get(key).and_then(|v| v.as_str()).unwrap_or("?");
                format!("{}/{}", text("kind"), text("name"))
            }))
            .finish()
    }
}

impl ChannelTables {
    /// The table of the instance named `name`, to adjust before the app starts (tests, the
    /// demo).
    pub fn table_mut(
        &mut self,
        name: &str,
    ) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
        self.0
            .iter_mut()
            .find(|table| table.get("name").and_then(|v| v.as_str()) == Some(name))
    }
}

impl Settings {
    /// Read the file (if it exists) and then the environment.
    pub fn load(path: &Path) -> Result<Settings, config::ConfigError> {
        let builder = config::Config::builder()
            .add_source(config::File::from(path).required(false))
            .add_source(
                config::Environment::with_prefix("SWITCHBOARD")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        builder.build()?.try_deserialize()
    }

    /// The database URL, with the SQLite default filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("switchboard.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_parses_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.toml");
        let text = std::fs::read_to_string(&path).expect("config file ships");
        let parsed: Settings = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("shipped config parses");
        let defaults = Settings::default();
        assert_eq!(parsed.http.port, defaults.http.port);
        assert_eq!(parsed.outbox.max_attempts, defaults.outbox.max_attempts);
        assert_eq!(
            parsed.router.reopen_resolved,
            defaults.router.reopen_resolved
        );
        assert_eq!(format!("{:?}", parsed.channel), "[\"webchat/web\"]");
    }

    #[test]
    fn llm_settings_come_from_the_environment_and_hide_the_key() {
        let environment = std::collections::HashMap::from([
            (
                "SWITCHBOARD__LLM__BASE_URL".to_string(),
                "http://127.0.0.1:8000/v1".to_string(),
            ),
            (
                "SWITCHBOARD__LLM__API_KEY".to_string(),
                "sk-secret".to_string(),
            ),
            (
                "SWITCHBOARD__ASSISTANT__KIND".to_string(),
                "llm".to_string(),
            ),
        ]);
        let parsed: Settings = config::Config::builder()
            .add_source(
                config::Environment::with_prefix("SWITCHBOARD")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(environment)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("parses");
        assert_eq!(parsed.assistant.kind, "llm");
        assert_eq!(parsed.llm.base_url, "http://127.0.0.1:8000/v1");
        assert_eq!(parsed.llm.api_key, "sk-secret");
        let shown = format!("{:?}", parsed.llm);
        assert!(!shown.contains("sk-secret"), "{shown}");
    }

    #[test]
    fn channel_tables_never_show_their_secrets() {
        let text = r#"
            [[channel]]
            kind = "telegram"
            name = "shop-bot"
            token = "123456:SECRET"
        "#;
        let parsed: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("parses");
        let shown = format!("{parsed:?}");
        assert!(shown.contains("telegram/shop-bot"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/sb"),
            "postgres://app:***@db:5432/sb"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
