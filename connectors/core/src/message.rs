//! The messages that cross between the app and a connector.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorKind {
    Customer,
    Bot,
    Agent,
    System,
}

impl AuthorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorKind::Customer => "customer",
            AuthorKind::Bot => "bot",
            AuthorKind::Agent => "agent",
            AuthorKind::System => "system",
        }
    }

    pub fn parse(value: &str) -> Option<AuthorKind> {
        match value {
            "customer" => Some(AuthorKind::Customer),
            "bot" => Some(AuthorKind::Bot),
            "agent" => Some(AuthorKind::Agent),
            "system" => Some(AuthorKind::System),
            _ => None,
        }
    }
}

/// A file attached to a message, as a reference to the platform's copy. The bytes stay on the
/// platform and are fetched through the connector when someone opens the file, so no URL with
/// a token in it is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub mime_type: String,
    pub size_bytes: Option<u64>,
    /// The platform's id of the file (a Telegram `file_id`, an IMAP part path, a Discord
    /// attachment id); only its own connector can resolve it.
    pub platform_file_id: String,
}

/// The bytes of an attachment, fetched on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentBody {
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

/// A quick-reply button offered with an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Stable within the message; comes back in [`PickedChoice::choice_id`].
    pub id: String,
    pub label: String,
}

/// The customer picked one of the choices of an earlier message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickedChoice {
    pub choice_id: String,
    /// The platform id of the message that offered it, when the platform says.
    pub message_platform_id: Option<String>,
}

/// A typed channel-specific field (an email's subject and headers, ...), carried in
/// [`Extensions`] under [`Extension::KEY`] instead of a column per platform.
pub trait Extension: Serialize + DeserializeOwned {
    const KEY: &'static str;
}

/// Channel-specific fields of a message, each a typed [`Extension`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Extensions(BTreeMap<String, serde_json::Value>);

impl Extensions {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The extension of type `T`, if present and well formed.
    pub fn get<T: Extension>(&self) -> Option<T> {
        let value = self.0.get(T::KEY)?;
        serde_json::from_value(value.clone()).ok()
    }

    pub fn insert<T: Extension>(&mut self, extension: &T) {
        if let Ok(value) = serde_json::to_value(extension) {
            self.0.insert(T::KEY.to_string(), value);
        }
    }

    pub fn with<T: Extension>(mut self, extension: &T) -> Extensions {
        self.insert(extension);
        self
    }
}

/// Marks an inbound message that nobody should answer: one a machine sent (an auto-reply, a
/// bounce, list mail), so that two automatic responders never answer each other, or history
/// imported from the platform. The app stores it in its thread's conversation, where agents
/// see it, but no owner takes a turn on it and it reopens nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOnly {
    /// Why, such as `auto-submitted: auto-replied` or `imported`.
    pub reason: String,
}

impl Extension for RecordOnly {
    const KEY: &'static str = "record_only";
}

/// A command the channel answers itself (Telegram's `/start` and `/human`): the bot's turn on
/// it says `reply`, stored and delivered through the outbox like any reply, and with `handoff`
/// hands the conversation to the default queue; the assistant is not asked. Only a
/// conversation the bot owns takes that turn; one already with people stays where it is, and
/// its people see the command as the customer's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// What the bot answers, in the customer's language.
    pub reply: String,
    /// Why the conversation goes to people (`customer asked for a person (/human)`), if it does.
    pub handoff: Option<String>,
}

impl Extension for CommandReply {
    const KEY: &'static str = "command_reply";
}

/// The sender of an inbound event as the platform identifies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformIdentity {
    /// The platform's stable id for the person (Telegram user id, email address, visitor id).
    pub platform_user_id: String,
    pub display_name: Option<String>,
    /// The person's handle on the platform (Telegram's `@username`), which may change.
    #[serde(default)]
    pub username: Option<String>,
    /// True when the platform itself vouches for this identity (a signed web chat session, a
    /// Telegram user id). Back-office actions only trust verified identities.
    pub verified: bool,
    /// An email address the channel vouches for (a shop's signed-in customer in web chat). The
    /// app links it to the contact, so the back office knows which orders are theirs.
    #[serde(default)]
    pub email: Option<String>,
    /// The language the platform reports for the person (Telegram's `language_code`).
    #[serde(default)]
    pub language: Option<String>,
}

impl PlatformIdentity {
    pub fn new(platform_user_id: impl Into<String>, verified: bool) -> PlatformIdentity {
        PlatformIdentity {
            platform_user_id: platform_user_id.into(),
            display_name: None,
            username: None,
            verified,
            email: None,
            language: None,
        }
    }
}

