//! Web chat instances from `[[channel]]` tables of kind `webchat`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use switchboard_connector::{ChannelFactory, Connector, ConnectorError, InstanceConfig, Secret};

use crate::session::{IdentityVerifier, SessionSigner};
use crate::{KIND, WebchatConnector, WebchatSettings};

/// The keys of a web chat `[[channel]]` table (beside `kind` and `name`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebchatConfig {
    /// Signs visitor session tokens. Empty: generated once into the data directory
    /// (`webchat-<name>.secret`). Several servers behind one load balancer must share it.
    pub session_secret: Secret,
    pub session_ttl_days: u32,
    pub max_frame_bytes: usize,
    pub max_text_chars: usize,
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    pub history_limit: u32,
    /// Lets the page embedding the widget vouch for a signed-in customer (see
    /// docs/webchat-protocol.md). Empty: only the demo page can (with `demo_email`).
    pub identity_secret: Secret,
    /// The demo page at `/` is signed in as this customer of the demo shop. Empty: a guest.
    pub demo_email: String,
}

impl Default for WebchatConfig {
    fn default() -> WebchatConfig {
        WebchatConfig {
            session_secret: Secret::default(),
            session_ttl_days: 90,
            max_frame_bytes: 16 * 1024,
            max_text_chars: 4000,
            rate_per_minute: 120,
            rate_burst: 20,
            history_limit: 100,
            identity_secret: Secret::default(),
            demo_email: String::new(),
        }
    }
}

/// Builds web chat instances, and keeps them so that the app can serve the demo page and
/// count open sessions.
#[derive(Default)]
pub struct WebchatFactory {
    built: Mutex<Vec<Arc<WebchatConnector>>>,
}

impl WebchatFactory {
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
        let mut settings = WebchatSettings::new(&secret);
        settings.signer =
            SessionSigner::new(&secret, i64::from(config.session_ttl_days) * 24 * 3600);
        settings.max_frame_bytes = config.max_frame_bytes;
        settings.max_text_chars = config.max_text_chars;
        settings.rate_per_minute = config.rate_per_minute;
        settings.rate_burst = config.rate_burst;
        settings.history_limit = config.history_limit;
        let identity_secret = if config.identity_secret.is_empty() {
            // Only this server signs (the demo page): a key of its own, never shared.
            rand::random::<[u8; 32]>().to_vec()
        } else {
            config.identity_secret.expose().as_bytes().to_vec()
        };
        settings.identities = Some(IdentityVerifier::new(&identity_secret));
        if !config.demo_email.is_empty() {
            tracing::warn!(channel = %instance.name, email = %config.demo_email, "the demo page is signed in as a demo customer (demo_email)");
            settings.demo_email = Some(config.demo_email.clone());
        }
        let connector = WebchatConnector::new(&instance.name, settings);
        self.built
            .lock()
            .expect("factory lock")
            .push(connector.clone());
        Ok(connector)
    }
}

/// The session signing secret: from config, or generated once and kept in the data directory.
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
        return Ok(secret.trim().as_bytes().to_vec());
    }
    let io_error = |error: std::io::Error| {
        ConnectorError::Config(format!("writing {}: {error}", path.display()))
    };
    std::fs::create_dir_all(data_dir).map_err(io_error)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    // Write then rename, so a crash never leaves a half-written secret behind.
    let partial = path.with_extension("secret.partial");
    std::fs::write(&partial, &secret).map_err(io_error)?;
    std::fs::rename(&partial, &path).map_err(io_error)?;
    Ok(secret.into_bytes())
}
