//! Building connectors from config: one [`ChannelFactory`] per kind, one instance per
//! `[[channel]]` table.
//!
//! The shape follows quickwit's source factories: the app keeps a registry of factories keyed
//! by kind, and a table whose kind no factory claims is an error that lists the kinds
//! compiled in. A factory parses the table's own keys into its typed config with
//! [`InstanceConfig::parse`], so an unknown or misspelt key is an error naming it.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Connector, ConnectorError, OutboundLimits};

/// Keys of a `[[channel]]` table that every kind shares; the rest belong to the kind.
pub const SHARED_KEYS: [&str; 6] = [
    "kind",
    "name",
    "enabled",
    "outbound_per_second",
    "outbound_burst",
    "outbound_concurrency",
];

/// Fastest `outbound_per_second` accepted: beyond it the rate is no limit at all.
const MAX_PER_SECOND: f64 = 1_000_000.0;

/// One `[[channel]]` table, read: the keys every kind shares, checked, and the kind's own keys
/// with `${VAR}` read from the environment. Which kinds exist is the app's business (its
/// registry of factories), so the kind is not checked here.
#[derive(Debug, Clone)]
pub struct ChannelTable {
    pub kind: String,
    pub name: String,
    /// `enabled = false` keeps the table without running the instance.
    pub enabled: bool,
    pub outbound: OutboundOverrides,
    /// The kind's own keys, for [`InstanceConfig::settings`] (`${VAR}` left as written when
    /// the table is not enabled).
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// The `outbound_*` keys of a table: they tighten (or set) the platform's own limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboundOverrides {
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    pub concurrency: Option<usize>,
}

impl OutboundLimits {
    /// The platform's limits, tightened by a table's `outbound_*` keys.
    pub fn tightened(self, overrides: OutboundOverrides) -> OutboundLimits {
        let mut limits = self;
        if let Some(rate) = overrides.per_second {
            limits.per_second = Some(limits.per_second.map_or(rate, |own| own.min(rate)));
        }
        if let Some(burst) = overrides.burst {
            limits.burst = burst;
        }
        if let Some(concurrency) = overrides.concurrency {
            limits.concurrency = Some(
                limits
                    .concurrency
                    .map_or(concurrency, |own| own.min(concurrency)),
            );
        }
        limits
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("[[channel]] number {index} has no {key}")]
    Missing { index: usize, key: &'static str },
    #[error(
        "channel name {0:?}: use 1 to 64 lowercase letters, digits, '-' and '_' (it appears in URLs)"
    )]
    BadName(String),
    #[error("channel {name:?}: {message}")]
    Invalid { name: String, message: String },
}

impl ChannelTable {
    /// Read table number `index` (from 1, for messages); `lookup` reads environment variables.
    pub fn read(
        index: usize,
        table: &serde_json::Map<String, serde_json::Value>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ChannelTable, TableError> {
        let text = |key: &'static str| {
            table
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or(TableError::Missing { index, key })
        };
        let kind = text("kind")?;
        let name = text("name")?;
        if !valid_name(&name) {
            return Err(TableError::BadName(name));
        }
        let invalid = |message: &str| TableError::Invalid {
            name: name.clone(),
            message: message.to_string(),
        };
        let enabled = match table.get("enabled") {
            None => true,
            Some(value) => value
                .as_bool()
                .ok_or_else(|| invalid("enabled must be true or false"))?,
        };
        let mut outbound = OutboundOverrides::default();
        if let Some(value) = table.get("outbound_per_second") {
            let rate = value
                .as_f64()
                .filter(|rate| rate.is_finite() && *rate > 0.0 && *rate <= MAX_PER_SECOND)
                .ok_or_else(|| {
                    invalid("outbound_per_second must be a number above 0 and at most 1000000")
                })?;
            outbound.per_second = Some(rate);
        }
        if let Some(value) = table.get("outbound_burst") {
            let burst = value
                .as_u64()
                .filter(|burst| *burst > 0)
                .and_then(|burst| u32::try_from(burst).ok())
                .ok_or_else(|| invalid("outbound_burst must be a positive integer"))?;
            outbound.burst = Some(burst);
        }
        if let Some(value) = table.get("outbound_concurrency") {
            let concurrency = value
                .as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid("outbound_concurrency must be a positive integer"))?;
            outbound.concurrency = Some(concurrency);
        }
        let own: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .filter(|(key, _)| !SHARED_KEYS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if !enabled {
            // A table kept but not run may name variables that are not set.
            return Ok(ChannelTable {
                kind,
                name,
                enabled,
                outbound,
                settings: own,
            });
        }
        let mut expanded = serde_json::Value::Object(own);
        expand_env(&mut expanded, lookup).map_err(|message| invalid(&message))?;
        let serde_json::Value::Object(settings) = expanded else {
            unreachable!("an object stays an object")
        };
        Ok(ChannelTable {
            kind,
            name,
            enabled,
            outbound,
            settings,
        })
    }
}

