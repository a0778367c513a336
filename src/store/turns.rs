//! Committing a turn: the owner's replies (messages, outbox rows and events), the
//! assistant's state, an owner change and the inbound message marked handled, in one script
//! guarded by the conversation's version.

use std::time::Duration;

use switchboard_connector::{EventKind, OutboundMessage};

use super::events::{MessageFields, NewEvent, Place, live, no_data, with_message};
use super::outbox::OutboxRow;
use super::script::Statement;
use super::transfers::owner_change_data;
use super::{
    Committed, Conversation, Store, StoreError, StoreResult, TurnCommit, json_text, new_id, now_ms,
};
use crate::conversation::State;

impl Store {
    /// Commit one turn: replies (as messages, outbox rows and events), the assistant's state,
    /// an owner change, and the inbound message marked handled, all or nothing. Returns the
    /// outbox rows to deliver, already reserved for `instance`.
    pub async fn commit_turn(
        &self,
        conversation: &Conversation,
        turn: &TurnCommit,
        instance: &str,
        lease: Duration,
    ) -> StoreResult<Committed> {
        self.retrying(StoreError::is_unique_violation, || {
            self.try_commit_turn(conversation, turn, instance, lease)
        })
        .await
    }

    async fn try_commit_turn(
        &self,
        conversation: &Conversation,
        turn: &TurnCommit,
        instance: &str,
        lease: Duration,
    ) -> StoreResult<Committed> {
        let now = now_ms();
        let lease_until = now + lease.as_millis() as i64;
        // Every statement is guarded by the conversation's version as the turn saw it: if an
        // agent took the conversation meanwhile, or anything else changed it, the script
        // writes nothing and the turn is redone on the fresh row. So the bot never answers a
        // conversation it does not own.
        let version = conversation.state.version;
        let next_state = match &turn.transfer {
            Some(transfer) => conversation
                .state
                .apply(&transfer.to)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            None => conversation.state.clone(),
        };
        let mut statements = Vec::new();
        let mut messages = Vec::with_capacity(turn.replies.len());
        let mut events = Vec::new();
        for (position, reply) in turn.replies.iter().enumerate() {
            let choices = json_text(&reply.choices)?;
            let message = OutboundMessage {
                id: new_id(),
                conversation_id: conversation.id.clone(),
                channel: conversation.channel.clone(),
                thread: conversation.thread.clone(),
                seq: 0,
                author: reply.author,
                text: reply.text.clone(),
                attachments: Vec::new(),
                choices: reply.choices.clone(),
                in_reply_to: turn.inbound_platform_id.clone(),
                references: Vec::new(),
                extensions: Default::default(),
                created_at_ms: now,
            };
            // The base is the conversation's last seq before this turn (this turn's replies
            // excluded), so the reply's seq is the same whether the statements of the script see
            // each other's rows (SQLite) or one snapshot (PostgreSQL).
            statements.push(
                Statement::new(
                    "INSERT INTO messages (id, conversation_id, seq, direction, author_kind, \
                     author_id, text, attachments, channel, in_reply_to, created_at, choices) \
                     VALUES ($1, (SELECT id FROM conversations WHERE id = $2 AND version = $10), \
                     COALESCE((SELECT seq FROM messages \
                     WHERE conversation_id = $2 AND (in_reply_to IS NULL OR in_reply_to <> $7) \
                     ORDER BY seq DESC LIMIT 1), 0) + $9, \
                     'out', $3, $4, $5, '[]', $6, $7, $8, $11) \
                     RETURNING seq",
                    vec![
                        (&message.id).into(),
                        (&message.conversation_id).into(),
                        reply.author.as_str().into(),
                        reply.author_id.clone().into(),
                        (&message.text).into(),
                        (&message.channel).into(),
                        (&turn.inbound_message_id).into(),
                        now.into(),
                        (position as i64 + 1).into(),
                        version.into(),
                        choices.into(),
                    ],
                )
                .returning("seq")
                .guarded(),
            );
            statements.push(Store::message_outbox_statement(
                &message.channel,
                &message.id,
                &message.conversation_id,
                now,
                lease_until,
                instance,
                version,
            ));
            let stored = NewEvent {
                kind: EventKind::MessageStored,
                actor: reply.author.as_str().into(),
                data: no_data(),
                message_id: Some(message.id.clone()),
            };
            statements.push(self.event_statement(
                &conversation.id,
                position as i64 + 1,
                &stored,
                now,
                Some(version),
            ));
            events.push(stored);
            messages.push(message);
        }
        if let Some(transfer) = &turn.transfer {
            let changed = NewEvent {
                kind: EventKind::OwnerChanged,
                actor: transfer.actor.clone(),
                data: owner_change_data(&conversation.state, &next_state, transfer),
                message_id: None,
            };
            statements.push(self.event_statement(
                &conversation.id,
                events.len() as i64 + 1,
                &changed,
                now,
                Some(version),
            ));
            events.push(changed);
        }
        statements.push(
            Statement::new(
                "UPDATE messages SET handled_at = $1 WHERE id = $2 \
                 AND EXISTS (SELECT 1 FROM conversations WHERE id = $3 AND version = $4) \
                 RETURNING handled_at",
                vec![
                    now.into(),
                    (&turn.inbound_message_id).into(),
                    (&conversation.id).into(),
                    version.into(),
                ],
            )
            .returning("handled_at"),
        );
        // One UPDATE for every conversation change, and the last statement: on SQLite the
        // statements run in order and the guards above must still see the old version.
        // (PostgreSQL runs the script as one statement, which may modify a row only once.)
        let changes_conversation =
            turn.assistant_state.is_some() || turn.language.is_some() || turn.transfer.is_some();
        if changes_conversation {
            statements.push(Statement::new(
                "UPDATE conversations SET assistant_state = COALESCE($1, assistant_state), \
                 language = COALESCE($2, language), status = $3, owner = $4, updated_at = $5, \
                 version = version + 1 WHERE id = $6 AND version = $7",
                vec![
                    turn.assistant_state
                        .as_ref()
                        .map(|state| state.to_string())
                        .into(),
                    turn.language.clone().into(),
                    next_state.status.as_str().into(),
                    next_state.owner.to_string().into(),
                    now.into(),
                    (&conversation.id).into(),
                    version.into(),
                ],
            ));
        }
        let values = self.run_script(statements).await?;
        if values.iter().all(Option::is_none) {
            // Nothing was written: the guard failed.
            return Err(StoreError::OwnerChanged(conversation.id.clone()));
        }
        let expected = messages.len() * 3 + usize::from(turn.transfer.is_some()) + 1;
        let values: Vec<i64> = values.into_iter().flatten().collect();
        if values.len() != expected {
            return Err(StoreError::Corrupt(format!(
                "turn script returned {} values, expected {expected}",
                values.len()
            )));
        }
        // Returned values come in statement order: (seq, outbox id, event seq) per reply, then
        // the owner change's event seq, then handled_at.
        let place = Place {
            conversation_id: &conversation.id,
            channel: &conversation.channel,
            thread: &conversation.thread,
        };
        let mut queued = Vec::with_capacity(messages.len());
        let mut live_events = Vec::with_capacity(events.len());
        let mut values = values.into_iter();
        let mut events = events.into_iter();
        for mut message in messages {
            let (Some(seq), Some(outbox_id), Some(event_seq), Some(event)) =
                (values.next(), values.next(), values.next(), events.next())
            else {
                return Err(StoreError::Corrupt(
                    "turn script returned too few values".into(),
                ));
            };
            message.seq = seq;
            let data = with_message(
                &event.data,
                &MessageFields {
                    id: &message.id,
                    seq,
                    author: message.author.as_str(),
                    text: &message.text,
                    platform_message_id: None,
                },
            );
            live_events.push(live(&place, event_seq, &event, data, now));
            queued.push(OutboxRow {
                id: outbox_id,
                kind: "message".into(),
                channel: Some(message.channel.clone()),
                lane: message.conversation_id.clone(),
                message_id: Some(message.id.clone()),
                payload: "{}".into(),
                attempts: 0,
                message: Some(message),
            });
        }
        if let (Some(event), Some(event_seq)) = (events.next(), values.next()) {
            live_events.push(live(&place, event_seq, &event, event.data.clone(), now));
        }
        let state = if changes_conversation {
            State {
                version: version + 1,
                ..next_state
            }
        } else {
            next_state
        };
        Ok(Committed {
            outbox: queued,
            state,
            events: live_events,
        })
    }
}
