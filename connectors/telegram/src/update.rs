//! Which Telegram updates become messages, and how.
//!
//! A pure function of the update and the bot's identity, so every rule here is unit-tested
//! without a Bot API server. Platform ids: `<update_id>:<chat_id>:<message_id>` for a message
//! (the update id makes a redelivered update a duplicate; chat and message ids let a reply
//! quote it), `<update_id>:callback` for a button press. Our own delivered messages are
//! `<chat_id>:<message_id>` ([`crate::outbound`]).

use switchboard_connector::{
    Attachment, CommandReply, Extensions, InboundEvent, PickedChoice, PlatformIdentity,
};
use teloxide::types::{
    CallbackQuery, ChatKind, MaybeInaccessibleMessage, Message, Update, UpdateKind, User,
};

use crate::{BotIdentity, TelegramFields};

/// Telegram's limit on a caption; a longer one is cut (and logged), not refused.
pub const MAX_CAPTION_CHARS: usize = 1024;

/// Telegram's limit on a message's text.
pub const MAX_TEXT_CHARS: usize = 4096;

/// A command the connector answers itself, with a [`CommandReply`] the bot's turn says
/// (stored and sent through the outbox like any reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `/start`: the customer opened the bot; greeted in their language, not answered by the
    /// assistant.
    Start,
    /// `/human`: the customer wants a person; the conversation goes to the queue.
    Human,
}

/// What to do with one update.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store this message (a command with the [`CommandReply`] the bot's turn says).
    Ingest {
        event: Box<InboundEvent>,
        /// Something about the message that was fixed up (an oversized caption), for the log.
        note: Option<&'static str>,
    },
    /// A button was pressed: answer the callback query (so the client stops its spinner) and
    /// store the choice, if it can be read.
    Callback {
        query_id: String,
        event: Option<Box<InboundEvent>>,
    },
    /// Nothing to store; `reason` is logged.
    Skip { reason: &'static str },
}

/// Decide what `update` is for the instance `channel` run by `bot`.
pub fn decide(channel: &str, bot: &BotIdentity, update: &Update) -> Decision {
    match &update.kind {
        UpdateKind::Message(message) => message_decision(channel, bot, update.id.0, message),
        UpdateKind::CallbackQuery(query) => callback_decision(channel, update.id.0, query),
        UpdateKind::EditedMessage(_) => Decision::Skip {
            reason: "edited message (only new messages are answered)",
        },
        UpdateKind::Error(_) => Decision::Skip {
            reason: "update of a kind or shape this connector does not read",
        },
        _ => Decision::Skip {
            reason: "update kind not handled",
        },
    }
}

/// An update as Telegram sends it to a webhook (a JSON object); what a body that is not one
/// fails with.
pub fn parse(body: &[u8]) -> Result<Update, serde_json::Error> {
    serde_json::from_slice(body)
}

