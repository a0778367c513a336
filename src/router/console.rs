//! What people do to a conversation through the router, beside the bot's turns: an agent's
//! reply (only while they own it), system notices, typing towards the customer, and the
//! satisfaction rating asked after a conversation is resolved and answered with the
//! channel's choices (web chat buttons).
//!
//! Ownership moves themselves stay [`Router::transfer`]. Every message here goes through the
//! outbox like a turn's reply, and is committed only if the conversation is still at the
//! version it was read at, so a reply never lands after the conversation was taken away.

use std::time::Duration;

use switchboard_connector::{
    AuthorKind, Choice, HostError, InboundEvent, IngestReceipt, LiveEvent, TypingSignal,
};

use super::Router;
use crate::conversation::{Owner, State, Status};
use crate::store::console::PostMessage;
use crate::store::{StoreError, now_ms};

/// Choice ids of the rating buttons: `csat-1` (poor) to `csat-5` (excellent).
const RATING_PREFIX: &str = "csat-";

/// How long after being asked a customer may still rate, and after rating add a comment.
const RATING_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
const COMMENT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Why a message was not posted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The conversation is not in a state that allows it (another agent owns it, ...).
    #[error("the conversation is {} ({})", .0.status, .0.owner)]
    NotAllowed(State),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The score of a rating button, if `choice_id` is one.
pub fn rating_choice(choice_id: &str) -> Option<i64> {
    score(choice_id.strip_prefix(RATING_PREFIX)?)
}

/// The score of an answer to the rating question: the button pressed, or else a message that
/// is just the number (channels without buttons, such as email, or a customer who types it):
/// "4", "4.", "4/5".
fn rating_answer(choice_id: Option<&str>, text: &str) -> Option<i64> {
    if let Some(choice_id) = choice_id {
        return rating_choice(choice_id);
    }
    let text = text.trim();
    let text = text.strip_suffix("/5").unwrap_or(text);
    score(text.trim_end_matches(['.', '!']))
}

fn score(digits: &str) -> Option<i64> {
    let score: i64 = digits.parse().ok()?;
    (digits.len() == 1 && (1..=5).contains(&score)).then_some(score)
}

fn text(language: Option<&str>, en: &str, es: &str, ca: &str) -> String {
    match language {
        Some("es") => es,
        Some("ca") => ca,
        _ => en,
    }
    .to_string()
}

