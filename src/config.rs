//! Settings: `config/switchboard.toml`, overridden by `SWITCHBOARD__SECTION__KEY` variables.
//!
//! Every key is documented in the shipped file; the defaults here match it, so a missing key
//! behaves as documented. Secrets never appear in `Debug` output.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub router: RouterSettings,
    pub assistant: AssistantSettings,
    pub knowledge: KnowledgeSettings,
    pub outbox: OutboxSettings,
    pub webchat: WebchatConfig,
    pub workflow: crate::workflow::WorkflowSettings,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            data_dir: PathBuf::from("data"),
            http: HttpSettings::default(),
            database: DatabaseSettings::default(),
            log: LogSettings::default(),
            router: RouterSettings::default(),
            assistant: AssistantSettings::default(),
            knowledge: KnowledgeSettings::default(),
            outbox: OutboxSettings::default(),
            webchat: WebchatConfig::default(),
            workflow: crate::workflow::WorkflowSettings::default(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
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
    pub metrics_token: String,
    /// `host:port` to serve `/metrics` on instead of the public address; empty: public.
    pub metrics_address: String,
    /// The `frame-ancestors` of pages that host the chat (the demo page): who may frame them.
    pub frame_ancestors: String,
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            host: "127.0.0.1".into(),
            port: 8080,
            shutdown_grace_secs: 20,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            client_address_header: String::new(),
            api_rate_per_minute: 600,
            api_rate_burst: 100,
            metrics_token: String::new(),
            metrics_address: String::new(),
            frame_ancestors: "'none'".into(),
        }
    }
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("max_connections", &self.max_connections)
            .field("metrics_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Empty: SQLite in `data_dir/switchboard.db`. `sqlite://PATH` or `postgres://...` otherwise.
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> DatabaseSettings {
        DatabaseSettings {
            url: String::new(),
            max_connections: 8,
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
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
}

impl Default for RouterSettings {
    fn default() -> RouterSettings {
        RouterSettings {
            default_queue: "support".into(),
            typing_after_ms: 300,
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

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebchatConfig {
    pub enabled: bool,
    /// Signs visitor session tokens. Empty: generated once into `data_dir/webchat.secret`.
    /// Several instances behind one load balancer must share it.
    pub session_secret: String,
    pub session_ttl_days: u32,
    pub max_frame_bytes: usize,
    pub max_text_chars: usize,
    /// Messages per minute per visitor (all its tabs together), and the burst above it.
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    /// Messages per minute from one client address (all its visitors), and the burst.
    pub ip_rate_per_minute: u32,
    pub ip_rate_burst: u32,
    /// New sessions per minute from one client address, and the burst.
    pub ip_sessions_per_minute: u32,
    pub ip_sessions_burst: u32,
    /// Frames of any kind (typing, malformed, messages) per minute per socket, and the burst.
    pub frame_rate_per_minute: u32,
    pub frame_rate_burst: u32,
    /// Seconds a new socket may take to say `hello`.
    pub hello_timeout_secs: u64,
    /// Origins (`https://shop.example.com`) whose pages may open the chat socket. Empty: only
    /// pages served by this server itself.
    pub allowed_origins: Vec<String>,
    pub history_limit: u32,
    /// Longest lifetime, in seconds, of an identity token the embedding page signs.
    pub identity_max_ttl_secs: i64,
    /// Also accept the old identity form (an HMAC of the email, which never expires).
    pub legacy_identity_signatures: bool,
    /// Lets the page embedding the widget vouch for a signed-in customer (see
    /// docs/webchat-protocol.md). Empty: only the demo page can (with `demo_email`).
    pub identity_secret: String,
    /// The demo page at `/` is signed in as this customer of the demo shop. Empty: a guest.
    pub demo_email: String,
}

impl Default for WebchatConfig {
    fn default() -> WebchatConfig {
        WebchatConfig {
            enabled: true,
            session_secret: String::new(),
            session_ttl_days: 90,
            max_frame_bytes: 16 * 1024,
            max_text_chars: 4000,
            rate_per_minute: 120,
            rate_burst: 20,
            ip_rate_per_minute: 600,
            ip_rate_burst: 100,
            ip_sessions_per_minute: 30,
            ip_sessions_burst: 20,
            frame_rate_per_minute: 600,
            frame_rate_burst: 120,
            hello_timeout_secs: 10,
            allowed_origins: Vec::new(),
            history_limit: 100,
            identity_max_ttl_secs: 24 * 3600,
            legacy_identity_signatures: false,
            identity_secret: String::new(),
            demo_email: String::new(),
        }
    }
}

impl std::fmt::Debug for WebchatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebchatConfig")
            .field("enabled", &self.enabled)
            .field("session_secret", &"<redacted>")
            .field("identity_secret", &"<redacted>")
            .field("demo_email", &self.demo_email)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("rate_per_minute", &self.rate_per_minute)
            .finish_non_exhaustive()
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
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("webchat.allowed_origins"),
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
            parsed.webchat.rate_per_minute,
            defaults.webchat.rate_per_minute
        );
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