fn message_decision(
    channel: &str,
    bot: &BotIdentity,
    update_id: u32,
    message: &Message,
) -> Decision {
    let Some(user) = message.from.as_ref() else {
        return Decision::Skip {
            reason: "message without a sender (a channel post or an anonymous admin)",
        };
    };
    if user.is_bot {
        return Decision::Skip {
            reason: "message from a bot",
        };
    }
    let group = matches!(message.chat.kind, ChatKind::Public(_));
    let (raw_text, mut note) = content_text(message);
    let mention = format!("@{}", bot.username).to_lowercase();
    let mut text = raw_text.clone();
    let mut command = None;
    if let Some(rest) = raw_text.strip_prefix('/') {
        let word = rest.split_whitespace().next().unwrap_or_default();
        let (name, addressee) = match word.split_once('@') {
            Some((name, addressee)) => (name, Some(addressee)),
            None => (word, None),
        };
        if addressee.is_some_and(|addressee| !addressee.eq_ignore_ascii_case(&bot.username)) {
            return Decision::Skip {
                reason: "command for another bot",
            };
        }
        command = match name.to_ascii_lowercase().as_str() {
            "start" => Some(Command::Start),
            "human" | "agent" | "person" => Some(Command::Human),
            _ => None,
        };
    }
    let replied_to_bot = message
        .reply_to_message()
        .and_then(|replied| replied.from.as_ref())
        .is_some_and(|author| author.id.0 == bot.id);
    let mentioned = !bot.username.is_empty() && raw_text.to_lowercase().contains(&mention);
    if group && command.is_none() && !replied_to_bot && !mentioned {
        return Decision::Skip {
            reason: "group message not addressed to the bot",
        };
    }
    if mentioned {
        text = strip_mention(&text, &mention);
    }
    let attachments = attachments(message);
    if text.trim().is_empty() && attachments.is_empty() {
        return Decision::Skip {
            reason: "message without text or a file this connector reads (a sticker, a location, a poll)",
        };
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        text = text.chars().take(MAX_TEXT_CHARS).collect();
        note = Some("text longer than Telegram allows, cut");
    }
    let chat_id = message.chat.id.0;
    let fields = TelegramFields {
        update_id,
        chat_id,
        chat_type: chat_type(message),
        message_id: Some(message.id.0),
        user_id: user.id.0,
        username: user.username.clone(),
        language_code: user.language_code.clone(),
        command: command.map(|command| match command {
            Command::Start => "start".to_string(),
            Command::Human => "human".to_string(),
        }),
    };
    let mut extensions = Extensions::default().with(&fields);
    let sender = identity(user);
    let language = sender.language.as_deref();
    match command {
        // Stored like any message, so the conversation (and its language) exists and agents
        // see it; the bot's turn greets instead of asking the assistant.
        Some(Command::Start) => extensions.insert(&CommandReply {
            reply: greeting(language, sender.display_name.as_deref().unwrap_or_default()),
            handoff: None,
        }),
        Some(Command::Human) => extensions.insert(&CommandReply {
            reply: handoff_notice(language).into(),
            handoff: Some("customer asked for a person (/human)".into()),
        }),
        None => {}
    }
    let event = InboundEvent {
        channel: channel.to_string(),
        platform_message_id: format!("{update_id}:{chat_id}:{}", message.id.0),
        sender,
        thread: chat_id.to_string(),
        text,
        attachments,
        choice: None,
        extensions,
        sent_at_ms: Some(message.date.timestamp_millis()),
    };
    Decision::Ingest {
        event: Box::new(event),
        note,
    }
}

fn callback_decision(channel: &str, update_id: u32, query: &CallbackQuery) -> Decision {
    let query_id = query.id.0.clone();
    let Some(data) = query.data.clone().filter(|data| !data.is_empty()) else {
        return Decision::Callback {
            query_id,
            event: None,
        };
    };
    let message = match &query.message {
        Some(MaybeInaccessibleMessage::Regular(message)) => Some(message.as_ref()),
        _ => None,
    };
    // The pressed button's label, from the keyboard of the message it was on.
    let label = message
        .and_then(|message| message.reply_markup())
        .and_then(|markup| {
            markup
                .inline_keyboard
                .iter()
                .flatten()
                .find_map(|button| match &button.kind {
                    teloxide::types::InlineKeyboardButtonKind::CallbackData(value)
                        if *value == data =>
                    {
                        Some(button.text.clone())
                    }
                    _ => None,
                })
        })
        .unwrap_or_else(|| data.clone());
    let chat_id = query
        .message
        .as_ref()
        .map(|message| message.chat().id.0)
        // A private chat's id is the user's id.
        .unwrap_or(query.from.id.0 as i64);
    let message_platform_id = query
        .message
        .as_ref()
        .map(|message| format!("{chat_id}:{}", message.id().0));
    let fields = TelegramFields {
        update_id,
        chat_id,
        chat_type: message.map(chat_type).unwrap_or_else(|| "private".into()),
        message_id: None,
        user_id: query.from.id.0,
        username: query.from.username.clone(),
        language_code: query.from.language_code.clone(),
        command: None,
    };
    let event = InboundEvent {
        channel: channel.to_string(),
        platform_message_id: format!("{update_id}:callback"),
        sender: identity(&query.from),
        thread: chat_id.to_string(),
        text: label,
        attachments: Vec::new(),
        choice: Some(PickedChoice {
            choice_id: data,
            message_platform_id,
        }),
        extensions: Extensions::default().with(&fields),
        sent_at_ms: None,
    };
    Decision::Callback {
        query_id,
        event: Some(Box::new(event)),
    }
}

/// The Telegram user as a contact identity: Telegram vouches for the user id.
pub fn identity(user: &User) -> PlatformIdentity {
    let mut identity = PlatformIdentity::new(user.id.0.to_string(), true);
    identity.display_name = Some(user.full_name()).filter(|name| !name.trim().is_empty());
    identity.username = user.username.clone();
    identity.language = user.language_code.as_deref().and_then(primary_language);
    identity
}