impl Router {
    /// Post a message to the customer if `allowed` accepts the conversation's state, retrying
    /// when the state changed under it (and is still allowed).
    pub async fn post(
        &self,
        conversation_id: &str,
        post: PostMessage,
        allowed: impl Fn(&State) -> bool,
    ) -> Result<LiveEvent, PostError> {
        for _ in 0..5 {
            let conversation = self.store.conversation(conversation_id).await?;
            if !allowed(&conversation.state) {
                return Err(PostError::NotAllowed(conversation.state));
            }
            match self
                .store
                .post_message(
                    &conversation,
                    &post,
                    self.delivery.instance(),
                    self.delivery.lease(),
                )
                .await
            {
                Ok((row, event)) => {
                    self.bus.publish(std::slice::from_ref(&event));
                    self.delivery.submit(vec![row]);
                    return Ok(event);
                }
                Err(StoreError::OwnerChanged(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::OwnerChanged(conversation_id.to_string()).into())
    }

    /// An agent's reply: only while `agent_id` owns the conversation.
    pub async fn agent_reply(
        &self,
        conversation_id: &str,
        agent_id: &str,
        text: &str,
    ) -> Result<LiveEvent, PostError> {
        let owner = Owner::Agent(agent_id.to_string());
        let post = PostMessage {
            author: AuthorKind::Agent,
            author_id: Some(agent_id.to_string()),
            actor: format!("agent:{agent_id}"),
            text: text.to_string(),
            choices: Vec::new(),
        };
        self.post(conversation_id, post, |state| {
            state.status == Status::Agent && state.owner == owner
        })
        .await
    }

    /// A system notice to the customer, whatever the conversation's state.
    pub async fn notify(
        &self,
        conversation_id: &str,
        text: String,
        choices: Vec<Choice>,
    ) -> Result<LiveEvent, PostError> {
        let post = PostMessage {
            author: AuthorKind::System,
            author_id: None,
            actor: "router".into(),
            text,
            choices,
        };
        self.post(conversation_id, post, |_| true).await
    }

    /// An agent is typing (or stopped): shown to the customer, and to other consoles.
    pub async fn agent_typing(
        &self,
        conversation_id: &str,
        active: bool,
    ) -> Result<(), StoreError> {
        let conversation = self.conversation(conversation_id).await?;
        let signal = TypingSignal {
            channel: conversation.channel.clone(),
            thread: conversation.thread.clone(),
            author: AuthorKind::Agent,
            active,
        };
        self.publish_typing(&conversation.id, &signal);
        if let Ok(instance) = self.channels.get(&conversation.channel) {
            instance.connector.typing(&signal).await;
        }
        Ok(())
    }

    /// Contacts were merged: cached conversations may name the old contact.
    pub fn forget_conversations(&self) {
        self.conversations.clear();
    }

    /// Ask the customer of a resolved conversation to rate it, with the channel's choices.
    pub async fn ask_rating(&self, conversation_id: &str) -> Result<(), PostError> {
        let conversation = self.store.conversation(conversation_id).await?;
        let language = conversation.language.as_deref();
        let question = text(
            language,
            "How would you rate the help you got? Answer with a number: 1 is poor, 5 is excellent.",
            "¿Cómo valoras la ayuda recibida? Responde con un número: 1 es mala, 5 es excelente.",
            "Com valores l'ajuda que has rebut? Respon amb un número: 1 és dolenta, 5 és excel·lent.",
        );
        let choices = (1..=5)
            .map(|score| Choice {
                id: format!("{RATING_PREFIX}{score}"),
                label: score.to_string(),
            })
            .collect();
        self.store
            .mark_rating_asked(conversation_id, now_ms())
            .await?;
        self.notify(conversation_id, question, choices).await?;
        Ok(())
    }

    /// A rating button, or the comment that follows it, on a thread whose conversation was
    /// resolved and asked for a rating: stored in that conversation instead of opening a new
    /// one. `None` when the message is not one.
    pub(super) async fn take_rating(
        &self,
        event: &InboundEvent,
    ) -> Result<Option<IngestReceipt>, HostError> {
        let key = (event.channel.clone(), event.thread.clone());
        let score = rating_answer(
            event
                .choice
                .as_ref()
                .map(|choice| choice.choice_id.as_str()),
            &event.text,
        );
        let comment_for = match score {
            Some(_) => None,
            None => match self.awaiting_comment.get(&key) {
                Some((conversation_id, until)) if until > now_ms() => Some(conversation_id),
                _ => return Ok(None),
            },
        };
        let unavailable = |error: StoreError| {
            tracing::error!(channel = %event.channel, error = %error, "rating not stored");
            HostError::Unavailable("storage unavailable".into())
        };
        let asked_after = now_ms() - RATING_WINDOW.as_millis() as i64;
        let target = self
            .store
            .rating_target(&event.channel, &event.thread, asked_after)
            .await
            .map_err(unavailable)?;
        let Some((conversation_id, _)) = target else {
            return Ok(None);
        };
        if comment_for
            .as_ref()
            .is_some_and(|id| *id != conversation_id)
        {
            return Ok(None);
        }
        let conversation = self
            .store
            .conversation(&conversation_id)
            .await
            .map_err(unavailable)?;
        if conversation.state.status != Status::Resolved {
            return Ok(None);
        }
        let comment = comment_for.is_some().then_some(event.text.as_str());
        let stored = self
            .store
            .record_rating(&conversation, event, score, comment)
            .await
            .map_err(unavailable)?;
        self.bus.publish(&stored.events);
        if !stored.duplicate {
            let language = conversation.language.as_deref();
            let thanks = if score.is_some() {
                self.awaiting_comment.insert(
                    key,
                    (
                        conversation_id.clone(),
                        now_ms() + COMMENT_WINDOW.as_millis() as i64,
                    ),
                );
                text(
                    language,
                    "Thank you! If you want to tell us more, write it here.",
                    "¡Gracias! Si quieres contarnos algo más, escríbelo aquí.",
                    "Gràcies! Si ens vols dir alguna cosa més, escriu-la aquí.",
                )
            } else {
                self.awaiting_comment.remove(&key);
                text(
                    language,
                    "Thank you for your comment.",
                    "Gracias por tu comentario.",
                    "Gràcies pel teu comentari.",
                )
            };
            if let Err(error) = self.notify(&conversation_id, thanks, Vec::new()).await {
                tracing::warn!(conversation = %conversation_id, error = %error, "rating thanks not sent");
            }
        }
        Ok(Some(IngestReceipt {
            message_id: stored.message_id,
            conversation_id: stored.conversation_id,
            seq: stored.seq,
            duplicate: stored.duplicate,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{rating_answer, rating_choice};

    #[test]
    fn rating_choices() {
        assert_eq!(rating_choice("csat-1"), Some(1));
        assert_eq!(rating_choice("csat-5"), Some(5));
        for other in [
            "csat-0", "csat-6", "csat-", "x-3", "csat-3x", "csat-+3", "csat-03",
        ] {
            assert_eq!(rating_choice(other), None, "{other}");
        }
    }

    #[test]
    fn typed_ratings() {
        assert_eq!(rating_answer(Some("csat-2"), "2"), Some(2));
        assert_eq!(rating_answer(Some("other"), "2"), None, "another button");
        for (text, score) in [("5", 5), (" 4\n", 4), ("3.", 3), ("1!", 1), ("4/5", 4)] {
            assert_eq!(rating_answer(None, text), Some(score), "{text:?}");
        }
        for text in [
            "0",
            "6",
            "10",
            "+4",
            "4 stars",
            "I want 4 lamps",
            "",
            "four",
        ] {
            assert_eq!(rating_answer(None, text), None, "{text:?}");
        }
    }
}
