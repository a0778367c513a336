//! Ownership moves: a conversation given to a new owner (an agent taking over, a hand-back to
//! the bot) or resolved, with the `owner.changed` event that explains it, in one script.

use switchboard_connector::{EventKind, LiveEvent};

use super::events::{NewEvent, Place, live};
use super::script::Statement;
use super::{Store, StoreError, now_ms};
use crate::conversation::{InvalidMove, Move, State};

/// A change of owner or status, and why.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub to: Move,
    /// What kind of change: `handoff`, `takeover`, `hand_back`, `transfer`, `resolved`.
    pub change: String,
    pub actor: String,
    /// More for the event (a handoff's summary).
    pub data: serde_json::Value,
}

/// Why an ownership move was not made.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Invalid(#[from] InvalidMove),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `data` of an owner change: the caller's (a handoff's reason and summary), plus what kind
/// of change, where from and where to.
pub(super) fn owner_change_data(
    current: &State,
    next: &State,
    transfer: &Transfer,
) -> serde_json::Value {
    let mut data = match &transfer.data {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    data.insert("change".into(), transfer.change.clone().into());
    data.insert("from".into(), current.owner.to_string().into());
    data.insert("to".into(), next.owner.to_string().into());
    data.insert("status".into(), next.status.as_str().into());
    serde_json::Value::Object(data)
}

impl Store {
    /// Give a conversation to a new owner (an agent taking over, a hand-back to the bot) or
    /// resolve it, with the event that explains it, if the move is allowed and the
    /// conversation is still at `expected_version` (None: whatever it is now). Turns in
    /// flight for the old owner then commit nothing.
    pub async fn transfer_conversation(
        &self,
        conversation_id: &str,
        transfer: &Transfer,
        expected_version: Option<i64>,
    ) -> Result<(State, LiveEvent), TransferError> {
        // Another writer taking the conversation's next event number is settled by retrying,
        // as a turn's commit is.
        self.retrying(
            |error: &TransferError| {
                matches!(error, TransferError::Store(error) if error.is_unique_violation())
            },
            || self.try_transfer(conversation_id, transfer, expected_version),
        )
        .await
    }

    async fn try_transfer(
        &self,
        conversation_id: &str,
        transfer: &Transfer,
        expected_version: Option<i64>,
    ) -> Result<(State, LiveEvent), TransferError> {
        let now = now_ms();
        let current = self.conversation(conversation_id).await?;
        if let Some(expected) = expected_version
            && expected != current.state.version
        {
            return Err(StoreError::OwnerChanged(conversation_id.to_string()).into());
        }
        let next = current.state.apply(&transfer.to)?;
        let event = NewEvent {
            kind: EventKind::OwnerChanged,
            actor: transfer.actor.clone(),
            data: owner_change_data(&current.state, &next, transfer),
            message_id: None,
        };
        let values = self
            .run_script(vec![
                self.event_statement(conversation_id, 1, &event, now, Some(current.state.version)),
                Statement::new(
                    "UPDATE conversations SET status = $1, owner = $2, updated_at = $3, \
                     version = version + 1 WHERE id = $4 AND version = $5 RETURNING version",
                    vec![
                        next.status.as_str().into(),
                        next.owner.to_string().into(),
                        now.into(),
                        conversation_id.into(),
                        current.state.version.into(),
                    ],
                )
                .returning("version"),
            ])
            .await?;
        let [Some(seq), Some(_version)] = values.as_slice() else {
            return Err(StoreError::OwnerChanged(conversation_id.to_string()).into());
        };
        let place = Place {
            conversation_id: &current.id,
            channel: &current.channel,
            thread: &current.thread,
        };
        let live_event = live(&place, *seq, &event, event.data.clone(), now);
        Ok((next, live_event))
    }
}