/// An email address in the one form that is signed, linked and compared: trimmed and
/// lower-cased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether a normalised email looks like an address (`local@domain.tld`, no spaces).
pub fn is_plausible_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
    })
}

/// A customer's message as a connector hands it to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The instance it came in on (the host's [`crate::ConnectorHost::channel`]).
    pub channel: String,
    /// The platform's own id for this message; `(channel, platform_message_id)` is unique.
    pub platform_message_id: String,
    pub sender: PlatformIdentity,
    /// The platform's conversation (chat id, email thread, web chat visitor); replies go there.
    pub thread: String,
    /// The text; for a picked choice, its label.
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// Set when the event is a quick-reply button pressed rather than typed text.
    #[serde(default)]
    pub choice: Option<PickedChoice>,
    #[serde(default)]
    pub extensions: Extensions,
    /// When the platform says the message was sent, in milliseconds since the Unix epoch.
    pub sent_at_ms: Option<i64>,
}

impl InboundEvent {
    /// A plain text message.
    pub fn text(
        channel: impl Into<String>,
        platform_message_id: impl Into<String>,
        sender: PlatformIdentity,
        thread: impl Into<String>,
        text: impl Into<String>,
    ) -> InboundEvent {
        InboundEvent {
            channel: channel.into(),
            platform_message_id: platform_message_id.into(),
            sender,
            thread: thread.into(),
            text: text.into(),
            attachments: Vec::new(),
            choice: None,
            extensions: Extensions::default(),
            sent_at_ms: None,
        }
    }
}

/// What the app did with an inbound event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReceipt {
    /// The app's id for the stored message.
    pub message_id: String,
    pub conversation_id: String,
    /// Position of the message in its conversation.
    pub seq: i64,
    /// True when this platform message id had been stored before: nothing new was stored.
    pub duplicate: bool,
}

/// A stored message, as connectors show history to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub author: AuthorKind,
    pub text: String,
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// The platform's id: of an inbound message, or the receipt of a delivered one.
    pub platform_message_id: Option<String>,
    pub created_at_ms: i64,
}

/// Where a platform message id leads: our message and its conversation's thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub message_id: String,
    pub conversation_id: String,
    pub thread: String,
    pub author: AuthorKind,
    /// False once the conversation was resolved.
    pub open: bool,
}

/// A message for a connector to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// The app's message id; stable across retries, so a platform or client can drop a repeat.
    pub id: String,
    pub conversation_id: String,
    /// The instance to deliver through.
    pub channel: String,
    /// The platform conversation to deliver to (see [`InboundEvent::thread`]).
    pub thread: String,
    pub seq: i64,
    pub author: AuthorKind,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// Quick-reply buttons, for connectors whose [`crate::Capabilities::choices`] is set.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// The platform's id of the message this answers (Telegram `reply_to_message_id`, email
    /// `In-Reply-To`), when it answers one that has a platform id.
    pub in_reply_to: Option<String>,
    /// The platform ids of the conversation's earlier messages, oldest first (email's
    /// `References`); filled only for connectors with
    /// [`crate::Capabilities::thread_references`].
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub extensions: Extensions,
    pub created_at_ms: i64,
}

/// A platform's receipt for a delivered message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The platform's id of the delivered message, when it has one of its own; recorded, so
    /// that a platform reply to it finds its conversation.
    pub platform_message_id: Option<String>,
}

/// Presence signals that are not stored: someone is typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingSignal {
    pub channel: String,
    pub thread: String,
    pub author: AuthorKind,
    pub active: bool,
}

/// The bot's reply so far, while a model writes it: the whole text each time, not a piece.
/// Never stored; the bot's next message replaces it, and an empty `text` takes it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftSignal {
    pub channel: String,
    pub thread: String,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Subject {
        subject: String,
    }

    impl Extension for Subject {
        const KEY: &'static str = "test.subject";
    }

    #[test]
    fn extensions_are_typed_and_round_trip_as_json() {
        let extensions = Extensions::default().with(&Subject {
            subject: "Re: order 1043".into(),
        });
        let json = serde_json::to_string(&extensions).unwrap();
        assert_eq!(json, r#"{"test.subject":{"subject":"Re: order 1043"}}"#);
        let back: Extensions = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.get::<Subject>(),
            Some(Subject {
                subject: "Re: order 1043".into()
            })
        );
        assert!(Extensions::default().get::<Subject>().is_none());
    }
}
