//! The keys of a Telegram channel's `[[channel]]` table.

use serde::Deserialize;
use switchboard_connector::{ConnectorError, Secret};

/// The public Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// Longest long-poll asked of the Bot API: teloxide's HTTP client gives up after 17 s.
const MAX_POLL_TIMEOUT_SECS: u32 = 12;

/// One bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather.
    pub token: Secret,
    /// How updates come in.
    #[serde(default)]
    pub mode: Mode,
    /// Another Bot API server: a local `telegram-bot-api`, or a test peer.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Webhook mode: the public URL Telegram posts to. Without it, the app's `http.public_url`
    /// followed by `/channels/telegram/<name>`.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Webhook mode: the secret Telegram sends back in `X-Telegram-Bot-Api-Secret-Token`
    /// (1 to 256 of `A-Z a-z 0-9 _ -`). Required in webhook mode: without it anybody who
    /// knows the URL could post updates.
    #[serde(default)]
    pub secret_token: Option<Secret>,
    /// Polling mode: seconds a `getUpdates` call waits for news (at most 12).
    #[serde(default = "default_poll_timeout_secs")]
    pub poll_timeout_secs: u32,
    /// Seconds to wait between polls when the server answers at once with nothing (a Bot API
    /// server that does not hold long polls).
    #[serde(default = "default_poll_idle_ms")]
    pub poll_idle_ms: u64,
    /// Messages per second to one chat (Telegram asks for about one) and the burst allowed
    /// above it.
    #[serde(default = "default_chat_per_second")]
    pub chat_per_second: f64,
    #[serde(default = "default_chat_burst")]
    pub chat_burst: u32,
    /// Messages per second for the whole bot (Telegram allows about 30).
    #[serde(default = "default_bot_per_second")]
    pub bot_per_second: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `getUpdates` long polling: one process, no public URL needed.
    #[default]
    Polling,
    /// Telegram posts updates to `/channels/telegram/<name>` on the app's HTTP server.
    Webhook,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.into()
}
fn default_poll_timeout_secs() -> u32 {
    10
}
fn default_poll_idle_ms() -> u64 {
    200
}
fn default_chat_per_second() -> f64 {
    1.0
}
fn default_chat_burst() -> u32 {
    3
}
fn default_bot_per_second() -> f64 {
    30.0
}

/// A config checked and completed: the webhook URL resolved, the API URL parsed.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: TelegramConfig,
    pub api_url: url::Url,
    pub webhook_url: Option<url::Url>,
    pub poll_timeout_secs: u32,
}

impl TelegramConfig {
    /// Check the keys of instance `name`; `public_route` is where the app serves this
    /// instance's routes, if its public URL is known.
    pub fn check(
        self,
        name: &str,
        public_route: Option<String>,
    ) -> Result<Checked, ConnectorError> {
        let invalid =
            |message: String| ConnectorError::Config(format!("channel {name:?}: {message}"));
        if self.token.is_empty() {
            return Err(invalid("token is empty".into()));
        }
        if self.token.expose().contains(['/', '?', '#', ' ']) {
            return Err(invalid(
                "token has characters a Bot API token never has".into(),
            ));
        }
        let api_url = url::Url::parse(&self.api_url)
            .map_err(|error| invalid(format!("api_url {:?}: {error}", self.api_url)))?;
        if !matches!(api_url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "api_url {:?} is not http(s)",
                self.api_url
            )));
        }
        for (key, rate) in [
            ("chat_per_second", self.chat_per_second),
            ("bot_per_second", self.bot_per_second),
        ] {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1000.0) {
                return Err(invalid(format!("{key} must be above 0 and at most 1000")));
            }
        }
        if self.chat_burst == 0 {
            return Err(invalid("chat_burst must be at least 1".into()));
        }
        let webhook_url = match self.mode {
            Mode::Polling => {
                if self.webhook_url.is_some() || self.secret_token.is_some() {
                    return Err(invalid(
                        "webhook_url and secret_token are for mode = \"webhook\"".into(),
                    ));
                }
                None
            }
            Mode::Webhook => {
                let secret = self
                    .secret_token
                    .as_ref()
                    .ok_or_else(|| invalid("mode = \"webhook\" needs secret_token".into()))?;
                if !valid_secret(secret.expose()) {
                    return Err(invalid(
                        "secret_token must be 1 to 256 of A-Z, a-z, 0-9, '_' and '-'".into(),
                    ));
                }
                let url = self.webhook_url.clone().or(public_route).ok_or_else(|| {
                    invalid("mode = \"webhook\" needs webhook_url (or http.public_url)".into())
                })?;
                let parsed = url::Url::parse(&url)
                    .map_err(|error| invalid(format!("webhook_url {url:?}: {error}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(format!("webhook_url {url:?} is not http(s)")));
                }
                Some(parsed)
            }
        };
        let poll_timeout_secs = self.poll_timeout_secs.min(MAX_POLL_TIMEOUT_SECS);
        Ok(Checked {
            config: self,
            api_url,
            webhook_url,
            poll_timeout_secs,
        })
    }
}

