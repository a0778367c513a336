//! A conversation's owner and status as types, with the moves the router allows.
//!
//! Exactly one party owns a conversation at a time: the bot, a queue, or a human agent. The
//! status follows the owner (`bot`, `queued`, `agent`) until the conversation is `resolved`.
//! The allowed moves are `bot -> queued -> agent -> (bot | resolved)`, plus taking over from
//! the bot directly, moving between queues and agents, and resolving from any open state. A
//! resolved conversation is reopened to the bot by the customer's next message on its thread
//! ([`Move::Reopen`], when `[router] reopen_resolved` is on, the default); otherwise it stays
//! as history and that message opens a new one.

use std::fmt;

/// Who answers the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Bot,
    Queue(String),
    Agent(String),
}

impl Owner {
    /// Parse the stored form: `bot`, `queue:<name>` or `agent:<id>`.
    pub fn parse(value: &str) -> Option<Owner> {
        if value == "bot" {
            return Some(Owner::Bot);
        }
        let (kind, name) = value.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "queue" => Some(Owner::Queue(name.to_string())),
            "agent" => Some(Owner::Agent(name.to_string())),
            _ => None,
        }
    }

    /// The status an open conversation has under this owner.
    pub fn status(&self) -> Status {
        match self {
            Owner::Bot => Status::Bot,
            Owner::Queue(_) => Status::Queued,
            Owner::Agent(_) => Status::Agent,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Bot => f.write_str("bot"),
            Owner::Queue(name) => write!(f, "queue:{name}"),
            Owner::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Bot,
    Queued,
    Agent,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Bot => "bot",
            Status::Queued => "queued",
            Status::Agent => "agent",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(value: &str) -> Option<Status> {
        [Status::Bot, Status::Queued, Status::Agent, Status::Resolved]
            .into_iter()
            .find(|status| status.as_str() == value)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a conversation stands: its owner, its status and the version every change bumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub owner: Owner,
    pub status: Status,
    pub version: i64,
}

/// A move the router refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a conversation cannot move from {from} ({from_owner}) to {to} ({to_owner})")]
pub struct InvalidMove {
    pub from: Status,
    pub from_owner: String,
    pub to: Status,
    pub to_owner: String,
}

/// The target of a move: a new owner, resolved (keeping the last owner on record), or a
/// resolved conversation reopened to the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    To(Owner),
    Resolve,
    /// The customer wrote again on a resolved conversation's thread: the bot owns it again.
    /// Only the router's ingest makes this move, and only from resolved.
    Reopen,
}

impl State {
    /// The state after `change`, if the rules allow it.
    pub fn apply(&self, change: &Move) -> Result<State, InvalidMove> {
        let (owner, status) = match change {
            Move::To(owner) => (owner.clone(), owner.status()),
            Move::Resolve => (self.owner.clone(), Status::Resolved),
            Move::Reopen => (Owner::Bot, Status::Bot),
        };
        let allowed = match (self.status, status) {
            // Only a reopen leaves resolved, and a reopen leaves only resolved: an agent or
            // the console cannot revive a conversation by handing it back.
            (Status::Resolved, Status::Bot) => *change == Move::Reopen,
            (Status::Resolved, _) => false,
            _ if *change == Move::Reopen => false,
            (_, Status::Resolved) => true,
            // The bot hands over to a queue, or an agent takes over before it does.
            (Status::Bot, Status::Queued | Status::Agent) => true,
            (Status::Bot, Status::Bot) => false,
            // A queue is picked up by an agent, moved to another queue, or given back to the bot.
            (Status::Queued, Status::Agent | Status::Bot) => true,
            (Status::Queued, Status::Queued) => owner != self.owner,
            // An agent hands back to the bot, transfers to a queue or to another agent.
            (Status::Agent, Status::Bot | Status::Queued) => true,
            (Status::Agent, Status::Agent) => owner != self.owner,
        };
        if !allowed {
            return Err(InvalidMove {
                from: self.status,
                from_owner: self.owner.to_string(),
                to: status,
                to_owner: owner.to_string(),
            });
        }
        Ok(State {
            owner,
            status,
            version: self.version + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(owner: Owner, status: Status) -> State {
        State {
            owner,
            status,
            version: 3,
        }
    }

    #[test]
    fn owners_round_trip_and_nonsense_is_refused() {
        for text in ["bot", "queue:support", "agent:7f3a"] {
            assert_eq!(Owner::parse(text).unwrap().to_string(), text);
        }
        for text in ["", "queue:", "robot", "human:1", "bot:1"] {
            assert_eq!(Owner::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_allowed_moves() {
        let bot = state(Owner::Bot, Status::Bot);
        let queued = bot
            .apply(&Move::To(Owner::Queue("support".into())))
            .unwrap();
        assert_eq!((queued.status, queued.version), (Status::Queued, 4));
        let agent = queued.apply(&Move::To(Owner::Agent("a1".into()))).unwrap();
        assert_eq!(agent.status, Status::Agent);
        assert_eq!(
            agent.apply(&Move::To(Owner::Bot)).unwrap().status,
            Status::Bot
        );
        let resolved = agent.apply(&Move::Resolve).unwrap();
        assert_eq!(
            (resolved.status, resolved.owner.clone()),
            (Status::Resolved, Owner::Agent("a1".into()))
        );
        // Taking over before the bot hands off.
        assert!(bot.apply(&Move::To(Owner::Agent("a2".into()))).is_ok());
        // Transfers between agents and queues.
        assert!(agent.apply(&Move::To(Owner::Agent("a2".into()))).is_ok());
        assert!(
            agent
                .apply(&Move::To(Owner::Queue("billing".into())))
                .is_ok()
        );
    }

    #[test]
    fn refused_moves() {
        let bot = state(Owner::Bot, Status::Bot);
        assert!(bot.apply(&Move::To(Owner::Bot)).is_err());
        let agent = state(Owner::Agent("a1".into()), Status::Agent);
        assert!(agent.apply(&Move::To(Owner::Agent("a1".into()))).is_err());
        let resolved = state(Owner::Bot, Status::Resolved);
        for change in [Move::To(Owner::Bot), Move::Resolve] {
            let error = resolved.apply(&change).unwrap_err();
            assert_eq!(error.from, Status::Resolved);
        }
        // Reopening is for resolved conversations only.
        for open in [bot, agent] {
            assert!(open.apply(&Move::Reopen).is_err());
        }
    }

    #[test]
    fn a_resolved_conversation_reopens_to_the_bot() {
        let resolved = state(Owner::Agent("a1".into()), Status::Resolved);
        let reopened = resolved.apply(&Move::Reopen).unwrap();
        assert_eq!(
            reopened,
            State {
                owner: Owner::Bot,
                status: Status::Bot,
                version: 4
            }
        );
    }
}
