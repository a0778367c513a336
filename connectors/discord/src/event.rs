//! Which Discord messages and button presses become messages for the app, and how.
//!
//! Pure functions of a message (or interaction) and of where it was posted, so every rule is
//! unit-tested (and fuzzed, `fuzz/fuzz_targets/discord_event.rs`) without a gateway. Where a
//! message was posted ([`Place`]) is decided by the caller, because a message read back from a
//! channel's history carries no `guild_id`: the channel it was read from says it instead.
//!
//! Platform ids: a message's own snowflake id (unique across Discord, so a message delivered
//! live and read again from history after a reconnect is one message); `interaction:<id>` for
//! a button press. Our delivered messages are their snowflake id too ([`crate::outbound`]).

use serenity::model::application::{ActionRowComponent, ButtonKind, ComponentInteraction};
use serenity::model::channel::{Message, MessageType};
use serenity::model::user::User;
use switchboard_connector::{Attachment, Extensions, InboundEvent, PickedChoice, PlatformIdentity};

use crate::{BotIdentity, DiscordFields};

/// Longest text taken from a message (Discord's own limit for a bot's message; users with
/// Nitro can send 4,000): longer text is cut, and the cut logged.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Where a message was posted, as far as this connector is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A direct message channel with one user: everything there is for the bot.
    Dm,
    /// A guild support channel of the config: only messages mentioning the bot count, and
    /// they move to the customer's private thread.
    Support,
    /// A private thread this connector opened for one customer: everything there is for the
    /// bot.
    Thread,
    /// Any other channel the bot can read: ignored.
    Elsewhere,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store it; its `thread` is already the channel replies go to.
    Ingest {
        event: Box<InboundEvent>,
        note: Option<&'static str>,
    },
    /// A customer asked in a support channel: store it in the customer's private thread
    /// (opened if they have none yet); the caller sets the event's `thread`.
    OpenThread {
        event: Box<InboundEvent>,
        support_channel: u64,
        user_id: u64,
        /// What the thread is called (the customer's name).
        thread_name: String,
    },
    /// Nothing to store; `reason` is logged.
    Skip { reason: &'static str },
}

/// Decide what `message`, posted at `place`, is for the instance `channel` run by `bot`.
pub fn decide(channel: &str, bot: &BotIdentity, place: Place, message: &Message) -> Decision {
    if place == Place::Elsewhere {
        return Decision::Skip {
            reason: "message in a channel this connector does not serve",
        };
    }
    if message.author.id.get() == bot.id {
        return Decision::Skip {
            reason: "the bot's own message",
        };
    }
    if message.author.bot || message.author.system || message.webhook_id.is_some() {
        return Decision::Skip {
            reason: "message from a bot, a webhook or the system",
        };
    }
    if !matches!(
        message.kind,
        MessageType::Regular | MessageType::InlineReply
    ) {
        return Decision::Skip {
            reason: "not a user's message (a join, a pin, a thread notice)",
        };
    }
    let mentioned = mentions_bot(message, bot.id);
    if place == Place::Support && !mentioned {
        return Decision::Skip {
            reason: "support channel message not addressed to the bot",
        };
    }
    let mut text = strip_mentions(&message.content, bot.id);
    let mut note = None;
    if text.chars().count() > MAX_TEXT_CHARS {
        text = text.chars().take(MAX_TEXT_CHARS).collect();
        note = Some("text longer than Discord allows a bot, cut");
    }
    let attachments = attachments(message);
    if text.trim().is_empty() && attachments.is_empty() {
        return Decision::Skip {
            reason: "message without text or files (a sticker, an embed, a bare mention)",
        };
    }
    let channel_id = message.channel_id.get();
    let fields = DiscordFields {
        message_id: message.id.get(),
        channel_id,
        guild_id: message.guild_id.map(|guild| guild.get()),
        user_id: message.author.id.get(),
        username: message.author.name.clone(),
        global_name: message.author.global_name.clone(),
        support_channel: (place == Place::Support).then_some(channel_id),
    };
    let event = InboundEvent {
        channel: channel.to_string(),
        platform_message_id: message.id.get().to_string(),
        sender: identity(&message.author),
        thread: channel_id.to_string(),
        text,
        attachments,
        choice: None,
        extensions: Extensions::default().with(&fields),
        sent_at_ms: Some(message.timestamp.unix_timestamp() * 1000),
    };
    if place == Place::Support {
        let name = message
            .author
            .global_name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| message.author.name.clone());
        return Decision::OpenThread {
            event: Box::new(event),
            support_channel: channel_id,
            user_id: message.author.id.get(),
            thread_name: thread_name(&name),
        };
    }
    Decision::Ingest {
        event: Box::new(event),
        note,
    }
}

