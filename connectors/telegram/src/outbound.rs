//! Sending: escaped HTML in parts of at most 4,096 characters, choices as an inline keyboard,
//! Telegram's errors turned into what the outbox should do.
//!
//! - 429 carries `retry_after`: a retriable error with that pause, which the outbox applies
//!   to the whole instance.
//! - 403 (the user blocked the bot, left the group, deleted the account): an unreachable
//!   recipient. The app marks the chat unreachable, so later messages to it are given up at
//!   once instead of calling Telegram, until the user writes again.
//! - Network errors and 5xx: retriable (the outbox backs off).
//! - Other 4xx (a bad request): permanent.
//!
//! A message long enough to need several parts remembers which parts went out, so a retry
//! after a failure in the middle does not send the first parts again.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchboard_connector::{ConnectorError, OutboundMessage, PartialSends, SendReceipt};
use teloxide::RequestError;
use teloxide::payloads::SendMessageSetters;
use teloxide::prelude::Requester;
use teloxide::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, MessageId, ParseMode,
    ReplyParameters,
};

use crate::TelegramChannel;
use crate::config::TelegramConfig;
use crate::format::{MAX_MESSAGE_UNITS, escape_html, split_text};

/// Telegram's limit on a button's callback data.
const MAX_CALLBACK_DATA_BYTES: usize = 64;

/// What kind of failure a Bot API error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429: wait this long.
    RetryAfter(Duration),
    /// 403: the user blocked the bot, or the bot is not in the chat any more.
    Blocked,
    /// 401/404 on every call: a bad token.
    Unauthorized,
    /// Worth trying again (network, 5xx, an unreadable answer).
    Temporary,
    /// Will fail the same way again (400).
    Permanent,
}

/// Sort a Bot API error.
pub fn classify(error: &RequestError) -> Failure {
    match error {
        RequestError::RetryAfter(seconds) => Failure::RetryAfter(seconds.duration()),
        RequestError::Api(api) => {
            let description = api.to_string();
            if description.contains("Forbidden") {
                Failure::Blocked
            } else if description.contains("Unauthorized") || description.contains("Not Found") {
                Failure::Unauthorized
            } else if description.contains("Bad Request") {
                Failure::Permanent
            } else {
                // Internal Server Error, Bad Gateway, anything unknown: the server's trouble.
                Failure::Temporary
            }
        }
        RequestError::MigrateToChatId(_) => Failure::Permanent,
        RequestError::Network(_) | RequestError::InvalidJson { .. } | RequestError::Io(_) => {
            Failure::Temporary
        }
    }
}

/// A Bot API error as the outbox reads it.
pub fn to_connector_error(error: &RequestError) -> ConnectorError {
    match classify(error) {
        Failure::RetryAfter(pause) => ConnectorError::Retriable {
            message: format!("telegram flood control: {error}"),
            retry_after: Some(pause),
        },
        Failure::Temporary => ConnectorError::retriable(format!("telegram: {error}")),
        Failure::Blocked => ConnectorError::Unreachable(format!("telegram: {error}")),
        Failure::Unauthorized => ConnectorError::Config(format!("telegram: {error}")),
        Failure::Permanent => ConnectorError::Permanent(format!("telegram refused: {error}")),
    }
}

/// The outbound state of an instance.
pub struct Outbound {
    per_chat: DefaultKeyedRateLimiter<i64>,
    /// Parts already delivered of messages whose sending failed halfway.
    /// The parts of long messages already posted, for a retry to skip.
    partial: PartialSends<i32>,
}

