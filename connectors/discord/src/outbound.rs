//! Sending: parts of at most 2,000 characters, choices as buttons, Discord's errors turned
//! into what the outbox should do.
//!
//! - 429 (or a bucket known to be empty): a retriable error with Discord's pause, which the
//!   outbox applies to the whole instance ([`crate::rest`]).
//! - Missing permissions (50013), missing access (50001), an unknown channel (10003): a
//!   permanent error, logged as a warning once per channel and code (the operator has to fix
//!   Discord's settings; every later message to that channel fails once, quietly, instead of
//!   being retried).
//! - A user who takes no DMs from the bot (50007): an unreachable recipient, logged the same
//!   way; the app marks the thread and sends nothing more there until the user writes again.
//! - Network errors and 5xx: retriable (the outbox backs off).
//!
//! Every part carries a `nonce` derived from the message id with `enforce_nonce`, so Discord
//! itself drops a part sent twice within a few minutes (a retry after a lost answer); a message
//! of several parts also remembers which parts went out, so a retry after a failure in the
//! middle does not send the first parts again.

use std::collections::HashSet;
use std::sync::Mutex;

use serenity::http::{LightMethod, Route};
use serenity::model::id::ChannelId;
use switchboard_connector::{ConnectorError, OutboundMessage, PartialSends, SendReceipt};

use crate::DiscordChannel;
use crate::format::{MAX_MESSAGE_UNITS, split_text};
use crate::rest::{RestError, refusal_reason};

/// Discord's limits on buttons: 5 per row, 5 rows, a label of 80 characters, a custom id of
/// 100.
const BUTTONS_PER_ROW: usize = 5;
const MAX_ROWS: usize = 5;
const MAX_LABEL_CHARS: usize = 80;
const MAX_CUSTOM_ID_CHARS: usize = 100;

/// The outbound state of an instance.
#[derive(Default)]
pub struct Outbound {
    /// The parts of long messages already posted, for a retry to skip.
    partial: PartialSends<u64>,
    /// (channel, code) refusals already logged as warnings.
    reported: Mutex<HashSet<(u64, i64)>>,
}

impl Outbound {
    /// Whether this refusal is new (to be logged loudly).
    pub fn first_report(&self, channel_id: u64, code: i64) -> bool {
        self.reported
            .lock()
            .expect("reported lock")
            .insert((channel_id, code))
    }
}

/// Log a channel refusal: a warning the first time for that channel and code, then quietly.
pub fn report_refusal(channel: &DiscordChannel, channel_id: u64, error: &RestError, what: &str) {
    let RestError::Api { code, .. } = error else {
        return;
    };
    if channel.outbound.first_report(channel_id, *code) {
        tracing::warn!(channel = %channel.name, discord_channel = channel_id, code, error = %error, what, "{}; fix it in Discord, nothing is retried", refusal_reason(*code));
    } else {
        tracing::debug!(channel = %channel.name, discord_channel = channel_id, code, what, "discord refused again");
    }
}

/// Deliver one outbound message.
pub async fn send(
    channel: &DiscordChannel,
    message: &OutboundMessage,
) -> Result<SendReceipt, ConnectorError> {
    let channel_id: u64 = message
        .thread
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ConnectorError::Permanent(format!("{:?} is not a discord channel id", message.thread))
        })?;
    let components = components(message);
    let mut parts = split_text(message.text.trim_end(), MAX_MESSAGE_UNITS);
    if parts.iter().all(|part| part.trim().is_empty()) {
        if components.is_empty() {
            // Discord refuses an empty message; there is nothing to say.
            tracing::info!(channel = %channel.name, message = %message.id, "empty message not sent to discord");
            return Ok(SendReceipt::default());
        }
        // Buttons need some content to sit under.
        parts = vec!["\u{2063}".to_string()];
    }
    let delivered = channel.outbound.partial.delivered(&message.id);
    let mut last_id = delivered.last().copied();
    for (index, part) in parts.iter().enumerate() {
        if index < delivered.len() {
            continue;
        }
        let last = index + 1 == parts.len();
        let mut body = serde_json::json!({
            "content": part,
            // A customer's `@everyone` echoed back pings nobody.
            "allowed_mentions": {"parse": []},
            "nonce": nonce(&message.id, index),
            "enforce_nonce": true,
        });
        if last && !components.is_empty() {
            body["components"] = serde_json::Value::Array(components.clone());
        }
        let answer = channel
            .rest
            .call(
                Route::ChannelMessages {
                    channel_id: ChannelId::new(channel_id),
                },
                LightMethod::Post,
                Some(&body),
                None,
            )
            .await;
        match answer {
            Ok(sent) => {
                let id = sent["id"]
                    .as_str()
                    .and_then(|id| id.parse::<u64>().ok())
                    .or_else(|| sent["id"].as_u64());
                last_id = id.or(last_id);
                if !last && let Some(id) = id {
                    channel.outbound.partial.record(&message.id, id);
                }
            }
            Err(error) => {
                if error.is_channel_refusal() {
                    report_refusal(channel, channel_id, &error, "send");
                }
                return Err(error.to_connector_error());
            }
        }
    }
    channel.outbound.partial.forget(&message.id);
    Ok(SendReceipt {
        platform_message_id: last_id.map(|id| id.to_string()),
    })
}