/// What Telegram accepts as a webhook secret.
fn valid_secret(secret: &str) -> bool {
    (1..=256).contains(&secret.len())
        && secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Result<TelegramConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn polling_is_the_default_and_the_token_is_redacted() {
        let config = parse(serde_json::json!({"token": "123:ABC-secret"})).unwrap();
        assert_eq!(config.mode, Mode::Polling);
        let debug = format!("{config:?}");
        assert!(!debug.contains("ABC-secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let checked = config.check("shop-bot", None).unwrap();
        assert_eq!(checked.api_url.as_str(), "https://api.telegram.org/");
        assert!(checked.webhook_url.is_none());
        assert!(!format!("{checked:?}").contains("ABC-secret"));
    }

    #[test]
    fn webhook_mode_needs_a_secret_and_a_url() {
        let base = serde_json::json!({"token": "1:x", "mode": "webhook"});
        let error = parse(base.clone())
            .unwrap()
            .check(
                "shop-bot",
                Some("https://shop.example/channels/telegram/shop-bot".into()),
            )
            .unwrap_err();
        assert!(error.to_string().contains("secret_token"), "{error}");
        let mut with_secret = base.clone();
        with_secret["secret_token"] = "s3cret_-Token".into();
        let error = parse(with_secret.clone())
            .unwrap()
            .check("shop-bot", None)
            .unwrap_err();
        assert!(error.to_string().contains("webhook_url"), "{error}");
        let checked = parse(with_secret.clone())
            .unwrap()
            .check(
                "shop-bot",
                Some("https://shop.example/channels/telegram/shop-bot".into()),
            )
            .unwrap();
        assert_eq!(
            checked.webhook_url.unwrap().as_str(),
            "https://shop.example/channels/telegram/shop-bot"
        );
        let debug = format!("{:?}", parse(with_secret.clone()).unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
        let mut bad_secret = with_secret;
        bad_secret["secret_token"] = "has spaces".into();
        let error = parse(bad_secret)
            .unwrap()
            .check("shop-bot", Some("https://a.example/x".into()))
            .unwrap_err();
        assert!(
            error.to_string().contains("secret_token must be"),
            "{error}"
        );
    }

    #[test]
    fn unknown_and_misplaced_keys_are_refused() {
        assert!(parse(serde_json::json!({"token": "1:x", "tokne": "y"})).is_err());
        assert!(parse(serde_json::json!({"token": "1:x", "mode": "carrier-pigeon"})).is_err());
        let error = parse(serde_json::json!({"token": "1:x", "secret_token": "abc"}))
            .unwrap()
            .check("shop-bot", None)
            .unwrap_err();
        assert!(error.to_string().contains("mode = \"webhook\""), "{error}");
        let error = parse(serde_json::json!({"token": "1:x", "api_url": "ftp://x"}))
            .unwrap()
            .check("shop-bot", None)
            .unwrap_err();
        assert!(error.to_string().contains("not http"), "{error}");
        let error = parse(serde_json::json!({"token": "", "api_url": "http://127.0.0.1:1"}))
            .unwrap()
            .check("shop-bot", None)
            .unwrap_err();
        assert!(error.to_string().contains("token is empty"), "{error}");
    }

    #[test]
    fn long_polls_stay_under_the_client_timeout() {
        let checked = parse(serde_json::json!({"token": "1:x", "poll_timeout_secs": 50}))
            .unwrap()
            .check("shop-bot", None)
            .unwrap();
        assert_eq!(checked.poll_timeout_secs, MAX_POLL_TIMEOUT_SECS);
    }
}