impl Outbound {
    pub fn new(config: &TelegramConfig) -> Outbound {
        let period = Duration::from_secs_f64(1.0 / config.chat_per_second);
        let burst = NonZeroU32::new(config.chat_burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Outbound {
            per_chat: RateLimiter::keyed(quota),
            partial: PartialSends::default(),
        }
    }
}

/// Deliver one outbound message.
pub async fn send(
    channel: &TelegramChannel,
    message: &OutboundMessage,
) -> Result<SendReceipt, ConnectorError> {
    let chat_id: i64 = message.thread.parse().map_err(|_| {
        ConnectorError::Permanent(format!("{:?} is not a telegram chat id", message.thread))
    })?;
    let parts = split_text(&message.text, MAX_MESSAGE_UNITS);
    let keyboard = keyboard(message);
    let reply_to = reply_to(message, chat_id);
    let delivered = channel.outbound.partial.delivered(&message.id);
    let mut last_id = delivered.last().copied();
    for (index, part) in parts.iter().enumerate() {
        if index < delivered.len() {
            continue;
        }
        let last = index + 1 == parts.len();
        channel.outbound.per_chat.until_key_ready(&chat_id).await;
        let mut request = channel
            .bot
            .send_message(ChatId(chat_id), escape_html(part))
            .parse_mode(ParseMode::Html)
            .link_preview_options(LinkPreviewOptions {
                is_disabled: true,
                url: None,
                prefer_small_media: false,
                prefer_large_media: false,
                show_above_text: false,
            });
        if index == 0
            && let Some(reply_to) = reply_to
        {
            request = request.reply_parameters(ReplyParameters {
                allow_sending_without_reply: Some(true),
                ..ReplyParameters::new(MessageId(reply_to))
            });
        }
        if last && let Some(keyboard) = &keyboard {
            request = request.reply_markup(keyboard.clone());
        }
        match request.await {
            Ok(sent) => {
                last_id = Some(sent.id.0);
                if !last {
                    channel.outbound.partial.record(&message.id, sent.id.0);
                }
            }
            Err(error) => return Err(to_connector_error(&error)),
        }
    }
    channel.outbound.partial.forget(&message.id);
    Ok(SendReceipt {
        platform_message_id: last_id.map(|id| format!("{chat_id}:{id}")),
    })
}

/// The assistant's choices as an inline keyboard, one button per row.
fn keyboard(message: &OutboundMessage) -> Option<InlineKeyboardMarkup> {
    let rows: Vec<Vec<InlineKeyboardButton>> = message
        .choices
        .iter()
        .filter(|choice| {
            let fits = !choice.id.is_empty() && choice.id.len() <= MAX_CALLBACK_DATA_BYTES;
            if !fits {
                tracing::warn!(message = %message.id, choice = %choice.id, "choice id does not fit telegram's 64-byte callback data, button left out");
            }
            fits
        })
        .map(|choice| {
            vec![InlineKeyboardButton::callback(
                choice.label.clone(),
                choice.id.clone(),
            )]
        })
        .collect();
    (!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows))
}

/// The message id to quote: only in groups (in a private chat every message answers the one
/// before) and only when the answered message is in this chat.
fn reply_to(message: &OutboundMessage, chat_id: i64) -> Option<i32> {
    if chat_id > 0 {
        return None;
    }
    let answered = message.in_reply_to.as_deref()?;
    let mut parts = answered.split(':');
    let _update_id = parts.next()?;
    let chat: i64 = parts.next()?.parse().ok()?;
    let message_id: i32 = parts.next()?.parse().ok()?;
    (chat == chat_id).then_some(message_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_connector::{AuthorKind, Choice, Extensions};

    fn message(thread: &str, in_reply_to: Option<&str>, choices: Vec<Choice>) -> OutboundMessage {
        OutboundMessage {
            id: "m1".into(),
            conversation_id: "c1".into(),
            channel: "shop-bot".into(),
            thread: thread.into(),
            seq: 2,
            author: AuthorKind::Bot,
            text: "hi".into(),
            attachments: Vec::new(),
            choices,
            in_reply_to: in_reply_to.map(str::to_string),
            references: Vec::new(),
            extensions: Extensions::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn replies_quote_only_in_groups_and_only_their_own_chat() {
        assert_eq!(
            reply_to(&message("-100", Some("7:-100:42"), vec![]), -100),
            Some(42)
        );
        assert_eq!(reply_to(&message("55", Some("7:55:42"), vec![]), 55), None);
        assert_eq!(
            reply_to(&message("-100", Some("7:-200:42"), vec![]), -100),
            None
        );
        assert_eq!(
            reply_to(&message("-100", Some("7:callback"), vec![]), -100),
            None
        );
    }

    #[test]
    fn choices_become_one_button_per_row_and_oversized_ids_are_left_out() {
        let choices = vec![
            Choice {
                id: "refund".into(),
                label: "I want a refund".into(),
            },
            Choice {
                id: "x".repeat(65),
                label: "too long".into(),
            },
            Choice {
                id: "handoff".into(),
                label: "Talk to a person".into(),
            },
        ];
        let markup = keyboard(&message("55", None, choices)).unwrap();
        assert_eq!(markup.inline_keyboard.len(), 2);
        assert_eq!(markup.inline_keyboard[0][0].text, "I want a refund");
        assert!(keyboard(&message("55", None, vec![])).is_none());
    }
}