/// Discord's `nonce` for part `index` of a message: at most 25 characters, the same on every
/// retry (FNV-1a of the message id, which is stable across processes, unlike std's hasher).
pub fn nonce(message_id: &str, index: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in message_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}.{index}")
}

/// The assistant's choices as buttons, five to a row (at most 25).
pub fn components(message: &OutboundMessage) -> Vec<serde_json::Value> {
    let buttons: Vec<serde_json::Value> = message
        .choices
        .iter()
        .filter(|choice| {
            let fits = !choice.id.is_empty() && choice.id.chars().count() <= MAX_CUSTOM_ID_CHARS;
            if !fits {
                tracing::warn!(message = %message.id, choice = %choice.id, "choice id does not fit discord's 100-character custom id, button left out");
            }
            fits
        })
        .take(BUTTONS_PER_ROW * MAX_ROWS)
        .map(|choice| {
            let label: String = choice.label.chars().take(MAX_LABEL_CHARS).collect();
            serde_json::json!({
                "type": 2,
                "style": 1,
                "label": if label.trim().is_empty() { choice.id.clone() } else { label },
                "custom_id": choice.id,
            })
        })
        .collect();
    buttons
        .chunks(BUTTONS_PER_ROW)
        .map(|row| serde_json::json!({"type": 1, "components": row}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_connector::{AuthorKind, Choice, Extensions};

    fn message(choices: Vec<Choice>) -> OutboundMessage {
        OutboundMessage {
            id: "0190f5c2-7d7e-7cc0-8000-000000000001".into(),
            conversation_id: "c1".into(),
            channel: "community".into(),
            thread: "42".into(),
            seq: 2,
            author: AuthorKind::Bot,
            text: "hi".into(),
            attachments: Vec::new(),
            choices,
            in_reply_to: None,
            references: Vec::new(),
            extensions: Extensions::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn choices_become_rows_of_five_buttons() {
        let choices = (0..7)
            .map(|n| Choice {
                id: format!("c{n}"),
                label: format!("Choice {n}"),
            })
            .chain([Choice {
                id: "x".repeat(101),
                label: "too long".into(),
            }])
            .collect();
        let rows = components(&message(choices));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["components"].as_array().unwrap().len(), 5);
        assert_eq!(rows[1]["components"].as_array().unwrap().len(), 2);
        assert_eq!(rows[0]["components"][0]["custom_id"], "c0");
        assert_eq!(rows[0]["components"][0]["label"], "Choice 0");
        assert!(components(&message(vec![])).is_empty());
    }

    #[test]
    fn nonces_are_stable_short_and_differ_per_part() {
        let first = nonce("0190f5c2-7d7e-7cc0-8000-000000000001", 0);
        assert_eq!(first, nonce("0190f5c2-7d7e-7cc0-8000-000000000001", 0));
        assert_ne!(first, nonce("0190f5c2-7d7e-7cc0-8000-000000000001", 1));
        assert_ne!(first, nonce("0190f5c2-7d7e-7cc0-8000-000000000002", 0));
        assert!(nonce("x", 99).len() <= 25);
    }

    #[test]
    fn a_refusal_is_reported_loudly_once_per_channel_and_code() {
        let outbound = Outbound::default();
        assert!(outbound.first_report(1, 50013));
        assert!(!outbound.first_report(1, 50013));
        assert!(outbound.first_report(2, 50013));
        assert!(outbound.first_report(1, 50001));
    }
}