/// The primary subtag of a language code, lowercased (`pt-br` -> `pt`).
pub fn primary_language(code: &str) -> Option<String> {
    let primary = code.split(['-', '_']).next()?.trim().to_ascii_lowercase();
    (2..=3)
        .contains(&primary.len())
        .then_some(primary)
        .filter(|primary| primary.chars().all(|c| c.is_ascii_lowercase()))
}

fn chat_type(message: &Message) -> String {
    match &message.chat.kind {
        ChatKind::Private(_) => "private".into(),
        ChatKind::Public(public) => match public.kind {
            teloxide::types::PublicChatKind::Group => "group".into(),
            teloxide::types::PublicChatKind::Supergroup(_) => "supergroup".into(),
            teloxide::types::PublicChatKind::Channel(_) => "channel".into(),
        },
    }
}

/// The text of a message, or the caption of a file (cut at Telegram's limit if longer).
fn content_text(message: &Message) -> (String, Option<&'static str>) {
    if let Some(text) = message.text() {
        return (text.to_string(), None);
    }
    let caption = message.caption().unwrap_or_default();
    if caption.chars().count() > MAX_CAPTION_CHARS {
        let cut: String = caption.chars().take(MAX_CAPTION_CHARS).collect();
        return (cut, Some("caption longer than Telegram allows, cut"));
    }
    (caption.to_string(), None)
}