/// 1 to 64 lowercase letters, digits, `-` and `_`: instance names appear in URLs.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Builds the connectors of one kind.
pub trait ChannelFactory: Send + Sync {
    fn kind(&self) -> &'static str;

    fn build(&self, config: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError>;
}

/// One `[[channel]]` table, with the keys every kind shares taken out.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub kind: String,
    /// Unique across all instances; conversations remember it.
    pub name: String,
    /// The app's data directory, for connectors that keep files of their own.
    pub data_dir: PathBuf,
    /// The app's public base URL (`http.public_url`), for connectors that register webhooks.
    pub public_url: Option<String>,
    /// The kind's own keys, `${VAR}` already read from the environment.
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl InstanceConfig {
    /// The kind's own keys as `T`. Unknown keys are refused when `T` says
    /// `#[serde(deny_unknown_fields)]`, as every connector's config should.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_value(serde_json::Value::Object(self.settings.clone())).map_err(|error| {
            ConnectorError::Config(format!(
                "channel {:?} (kind {}): {error}",
                self.name, self.kind
            ))
        })
    }

    /// The URL where this instance's routes are served, if the public URL is known.
    pub fn public_route(&self, path: &str) -> Option<String> {
        let base = self.public_url.as_deref()?.trim_end_matches('/');
        Some(format!("{base}/channels/{}/{}{path}", self.kind, self.name))
    }
}

/// A secret from config (a token, a password). Its `Debug` never shows it, and it cannot be
/// serialised back out by accident.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// Replace every `${VAR}` in the string values of `value` (recursively) with the variable's
/// value, read through `lookup`. A variable that is not set is an error naming it (never its
/// value); `$${` stands for a literal `${`.
pub fn expand_env(
    value: &mut serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        serde_json::Value::String(text) => {
            if text.contains("${") {
                *text = expand_text(text, lookup)?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter_mut().try_for_each(|v| expand_env(v, lookup)),
        serde_json::Value::Object(map) => map.values_mut().try_for_each(|v| expand_env(v, lookup)),
        _ => Ok(()),
    }
}

fn expand_text(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed ${{ in {text:?}"));
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("${{{name}}} is not a valid variable name"));
        }
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("123:abc".into()),
            "HOST" => Some("mail.example".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_anywhere_in_strings() {
        let mut value = json!({
            "token": "${TOKEN}",
            "url": "imaps://${HOST}:993",
            "list": ["${HOST}", 3],
            "literal": "costs $${TOKEN}",
            "plain": "no variables",
        });
        expand_env(&mut value, &env).unwrap();
        assert_eq!(
            value,
            json!({
                "token": "123:abc",
                "url": "imaps://mail.example:993",
                "list": ["mail.example", 3],
                "literal": "costs ${TOKEN}",
                "plain": "no variables",
            })
        );
    }

    #[test]
    fn a_missing_variable_is_named_and_bad_syntax_refused() {
        let mut value = json!({"token": "${NOT_SET}"});
        assert_eq!(
            expand_env(&mut value, &env).unwrap_err(),
            "environment variable NOT_SET is not set"
        );
        let mut value = json!("${TOKEN");
        assert!(expand_env(&mut value, &env).is_err());
        let mut value = json!("${A-B}");
        assert!(expand_env(&mut value, &env).is_err());
    }

    fn table(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn tables_are_checked_and_their_own_keys_expanded() {
        let read = ChannelTable::read(
            1,
            &table(
                json!({"kind": "telegram", "name": "shop-bot", "token": "${TOKEN}",
                          "outbound_per_second": 50, "outbound_concurrency": 4}),
            ),
            &env,
        )
        .unwrap();
        assert_eq!(read.settings, table(json!({"token": "123:abc"})));
        let limits = OutboundLimits {
            per_second: Some(30.0),
            burst: 5,
            concurrency: None,
        }
        .tightened(read.outbound);
        assert_eq!(limits.per_second, Some(30.0));
        assert_eq!(limits.concurrency, Some(4));
        for bad in [
            json!({"kind": "x", "name": "n", "outbound_per_second": -1}),
            // TOML has inf and nan: a rate of either is no rate.
            json!({"kind": "x", "name": "n", "outbound_per_second": f64::MAX}),
            json!({"kind": "x", "name": "n", "enabled": "no"}),
            json!({"kind": "x", "name": "n", "outbound_burst": 0}),
        ] {
            assert!(
                matches!(
                    ChannelTable::read(1, &table(bad.clone()), &env),
                    Err(TableError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            ChannelTable::read(2, &table(json!({"kind": "webchat"})), &env).unwrap_err(),
            TableError::Missing {
                index: 2,
                key: "name"
            }
        );
        assert!(matches!(
            ChannelTable::read(
                1,
                &table(json!({"kind": "webchat", "name": "Web Chat"})),
                &env
            ),
            Err(TableError::BadName(_))
        ));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let secret: Secret = serde_json::from_value(json!("hunter2")).unwrap();
        assert_eq!(format!("{secret:?}"), "\"<redacted>\"");
        assert_eq!(secret.expose(), "hunter2");
    }
}