/// A button press on one of the bot's messages: the choice, with the button's label as text.
/// None when the press cannot be read (no custom id, not a button).
pub fn decide_press(channel: &str, interaction: &ComponentInteraction) -> Option<InboundEvent> {
    let custom_id = interaction.data.custom_id.clone();
    if custom_id.is_empty() {
        return None;
    }
    let user = &interaction.user;
    if user.bot {
        return None;
    }
    let label = interaction
        .message
        .components
        .iter()
        .flat_map(|row| row.components.iter())
        .find_map(|component| match component {
            ActionRowComponent::Button(button) => match &button.data {
                ButtonKind::NonLink { custom_id: id, .. } if *id == custom_id => {
                    button.label.clone()
                }
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| custom_id.clone());
    let channel_id = interaction.channel_id.get();
    let fields = DiscordFields {
        message_id: interaction.message.id.get(),
        channel_id,
        guild_id: interaction.guild_id.map(|guild| guild.get()),
        user_id: user.id.get(),
        username: user.name.clone(),
        global_name: user.global_name.clone(),
        support_channel: None,
    };
    Some(InboundEvent {
        channel: channel.to_string(),
        platform_message_id: format!("interaction:{}", interaction.id.get()),
        sender: identity(user),
        thread: channel_id.to_string(),
        text: label,
        attachments: Vec::new(),
        choice: Some(PickedChoice {
            choice_id: custom_id,
            message_platform_id: Some(interaction.message.id.get().to_string()),
        }),
        extensions: Extensions::default().with(&fields),
        sent_at_ms: None,
    })
}

/// A gateway payload as Discord sends it (`{"op": 0, "t": "MESSAGE_CREATE", "s": .., "d": ..}`)
/// read the way the gateway client reads it; what a malformed one fails with. Used by the fuzz
/// target and the tests: the live gateway is read by serenity itself, which logs and skips a
/// payload it cannot read.
pub fn parse_gateway(payload: &str) -> Result<serenity::model::event::GatewayEvent, String> {
    serde_json::from_str(payload).map_err(|error| error.to_string())
}

/// The Discord user as a contact identity: Discord vouches for the user id; the name shown is
/// the global display name, else the username.
pub fn identity(user: &User) -> PlatformIdentity {
    let mut identity = PlatformIdentity::new(user.id.get().to_string(), true);
    identity.display_name = user
        .global_name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| Some(user.name.clone()).filter(|name| !name.trim().is_empty()));
    identity.username = Some(user.name.clone()).filter(|name| !name.trim().is_empty());
    identity
}

fn mentions_bot(message: &Message, bot_id: u64) -> bool {
    message.mentions.iter().any(|user| user.id.get() == bot_id)
        || message.content.contains(&format!("<@{bot_id}>"))
        || message.content.contains(&format!("<@!{bot_id}>"))
}

/// Take the bot's mention (`<@id>`, `<@!id>`) out of the text the assistant reads.
pub fn strip_mentions(text: &str, bot_id: u64) -> String {
    let plain = format!("<@{bot_id}>");
    let nick = format!("<@!{bot_id}>");
    let stripped = text.replace(&plain, " ").replace(&nick, " ");
    if stripped == text {
        return text.to_string();
    }
    stripped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A thread name from the customer's name: Discord allows 1 to 100 characters.
fn thread_name(customer: &str) -> String {
    let name: String = customer
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        "Support".to_string()
    } else {
        format!("Support: {name}")
    }
}

/// Files as references: `<channel id>:<message id>:<attachment id>`. Discord's file URLs are
/// signed and expire, so none is stored; the connector asks for the message again when
/// somebody opens the file.
fn attachments(message: &Message) -> Vec<Attachment> {
    message
        .attachments
        .iter()
        .map(|attachment| Attachment {
            name: attachment.filename.clone(),
            mime_type: attachment
                .content_type
                .clone()
                .map(|mime| {
                    mime.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .filter(|mime| !mime.is_empty())
                .unwrap_or_else(|| "application/octet-stream".into()),
            size_bytes: Some(u64::from(attachment.size)),
            platform_file_id: format!(
                "{}:{}:{}",
                message.channel_id.get(),
                message.id.get(),
                attachment.id.get()
            ),
        })
        .collect()
}

/// The parts of an attachment reference.
pub fn parse_file_id(platform_file_id: &str) -> Option<(u64, u64, u64)> {
    let mut parts = platform_file_id.split(':');
    let channel = parts.next()?.parse().ok()?;
    let message = parts.next()?.parse().ok()?;
    let attachment = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((channel, message, attachment))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bot() -> BotIdentity {
        BotIdentity {
            id: 900,
            username: "switchboard".into(),
        }
    }

    fn user(id: u64, bot: bool) -> serde_json::Value {
        json!({"id": id.to_string(), "username": "ana_g", "global_name": "Ana García",
               "discriminator": "0", "avatar": null, "bot": bot})
    }

    fn message(
        content: &str,
        author: serde_json::Value,
        mentions: Vec<serde_json::Value>,
    ) -> Message {
        serde_json::from_value(json!({
            "id": "5000", "channel_id": "77", "author": author, "content": content,
            "timestamp": "2026-01-02T03:04:05+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": mentions, "mention_roles": [],
            "attachments": [{"id": "31", "filename": "invoice.pdf", "size": 1234,
                             "url": "https://cdn.example/signed?hm=secret", "proxy_url": "https://p",
                             "content_type": "application/pdf; charset=binary"}],
            "embeds": [], "pinned": false, "type": 0}))
        .unwrap()
    }

    #[test]
    fn a_dm_is_a_verified_identity_with_a_file_reference() {
        let Decision::Ingest { event, note } = decide(
            "dc",
            &bot(),
            Place::Dm,
            &message("hello", user(42, false), vec![]),
        ) else {
            panic!("stored")
        };
        assert_eq!(note, None);
        assert_eq!(event.platform_message_id, "5000");
        assert_eq!(event.thread, "77");
        assert_eq!(event.sender.platform_user_id, "42");
        assert!(event.sender.verified);
        assert_eq!(event.sender.display_name.as_deref(), Some("Ana García"));
        assert_eq!(event.sent_at_ms, Some(1_767_323_045_000));
        assert_eq!(event.attachments[0].platform_file_id, "77:5000:31");
        assert_eq!(event.attachments[0].mime_type, "application/pdf");
        assert!(!format!("{event:?}").contains("secret"));
        let fields = event.extensions.get::<DiscordFields>().unwrap();
        assert_eq!(fields.username, "ana_g");
        assert_eq!(parse_file_id("77:5000:31"), Some((77, 5000, 31)));
        assert_eq!(parse_file_id("77:5000"), None);
    }

    #[test]
    fn support_channels_need_a_mention_and_open_a_thread() {
        assert!(matches!(
            decide(
                "dc",
                &bot(),
                Place::Support,
                &message("morning all", user(42, false), vec![])
            ),
            Decision::Skip { .. }
        ));
        let mentioned = message(
            "<@900> where is   my parcel?",
            user(42, false),
            vec![user(900, true)],
        );
        let Decision::OpenThread {
            event,
            support_channel,
            user_id,
            thread_name,
        } = decide("dc", &bot(), Place::Support, &mentioned)
        else {
            panic!("a thread")
        };
        assert_eq!(event.text, "where is my parcel?");
        assert_eq!((support_channel, user_id), (77, 42));
        assert_eq!(thread_name, "Support: Ana García");
        // A nickname mention written in the text counts too.
        let nick = message("<@!900> hi", user(42, false), vec![]);
        assert!(matches!(
            decide("dc", &bot(), Place::Support, &nick),
            Decision::OpenThread { .. }
        ));
    }

    #[test]
    fn bots_the_bot_itself_and_other_channels_are_skipped() {
        for (place, author) in [
            (Place::Dm, user(900, true)),
            (Place::Thread, user(43, true)),
            (Place::Elsewhere, user(42, false)),
        ] {
            assert!(matches!(
                decide("dc", &bot(), place, &message("hi", author, vec![])),
                Decision::Skip { .. }
            ));
        }
    }

    #[test]
    fn gateway_payloads_are_read_or_refused_without_panicking() {
        assert!(parse_gateway("{not json").is_err());
        // A malformed message is no message: serenity reads it as an unknown event.
        let malformed = parse_gateway(r#"{"op": 0, "t": "MESSAGE_CREATE", "s": 1, "d": 5}"#);
        assert!(
            matches!(
                malformed,
                Ok(serenity::model::event::GatewayEvent::Dispatch(
                    1,
                    serenity::model::event::Event::Unknown(_)
                ))
            ),
            "{malformed:?}"
        );
        let unknown = parse_gateway(r#"{"op": 0, "t": "BRAND_NEW", "s": 2, "d": {"x": 1}}"#);
        assert!(unknown.is_ok(), "{unknown:?}");
        let hello = parse_gateway(r#"{"op": 10, "d": {"heartbeat_interval": 41250}}"#);
        assert!(hello.is_ok(), "{hello:?}");
    }
}
