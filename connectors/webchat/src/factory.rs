//! Web chat instances from `[[channel]]` tables of kind `webchat`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use switchboard_connector::files::{check_private, write_private};
use switchboard_connector::{ChannelFactory, Connector, ConnectorError, InstanceConfig, Secret};

use crate::limits::Rate;
use crate::session::{IdentityVerifier, SessionSigner};
use crate::{KIND, WebchatConnector, WebchatSettings};

/// The keys of a web chat `[[channel]]` table (beside `kind` and `name`), documented in
/// `config/switchboard.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebchatConfig {
    /// Signs visitor session tokens. Empty: generated once into the data directory
    /// (`webchat-<name>.secret`, mode 0600). Several servers behind one load balancer must
    /// share it.
    pub session_secret: Secret,
    /// Days a session token stays valid unused; every resume issues a fresh one.
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
    /// Lets the page embedding the widget vouch for a signed-in customer with an identity
    /// token (see docs/webchat-protocol.md). Empty: only the demo page can, in demo mode.
    pub identity_secret: Secret,
    /// Longest lifetime, in seconds, an identity token may claim.
    pub identity_max_ttl_secs: i64,
    /// Also accept the old identity form (an HMAC of the email, which never expires).
    pub legacy_identity_signatures: bool,
    /// Demo mode only: the demo page at `/` is signed in as this customer of the demo shop.
    /// Outside demo mode it is ignored (with a warning).
    pub demo_email: String,
}

impl Default for WebchatConfig {
    fn default() -> WebchatConfig {
        WebchatConfig {
            session_secret: Secret::default(),
            session_ttl_days: 30,
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
            identity_secret: Secret::default(),
            identity_max_ttl_secs: 24 * 3600,
            legacy_identity_signatures: false,
            demo_email: String::new(),
        }
    }
}

impl WebchatConfig {
    /// The instance's settings, with `secret` signing its sessions.
    pub fn settings(
        &self,
        secret: &[u8],
        name: &str,
        demo_mode: bool,
    ) -> Result<WebchatSettings, ConnectorError> {
        let invalid = |message: String| {
            ConnectorError::Config(format!("channel {name:?} (kind {KIND}): {message}"))
        };
        if self.session_ttl_days == 0 {
            return Err(invalid("session_ttl_days must be at least 1".into()));
        }
        if self.identity_max_ttl_secs <= 0 {
            return Err(invalid("identity_max_ttl_secs must be positive".into()));
        }
        for origin in &self.allowed_origins {
            let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.trim_end_matches('/').is_empty()
            });
            if !valid {
                return Err(invalid(format!(
                    "allowed_origins: {origin:?} is not an origin such as \"https://shop.example.com\""
                )));
            }
        }
        let mut settings = WebchatSettings::new(secret);
        settings.signer = SessionSigner::new(secret, i64::from(self.session_ttl_days) * 24 * 3600);
        settings.max_frame_bytes = self.max_frame_bytes;
        settings.max_text_chars = self.max_text_chars;
        settings.visitor_rate = Rate::new(self.rate_per_minute, self.rate_burst);
        settings.address_rate = Rate::new(self.ip_rate_per_minute, self.ip_rate_burst);
        settings.session_rate = Rate::new(self.ip_sessions_per_minute, self.ip_sessions_burst);
        settings.frame_rate = Rate::new(self.frame_rate_per_minute, self.frame_rate_burst);
        settings.hello_timeout = Duration::from_secs(self.hello_timeout_secs.max(1));
        settings.allowed_origins = self.allowed_origins.clone();
        settings.history_limit = self.history_limit;
        let identity_secret = if self.identity_secret.is_empty() {
            // Only this server signs (the demo page): a key of its own, never shared.
            rand::random::<[u8; 32]>().to_vec()
        } else {
            self.identity_secret.expose().as_bytes().to_vec()
        };
        if self.legacy_identity_signatures {
            tracing::warn!(channel = %name, "web chat accepts legacy identity signatures, which never expire (legacy_identity_signatures)");
        }
        settings.identities = Some(
            IdentityVerifier::new(&identity_secret)
                .with_policy(self.identity_max_ttl_secs, self.legacy_identity_signatures),
        );
        match (self.demo_email.is_empty(), demo_mode) {
            (true, _) => {}
            (false, true) => {
                tracing::warn!(channel = %name, email = %self.demo_email, "demo mode: the demo page is signed in as a demo customer (demo_email)");
                settings.demo_email = Some(self.demo_email.clone());
            }
            (false, false) => {
                tracing::warn!(channel = %name, "demo_email is ignored outside demo mode: the demo page chats as a guest");
            }
        }
        Ok(settings)
    }
}

/// Builds web chat instances, and keeps them so that the app can serve the demo page and
/// count open sessions.
#[derive(Default)]
pub struct WebchatFactory {
    built: Mutex<Vec<Arc<WebchatConnector>>>,
    demo_mode: bool,
}

impl WebchatFactory {
    /// A factory for the app; `demo_mode` lets `demo_email` sign the demo page in.
    pub fn new(demo_mode: bool) -> WebchatFactory {
        WebchatFactory {
            built: Mutex::default(),
            demo_mode,
        }
    }

    /// Every instance built so far, in config order.
    pub fn built(&self) -> Vec<Arc<WebchatConnector>> {
        self.built.lock().expect("factory lock").clone()
    }
}

impl ChannelFactory for WebchatFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, instance: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError> {
        let config: WebchatConfig = instance.parse()?;
        let secret = session_secret(&config, &instance.data_dir, &instance.name)?;
        let settings = config.settings(&secret, &instance.name, self.demo_mode)?;
        let connector = WebchatConnector::new(&instance.name, settings);
        self.built
            .lock()
            .expect("factory lock")
            .push(connector.clone());
        Ok(connector)
    }
}

/// The session signing secret: from config, or generated once and kept in the data directory,
/// owner-only.
fn session_secret(
    config: &WebchatConfig,
    data_dir: &Path,
    name: &str,
) -> Result<Vec<u8>, ConnectorError> {
    if !config.session_secret.is_empty() {
        return Ok(config.session_secret.expose().as_bytes().to_vec());
    }
    let path = data_dir.join(format!("webchat-{name}.secret"));
    if let Ok(secret) = std::fs::read_to_string(&path)
        && secret.trim().len() >= 32
    {
        check_private(&path);
        return Ok(secret.trim().as_bytes().to_vec());
    }
    let io_error = |error: std::io::Error| {
        ConnectorError::Config(format!("writing {}: {error}", path.display()))
    };
    std::fs::create_dir_all(data_dir).map_err(io_error)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    write_private(&path, secret.as_bytes()).map_err(io_error)?;
    Ok(secret.into_bytes())
}
