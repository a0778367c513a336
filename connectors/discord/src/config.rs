//! The keys of a Discord channel's `[[channel]]` table.

use serde::Deserialize;
use switchboard_connector::{ConnectorError, Secret};

/// Discord's own API base; `api_url` replaces it (a test peer, a REST proxy).
pub const DEFAULT_API_URL: &str = "https://discord.com";

/// One bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot's token from the developer portal (without the `Bot ` prefix).
    pub token: Secret,
    /// Guild text channels where customers ask (ids): the bot answers a message there when
    /// it is mentioned, and moves the customer into a private thread of their own.
    #[serde(default)]
    pub support_channels: Vec<String>,
    /// Another API base, in place of `https://discord.com` (REST goes to `<api_url>/api/v10/`,
    /// the gateway URL is whatever its `GET /gateway` says).
    #[serde(default)]
    pub api_url: Option<String>,
}

/// A config checked: ids parsed, the API base known.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: DiscordConfig,
    pub support_channels: Vec<u64>,
    /// Without a trailing slash.
    pub api_url: String,
}

impl DiscordConfig {
    pub fn check(self, name: &str) -> Result<Checked, ConnectorError> {
        let invalid =
            |message: String| ConnectorError::Config(format!("channel {name:?}: {message}"));
        let token = self.token.expose();
        if token.trim().is_empty() {
            return Err(invalid("token is empty".into()));
        }
        if token.contains(char::is_whitespace) || token.starts_with("Bot") {
            return Err(invalid(
                "token must be the bot token alone, without spaces or a \"Bot \" prefix".into(),
            ));
        }
        let mut support_channels = Vec::new();
        for id in &self.support_channels {
            let parsed = id
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "support_channels: {id:?} is not a Discord channel id"
                    ))
                })?;
            support_channels.push(parsed);
        }
        let api_url = self
            .api_url
            .clone()
            .unwrap_or_else(|| DEFAULT_API_URL.into())
            .trim_end_matches('/')
            .to_string();
        let scheme_ok = api_url.starts_with("http://") || api_url.starts_with("https://");
        if !scheme_ok || api_url.contains(['?', '#', ' ']) {
            return Err(invalid(format!(
                "api_url {api_url:?} is not an http(s) base URL"
            )));
        }
        Ok(Checked {
            config: self,
            support_channels,
            api_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Result<DiscordConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn a_full_table_is_read_and_the_token_never_shown() {
        let checked = parse(serde_json::json!({
            "token": "MTIz.s3cret", "support_channels": ["1234567890", " 42 "],
            "api_url": "http://127.0.0.1:9100/"}))
        .unwrap()
        .check("community")
        .unwrap();
        assert_eq!(checked.support_channels, [1234567890, 42]);
        assert_eq!(checked.api_url, "http://127.0.0.1:9100");
        let debug = format!("{checked:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let default = parse(serde_json::json!({"token": "abc"}))
            .unwrap()
            .check("community")
            .unwrap();
        assert_eq!(default.api_url, DEFAULT_API_URL);
        assert!(default.support_channels.is_empty());
    }

    #[test]
    fn bad_tables_are_refused_with_the_key_named() {
        assert!(parse(serde_json::json!({"token": "abc", "guild": "1"})).is_err());
        for (table, expected) in [
            (serde_json::json!({"token": ""}), "token is empty"),
            (serde_json::json!({"token": "Bot abc"}), "prefix"),
            (
                serde_json::json!({"token": "abc", "support_channels": ["general"]}),
                "support_channels",
            ),
            (
                serde_json::json!({"token": "abc", "api_url": "ftp://x"}),
                "api_url",
            ),
        ] {
            let error = parse(table).unwrap().check("community").unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
