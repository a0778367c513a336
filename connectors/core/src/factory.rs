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

use crate::{Connector, ConnectorError};

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

    #[test]
    fn secrets_never_show_in_debug() {
        let secret: Secret = serde_json::from_value(json!("hunter2")).unwrap();
        assert_eq!(format!("{secret:?}"), "\"<redacted>\"");
        assert_eq!(secret.expose(), "hunter2");
    }
}