/// Remove the bot's `@username` from the text the assistant reads.
fn strip_mention(text: &str, mention: &str) -> String {
    let lower = text.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; then the text is kept whole.
    if lower.len() != text.len() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(mention) {
        out.push_str(&text[rest..at]);
        rest = at + mention.len();
    }
    out.push_str(&text[rest..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Photos and files as references to Telegram's copy (`file_id`), fetched on demand.
fn attachments(message: &Message) -> Vec<Attachment> {
    let mut attachments = Vec::new();
    if let Some(largest) = message
        .photo()
        .and_then(|sizes| sizes.iter().max_by_key(|size| size.width * size.height))
    {
        attachments.push(Attachment {
            name: "photo.jpg".into(),
            mime_type: "image/jpeg".into(),
            size_bytes: Some(u64::from(largest.file.size)),
            platform_file_id: largest.file.id.0.clone(),
        });
    }
    if let Some(document) = message.document() {
        attachments.push(Attachment {
            name: document
                .file_name
                .clone()
                .unwrap_or_else(|| "document".into()),
            mime_type: document
                .mime_type
                .as_ref()
                .map(|mime| mime.essence_str().to_string())
                .unwrap_or_else(|| "application/octet-stream".into()),
            size_bytes: Some(u64::from(document.file.size)),
            platform_file_id: document.file.id.0.clone(),
        });
    }
    if let Some(video) = message.video() {
        attachments.push(Attachment {
            name: video
                .file_name
                .clone()
                .unwrap_or_else(|| "video.mp4".into()),
            mime_type: video
                .mime_type
                .as_ref()
                .map(|mime| mime.essence_str().to_string())
                .unwrap_or_else(|| "video/mp4".into()),
            size_bytes: Some(u64::from(video.file.size)),
            platform_file_id: video.file.id.0.clone(),
        });
    }
    if let Some(voice) = message.voice() {
        attachments.push(Attachment {
            name: "voice.ogg".into(),
            mime_type: voice
                .mime_type
                .as_ref()
                .map(|mime| mime.essence_str().to_string())
                .unwrap_or_else(|| "audio/ogg".into()),
            size_bytes: Some(u64::from(voice.file.size)),
            platform_file_id: voice.file.id.0.clone(),
        });
    }
    attachments
}

/// The greeting for `/start`, in the user's language where we have one.
pub fn greeting(language: Option<&str>, first_name: &str) -> String {
    let name = first_name.trim();
    match language {
        Some("es") => format!(
            "¡Hola{}! Soy el asistente de la tienda. Pregúntame lo que quieras; escribe /human para hablar con una persona.",
            if name.is_empty() {
                String::new()
            } else {
                format!(", {name}")
            }
        ),
        Some("ca") => format!(
            "Hola{}! Soc l'assistent de la botiga. Pregunta'm el que vulguis; escriu /human per parlar amb una persona.",
            if name.is_empty() {
                String::new()
            } else {
                format!(", {name}")
            }
        ),
        _ => format!(
            "Hello{}! I am the shop's assistant. Ask me anything; type /human to talk to a person.",
            if name.is_empty() {
                String::new()
            } else {
                format!(", {name}")
            }
        ),
    }
}

/// What `/human` is answered with, in the user's language.
pub fn handoff_notice(language: Option<&str>) -> &'static str {
    match language {
        Some("es") => "De acuerdo, te paso con una persona del equipo.",
        Some("ca") => "D'acord, et passo amb una persona de l'equip.",
        _ => "All right, I am passing you to a person from the team.",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Through text, as updates arrive (teloxide's update reader wants borrowed keys).
    fn parse(value: serde_json::Value) -> Result<Update, serde_json::Error> {
        serde_json::from_str(&value.to_string())
    }

    fn bot() -> BotIdentity {
        BotIdentity {
            id: 666,
            username: "ShopBot".into(),
        }
    }

    fn user() -> serde_json::Value {
        json!({"id": 42, "is_bot": false, "first_name": "Ana", "last_name": "García",
               "username": "ana_g", "language_code": "pt-BR"})
    }

    fn private(text: &str) -> Update {
        parse(json!({"update_id": 10, "message": {
            "message_id": 5, "date": 1_700_000_000, "from": user(),
            "chat": {"id": 42, "type": "private", "first_name": "Ana"}, "text": text}}))
        .unwrap()
    }

    fn group(text: &str, reply_to_bot: bool) -> Update {
        let mut message = json!({
            "message_id": 6, "date": 1_700_000_000, "from": user(),
            "chat": {"id": -100, "type": "group", "title": "Fans"}, "text": text});
        if reply_to_bot {
            message["reply_to_message"] = json!({"message_id": 3, "date": 1_700_000_000,
                "chat": {"id": -100, "type": "group", "title": "Fans"}, "text": "earlier",
                "from": {"id": 666, "is_bot": true, "first_name": "Shop"}});
        }
        parse(json!({"update_id": 11, "message": message})).unwrap()
    }

    fn ingested(decision: Decision) -> (InboundEvent, Option<Command>) {
        match decision {
            Decision::Ingest { event, .. } => {
                let command = event
                    .extensions
                    .get::<TelegramFields>()
                    .and_then(|fields| fields.command)
                    .map(|command| match command.as_str() {
                        "start" => Command::Start,
                        "human" => Command::Human,
                        other => panic!("unknown command {other}"),
                    });
                (*event, command)
            }
            other => panic!("expected a message to store, got {other:?}"),
        }
    }

    #[test]
    fn a_private_message_is_a_verified_identity_with_its_language() {
        let (event, command) = ingested(decide("tg", &bot(), &private("hello")));
        assert_eq!(command, None);
        assert_eq!(event.platform_message_id, "10:42:5");
        assert_eq!(event.thread, "42");
        assert_eq!(event.text, "hello");
        assert_eq!(event.sender.platform_user_id, "42");
        assert!(event.sender.verified);
        assert_eq!(event.sender.display_name.as_deref(), Some("Ana García"));
        assert_eq!(event.sender.language.as_deref(), Some("pt"));
        assert_eq!(event.sent_at_ms, Some(1_700_000_000_000));
        let fields = event.extensions.get::<TelegramFields>().unwrap();
        assert_eq!(fields.username.as_deref(), Some("ana_g"));
        assert_eq!(fields.language_code.as_deref(), Some("pt-BR"));
    }

    #[test]
    fn start_is_greeted_and_human_asks_for_a_person() {
        let (event, command) = ingested(decide("tg", &bot(), &private("/start")));
        assert_eq!(command, Some(Command::Start));
        let reply = event.extensions.get::<CommandReply>().expect("a greeting");
        assert!(reply.reply.starts_with("Hello"), "{}", reply.reply);
        assert_eq!(reply.handoff, None);
        let (event, command) = ingested(decide("tg", &bot(), &private("/human@ShopBot")));
        assert_eq!(command, Some(Command::Human));
        let reply = event.extensions.get::<CommandReply>().expect("a notice");
        assert!(reply.handoff.is_some());
        assert!(reply.reply.contains("person"), "{}", reply.reply);
        assert_eq!(
            decide("tg", &bot(), &private("/start@OtherBot")),
            Decision::Skip {
                reason: "command for another bot"
            }
        );
        let (_, command) = ingested(decide("tg", &bot(), &private("/help")));
        assert_eq!(command, None, "other commands are text for the assistant");
    }

    #[test]
    fn groups_are_answered_only_when_addressed() {
        assert!(matches!(
            decide("tg", &bot(), &group("morning all", false)),
            Decision::Skip { .. }
        ));
        let (event, _) = ingested(decide(
            "tg",
            &bot(),
            &group("@shopbot where is my parcel?", false),
        ));
        assert_eq!(event.text, "where is my parcel?");
        assert_eq!(event.thread, "-100");
        let (event, _) = ingested(decide("tg", &bot(), &group("and the invoice?", true)));
        assert_eq!(event.text, "and the invoice?");
        let (_, command) = ingested(decide("tg", &bot(), &group("/human", false)));
        assert_eq!(command, Some(Command::Human));
    }

    #[test]
    fn edits_bots_unknown_kinds_and_stickers_are_skipped() {
        let edited: Update = parse(json!({"update_id": 12, "edited_message": {
            "message_id": 5, "date": 1_700_000_000, "edit_date": 1_700_000_100, "from": user(),
            "chat": {"id": 42, "type": "private", "first_name": "Ana"}, "text": "edited"}}))
        .unwrap();
        assert!(matches!(
            decide("tg", &bot(), &edited),
            Decision::Skip { .. }
        ));
        let unknown: Update = parse(json!({"update_id": 13, "brand_new": {"x": 1}})).unwrap();
        assert!(matches!(
            decide("tg", &bot(), &unknown),
            Decision::Skip { .. }
        ));
        let from_bot: Update = parse(json!({"update_id": 14, "message": {
            "message_id": 5, "date": 1_700_000_000,
            "from": {"id": 7, "is_bot": true, "first_name": "Other"},
            "chat": {"id": 42, "type": "private", "first_name": "Ana"}, "text": "spam"}}))
        .unwrap();
        assert_eq!(
            decide("tg", &bot(), &from_bot),
            Decision::Skip {
                reason: "message from a bot"
            }
        );
        let sticker: Update = parse(json!({"update_id": 15, "message": {
            "message_id": 5, "date": 1_700_000_000, "from": user(),
            "chat": {"id": 42, "type": "private", "first_name": "Ana"},
            "sticker": {"file_id": "s", "file_unique_id": "u", "type": "regular", "width": 512,
                        "height": 512, "is_animated": false, "is_video": false}}}))
        .unwrap();
        assert!(matches!(
            decide("tg", &bot(), &sticker),
            Decision::Skip { .. }
        ));
    }

    #[test]
    fn oversized_captions_are_cut_and_files_are_references() {
        let update: Update = parse(json!({"update_id": 16, "message": {
            "message_id": 8, "date": 1_700_000_000, "from": user(),
            "chat": {"id": 42, "type": "private", "first_name": "Ana"},
            "caption": "é".repeat(2000),
            "document": {"file_id": "doc", "file_unique_id": "u", "file_name": "a.pdf",
                         "mime_type": "application/pdf", "file_size": 99}}}))
        .unwrap();
        let Decision::Ingest { event, note, .. } = decide("tg", &bot(), &update) else {
            panic!("stored")
        };
        assert_eq!(event.text.chars().count(), MAX_CAPTION_CHARS);
        assert!(note.is_some());
        assert_eq!(event.attachments[0].platform_file_id, "doc");
        assert_eq!(event.attachments[0].mime_type, "application/pdf");
    }

    #[test]
    fn a_button_press_carries_its_label_and_the_message_it_was_on() {
        let update: Update = parse(json!({"update_id": 17, "callback_query": {
            "id": "cb1", "from": user(), "chat_instance": "ci", "data": "size-l",
            "message": {"message_id": 9, "date": 1_700_000_000,
                "chat": {"id": 42, "type": "private", "first_name": "Ana"}, "text": "Which size?",
                "reply_markup": {"inline_keyboard": [[{"text": "Small", "callback_data": "size-s"}],
                                                      [{"text": "Large", "callback_data": "size-l"}]]}}}}))
        .unwrap();
        let Decision::Callback { query_id, event } = decide("tg", &bot(), &update) else {
            panic!("a callback")
        };
        assert_eq!(query_id, "cb1");
        let event = event.unwrap();
        assert_eq!(event.text, "Large");
        assert_eq!(event.platform_message_id, "17:callback");
        let choice = event.choice.unwrap();
        assert_eq!(choice.choice_id, "size-l");
        assert_eq!(choice.message_platform_id.as_deref(), Some("42:9"));
    }

    #[test]
    fn greetings_follow_the_language() {
        assert!(greeting(Some("es"), "Ana").starts_with("¡Hola, Ana!"));
        assert!(greeting(Some("ca"), "").starts_with("Hola!"));
        assert!(greeting(Some("ja"), "Ken").starts_with("Hello, Ken!"));
        assert_eq!(primary_language("pt-BR").as_deref(), Some("pt"));
        assert_eq!(primary_language("x").as_deref(), None);
    }
}
