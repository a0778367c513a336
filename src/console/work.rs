//! Agents' work on conversations: who may see and do what, the queue as each person sees it,
//! one conversation with everything known about its customer, and the moves (claim, take
//! over, assign, transfer, hand back, resolve), replies, notes and labels. Ownership moves go
//! through [`crate::router::Router::transfer`], the one way to move a conversation's state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_connector::{AuthorKind, EventKind};

use super::{Console, ConsoleError, Staff};
use crate::conversation::{Move, Owner, State, Status};
use crate::router::console::PostError;
use crate::store::NewEvent;
use crate::store::console::{QueueFilter, QueueRow};
use crate::store::{StoreError, Transfer, TransferError, now_ms};

/// Open conversations one queue listing reads at most.
pub const QUEUE_LIMIT: i64 = 500;
/// Longest reply or note, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;

#[derive(Debug, Clone, Serialize)]
pub struct LastMessage {
    pub author: String,
    pub text: String,
    pub at_ms: i64,
}

/// A conversation in the queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueItem {
    pub id: String,
    pub contact_id: String,
    pub contact_name: Option<String>,
    /// The channel instance and its kind (`webchat`, `telegram`, ...).
    pub channel: String,
    pub channel_kind: String,
    pub status: String,
    pub owner: String,
    /// The owner as people read it: a team's or an agent's name, or "bot".
    pub owner_name: String,
    pub language: Option<String>,
    pub labels: Vec<String>,
    pub created_at_ms: i64,
    pub last_seq: i64,
    pub last_event_at_ms: i64,
    pub last_message: Option<LastMessage>,
    /// Since when the customer waits for an answer (their last message is unanswered).
    pub waiting_since_ms: Option<i64>,
    pub waiting_late: bool,
    /// When the first answer from a person is due, while none came yet.
    pub first_response_due_ms: Option<i64>,
    pub first_response_late: bool,
    pub rating: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueCounts {
    pub unassigned: usize,
    pub mine: usize,
    pub team: usize,
    pub all: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub now_ms: i64,
    pub counts: QueueCounts,
    pub items: Vec<QueueItem>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// `unassigned` (default), `mine`, `team` or `all`.
    pub view: Option<String>,
    pub channel: Option<String>,
    pub language: Option<String>,
}

/// Where to assign a conversation: a person or a team.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignTo {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub expected_version: Option<i64>,
}

fn transfer_error(error: TransferError) -> ConsoleError {
    match error {
        TransferError::Invalid(invalid) => ConsoleError::Conflict {
            code: "invalid_move",
            message: invalid.to_string(),
        },
        TransferError::Store(StoreError::OwnerChanged(_)) => ConsoleError::Conflict {
            code: "conversation_changed",
            message: "the conversation changed meanwhile; reload it".into(),
        },
        TransferError::Store(StoreError::NotFound(_)) => not_found(),
        TransferError::Store(error) => error.into(),
    }
}

fn post_error(error: PostError) -> ConsoleError {
    match error {
        PostError::NotAllowed(state) => ConsoleError::Conflict {
            code: "not_your_conversation",
            message: format!(
                "only the agent who owns the conversation may reply; it is {} ({})",
                state.status, state.owner
            ),
        },
        PostError::Store(StoreError::NotFound(_)) => not_found(),
        PostError::Store(error) => error.into(),
    }
}

fn not_found() -> ConsoleError {
    ConsoleError::NotFound {
        code: "conversation_not_found",
        what: "conversation".into(),
    }
}

fn check_text(text: &str) -> Result<String, ConsoleError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return Err(ConsoleError::invalid(
            "text",
            format!("must be 1 to {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(text.to_string())
}

impl Console {
    /// Whether `staff` may see conversations owned by `owner`: agents see all but other
    /// teams' restricted queues; back-office staff see none; admins see all.
    pub fn can_see(&self, staff: &Staff, owner: &str) -> bool {
        if staff.is_admin() {
            return true;
        }
        if !staff.works_conversations() {
            return false;
        }
        match Owner::parse(owner) {
            Some(Owner::Queue(name)) => match self.teams.get(&name) {
                Some(team) if team.row.restricted => staff.teams.contains(&name),
                _ => true,
            },
            _ => true,
        }
    }

    fn require_agent(&self, staff: &Staff) -> Result<(), ConsoleError> {
        if staff.works_conversations() {
            return Ok(());
        }
        Err(ConsoleError::forbidden(
            "conversations are for agents and admins",
        ))
    }

    fn owner_name(&self, owner: &str, names: &HashMap<String, String>) -> String {
        match Owner::parse(owner) {
            Some(Owner::Agent(id)) => names.get(&id).cloned().unwrap_or(id),
            Some(Owner::Queue(name)) => name,
            _ => "bot".into(),
        }
    }

    async fn user_names(&self) -> Result<HashMap<String, String>, ConsoleError> {
        Ok(self
            .store
            .users()
            .await?
            .into_iter()
            .map(|user| (user.id, user.name))
            .collect())
    }

    pub(super) fn item_of(
        &self,
        row: QueueRow,
        names: &HashMap<String, String>,
        now: i64,
    ) -> QueueItem {
        let waiting_since = match row.last_message_author.as_deref() {
            Some("customer") if row.status != "resolved" => row.last_message_at,
            _ => None,
        };
        let waiting_target = self.settings.waiting_target_secs as i64 * 1000;
        let first_due = match row.status.as_str() {
            "queued" | "agent" if row.first_agent_message_at.is_none() => row
                .owner_changed_at
                .map(|at| at + self.settings.first_response_target_secs as i64 * 1000),
            _ => None,
        };
        let channel_kind = self
            .channels
            .get(&row.channel)
            .map(|instance| instance.kind().to_string())
            .unwrap_or_else(|_| "unknown".into());
        QueueItem {
            owner_name: self.owner_name(&row.owner, names),
            labels: serde_json::from_str(&row.labels).unwrap_or_default(),
            last_message: match (
                row.last_message_author,
                row.last_message_text,
                row.last_message_at,
            ) {
                (Some(author), Some(text), Some(at_ms)) => Some(LastMessage {
                    author,
                    text: text.chars().take(200).collect(),
                    at_ms,
                }),
                _ => None,
            },
            waiting_late: waiting_since.is_some_and(|since| now - since > waiting_target)
                && row.status != "bot",
            waiting_since_ms: waiting_since,
            first_response_late: first_due.is_some_and(|due| now > due),
            first_response_due_ms: first_due,
            id: row.id,
            contact_id: row.contact_id,
            contact_name: row.contact_name,
            channel: row.channel,
            channel_kind,
            status: row.status,
            owner: row.owner,
            language: row.language,
            created_at_ms: row.created_at,
            last_seq: row.last_seq,
            last_event_at_ms: row.last_event_at,
            rating: row.rating,
        }
    }

    /// The queue as `staff` sees it: counts per view, and the items of one view.
    pub async fn queue(
        &self,
        staff: &Staff,
        query: &QueueQuery,
    ) -> Result<QueueView, ConsoleError> {
        self.require_agent(staff)?;
        let view = query.view.as_deref().unwrap_or("unassigned");
        if !["unassigned", "mine", "team", "all"].contains(&view) {
            return Err(ConsoleError::invalid(
                "view",
                "must be unassigned, mine, team or all",
            ));
        }
        let rows = self
            .store
            .queue(&QueueFilter {
                statuses: vec!["bot".into(), "queued".into(), "agent".into()],
                limit: QUEUE_LIMIT,
                ..QueueFilter::default()
            })
            .await?;
        let names = self.user_names().await?;
        let now = now_ms();
        let mine = format!("agent:{}", staff.id);
        let team_owners: Vec<String> = staff
            .teams
            .iter()
            .map(|team| format!("queue:{team}"))
            .chain(
                self.teams
                    .all()
                    .values()
                    .filter(|team| staff.teams.contains(&team.row.name))
                    .flat_map(|team| team.members.iter().map(|id| format!("agent:{id}")))
                    .collect::<Vec<_>>(),
            )
            .collect();
        let mut counts = QueueCounts::default();
        let mut items = Vec::new();
        for row in rows {
            if !self.can_see(staff, &row.owner) {
                continue;
            }
            let unassigned = row.status == "queued";
            let is_mine = row.owner == mine;
            let in_team = team_owners.contains(&row.owner);
            counts.all += 1;
            counts.unassigned += usize::from(unassigned);
            counts.mine += usize::from(is_mine);
            counts.team += usize::from(in_team);
            let wanted = match view {
                "unassigned" => unassigned,
                "mine" => is_mine,
                "team" => in_team,
                _ => true,
            } && query
                .channel
                .as_ref()
                .is_none_or(|channel| *channel == row.channel)
                && query
                    .language
                    .as_ref()
                    .is_none_or(|language| row.language.as_ref() == Some(language));
            if wanted {
                items.push(self.item_of(row, &names, now));
            }
        }
        // The longest-waiting first in the unassigned view; the latest activity elsewhere.
        if view == "unassigned" {
            items.sort_by_key(|item| item.waiting_since_ms.unwrap_or(item.last_event_at_ms));
        }
        Ok(QueueView {
            now_ms: now,
            counts,
            items,
        })
    }

    /// One queue item, if `staff` may see it.
    pub async fn queue_item(&self, staff: &Staff, id: &str) -> Result<QueueItem, ConsoleError> {
        self.require_agent(staff)?;
        let rows = self
            .store
            .queue(&QueueFilter {
                ids: Some(vec![id.to_string()]),
                limit: 1,
                ..QueueFilter::default()
            })
            .await?;
        let row = rows.into_iter().next().ok_or_else(not_found)?;
        if !self.can_see(staff, &row.owner) {
            return Err(not_found());
        }
        let names = self.user_names().await?;
        Ok(self.item_of(row, &names, now_ms()))
    }

    /// Everything the console shows about one conversation.
    pub async fn conversation_view(&self, staff: &Staff, id: &str) -> Result<Value, ConsoleError> {
        let item = self.queue_item(staff, id).await?;
        let conversation = self.store.conversation(id).await?;
        let events = self.store.conversation_events(id).await?;
        let handoff = events
            .iter()
            .rev()
            .find(|event| {
                event.kind == EventKind::OwnerChanged && event.data["change"] == "handoff"
            })
            .map(|event| {
                serde_json::json!({
                    "at_ms": event.created_at_ms,
                    "reason": event.data["reason"],
                    "to": event.data["to"],
                    "out_of_hours": event.data.get("out_of_hours").cloned().unwrap_or(Value::Bool(false)),
                    "summary": event.data["summary"],
                })
            });
        let notes: Vec<Value> = events
            .iter()
            .filter(|event| event.kind == EventKind::NoteAdded)
            .map(|event| {
                serde_json::json!({
                    "seq": event.seq,
                    "text": event.data["text"],
                    "author_name": event.data["author_name"],
                    "at_ms": event.created_at_ms,
                })
            })
            .collect();
        let contact = self.contact_view(staff, &conversation.contact_id).await?;
        let names = self.user_names().await?;
        let agents: Vec<Value> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|user| user.disabled_at.is_none() && user.role != "backoffice")
            .map(|user| serde_json::json!({"id": user.id, "name": user.name}))
            .collect();
        let canned = self.canned_replies().await?;
        let teams: Vec<String> = self.teams.all().keys().cloned().collect();
        // Replies of this conversation that could not be delivered, and why.
        let failed: HashMap<&str, &Value> = events
            .iter()
            .filter(|event| event.kind == EventKind::MessageFailed)
            .filter_map(|event| Some((event.data["message_id"].as_str()?, &event.data["error"])))
            .collect();
        let history: Vec<Value> = self
            .store
            .contact_history(&conversation.contact_id, 300)
            .await?
            .into_iter()
            .map(|message| {
                let author_name = match (&message.author, &message.author_id) {
                    (AuthorKind::Agent, Some(id)) => names.get(id).cloned(),
                    _ => None,
                };
                let attachments: Vec<Value> = message
                    .attachments
                    .iter()
                    .enumerate()
                    .map(|(index, attachment)| {
                        serde_json::json!({
                            "name": attachment.name,
                            "mime_type": attachment.mime_type,
                            "size_bytes": attachment.size_bytes,
                            "url": format!("/api/v1/messages/{}/attachments/{index}", message.id),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "id": message.id,
                    "conversation_id": message.conversation_id,
                    "channel": message.channel,
                    "seq": message.seq,
                    "author": message.author.as_str(),
                    "author_name": author_name,
                    "text": message.text,
                    "at_ms": message.created_at,
                    "attachments": attachments,
                    "failed": failed.get(message.id.as_str()),
                })
            })
            .collect();
        // Whether replies on this conversation's thread are given up (the customer blocked
        // the bot, say), shown where the agent writes them.
        let unreachable = contact["unreachable"].as_array().and_then(|marks| {
            marks
                .iter()
                .find(|mark| {
                    mark["channel"] == conversation.channel.as_str()
                        && mark["thread"] == conversation.thread.as_str()
                })
                .cloned()
        });
        Ok(serde_json::json!({
            "conversation": item,
            "version": conversation.state.version,
            "unreachable": unreachable,
            "last_event_seq": events.last().map_or(0, |event| event.seq),
            "handoff": handoff,
            "notes": notes,
            "contact": contact,
            "history": history,
            "agents": agents,
            "teams": teams,
            "canned_replies": canned,
            "me": {"id": staff.id, "name": staff.name},
        }))
    }

    async fn state_for(&self, staff: &Staff, id: &str) -> Result<State, ConsoleError> {
        self.require_agent(staff)?;
        let conversation = match self.store.conversation(id).await {
            Ok(conversation) => conversation,
            Err(StoreError::NotFound(_)) => return Err(not_found()),
            Err(error) => return Err(error.into()),
        };
        if !self.can_see(staff, &conversation.state.owner.to_string()) {
            return Err(not_found());
        }
        Ok(conversation.state)
    }

    async fn transfer(
        &self,
        staff: &Staff,
        id: &str,
        to: Move,
        change: &str,
        expected_version: Option<i64>,
    ) -> Result<State, ConsoleError> {
        let transfer = Transfer {
            to,
            change: change.into(),
            actor: format!("agent:{}", staff.id),
            data: serde_json::json!({"by_name": staff.name}),
        };
        self.router
            .transfer(id, &transfer, expected_version)
            .await
            .map_err(transfer_error)
    }

    fn owns(staff: &Staff, state: &State) -> bool {
        state.owner == Owner::Agent(staff.id.clone())
    }

    /// Take a conversation: a queued one (claim), one the bot is still handling (take
    /// over), or, for admins, one another agent has.
    pub async fn claim(
        &self,
        staff: &Staff,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<State, ConsoleError> {
        let state = self.state_for(staff, id).await?;
        let change = match state.status {
            Status::Queued => "claim",
            Status::Bot => "takeover",
            Status::Agent if Self::owns(staff, &state) => {
                return Err(ConsoleError::Conflict {
                    code: "already_yours",
                    message: "you already have this conversation".into(),
                });
            }
            Status::Agent if staff.is_admin() => "takeover",
            Status::Agent => {
                return Err(ConsoleError::Conflict {
                    code: "owned_by_another_agent",
                    message: "another agent has this conversation; ask them to transfer it".into(),
                });
            }
            Status::Resolved => {
                return Err(ConsoleError::Conflict {
                    code: "invalid_move",
                    message: "the conversation is resolved".into(),
                });
            }
        };
        self.transfer(
            staff,
            id,
            Move::To(Owner::Agent(staff.id.clone())),
            change,
            expected_version,
        )
        .await
    }

    fn may_move(staff: &Staff, state: &State) -> Result<(), ConsoleError> {
        if Self::owns(staff, state) || staff.is_admin() || state.status == Status::Queued {
            return Ok(());
        }
        Err(ConsoleError::forbidden(
            "only the agent who has the conversation (or an admin) may do that",
        ))
    }

    /// Give a conversation to a person or to a team's queue.
    pub async fn assign(
        &self,
        staff: &Staff,
        id: &str,
        to: &AssignTo,
    ) -> Result<State, ConsoleError> {
        let state = self.state_for(staff, id).await?;
        Self::may_move(staff, &state)?;
        let (owner, change) = match (&to.agent_id, &to.team) {
            (Some(agent_id), None) => {
                let user = self
                    .store
                    .user(agent_id)
                    .await?
                    .filter(|user| user.disabled_at.is_none() && user.role != "backoffice")
                    .ok_or_else(|| ConsoleError::invalid("agent_id", "no such agent"))?;
                (Owner::Agent(user.id), "assign")
            }
            (None, Some(team)) => {
                if self.teams.get(team).is_none() {
                    return Err(ConsoleError::invalid("team", "no such team"));
                }
                (Owner::Queue(team.clone()), "transfer")
            }
            _ => {
                return Err(ConsoleError::invalid(
                    "agent_id",
                    "name exactly one of agent_id and team",
                ));
            }
        };
        self.transfer(staff, id, Move::To(owner), change, to.expected_version)
            .await
    }

    /// Give the conversation back to the bot, which resumes with what it knew.
    pub async fn hand_back(&self, staff: &Staff, id: &str) -> Result<State, ConsoleError> {
        let state = self.state_for(staff, id).await?;
        Self::may_move(staff, &state)?;
        self.transfer(staff, id, Move::To(Owner::Bot), "hand_back", None)
            .await
    }

    /// Resolve the conversation and, if configured, ask the customer to rate it.
    pub async fn resolve(&self, staff: &Staff, id: &str) -> Result<State, ConsoleError> {
        let state = self.state_for(staff, id).await?;
        Self::may_move(staff, &state)?;
        let resolved = self
            .transfer(staff, id, Move::Resolve, "resolved", None)
            .await?;
        if self.settings.satisfaction
            && let Err(error) = self.router.ask_rating(id).await
        {
            tracing::warn!(conversation = id, error = %error, "rating not asked");
        }
        Ok(resolved)
    }

    pub async fn reply(&self, staff: &Staff, id: &str, text: &str) -> Result<Value, ConsoleError> {
        self.state_for(staff, id).await?;
        let text = check_text(text)?;
        let event = self
            .router
            .agent_reply(id, &staff.id, &text)
            .await
            .map_err(post_error)?;
        Ok(serde_json::json!({"seq": event.seq, "message_id": event.data["message_id"]}))
    }

    /// A private note: an event, never sent to the customer.
    pub async fn note(&self, staff: &Staff, id: &str, text: &str) -> Result<Value, ConsoleError> {
        self.state_for(staff, id).await?;
        let text = check_text(text)?;
        let conversation = self.store.conversation(id).await?;
        let event = NewEvent {
            kind: EventKind::NoteAdded,
            actor: format!("agent:{}", staff.id),
            data: serde_json::json!({"text": text, "author": staff.id, "author_name": staff.name}),
            message_id: None,
        };
        let live = self.store.add_event(&conversation, &event).await?;
        self.bus.publish(std::slice::from_ref(&live));
        Ok(serde_json::json!({"seq": live.seq}))
    }

    pub async fn set_labels(
        &self,
        staff: &Staff,
        id: &str,
        labels: &[String],
    ) -> Result<Value, ConsoleError> {
        self.state_for(staff, id).await?;
        let mut clean: Vec<String> = Vec::new();
        for label in labels {
            let label = label.trim().to_lowercase();
            if label.is_empty() || label.chars().count() > 40 {
                return Err(ConsoleError::invalid(
                    "labels",
                    "each label is 1 to 40 characters",
                ));
            }
            if !clean.contains(&label) {
                clean.push(label);
            }
        }
        if clean.len() > 20 {
            return Err(ConsoleError::invalid("labels", "at most 20 labels"));
        }
        let conversation = self.store.conversation(id).await?;
        let live = self
            .store
            .set_labels(&conversation, &clean, &format!("agent:{}", staff.id))
            .await?;
        self.bus.publish(std::slice::from_ref(&live));
        Ok(serde_json::json!({"labels": clean, "seq": live.seq}))
    }

    pub async fn typing(&self, staff: &Staff, id: &str, active: bool) -> Result<(), ConsoleError> {
        let state = self.state_for(staff, id).await?;
        if !Self::owns(staff, &state) {
            return Ok(());
        }
        self.router.agent_typing(id, active).await?;
        Ok(())
    }
}
