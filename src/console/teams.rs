//! Teams as the router and the console need them at once: each team's queue, members,
//! restriction, assignment rule and business hours, held in memory and reloaded after every
//! change (and periodically, for changes made by another instance or the command line).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::router::{HandoffDecision, HandoffPolicy};
use crate::store::console::TeamRow;
use crate::store::{Store, StoreResult};

use super::hours::Hours;

/// How queued conversations of a team reach people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    Manual,
    RoundRobin,
    LeastLoaded,
}

impl Assignment {
    pub fn parse(value: &str) -> Option<Assignment> {
        match value {
            "manual" => Some(Assignment::Manual),
            "round_robin" => Some(Assignment::RoundRobin),
            "least_loaded" => Some(Assignment::LeastLoaded),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Team {
    pub row: TeamRow,
    pub hours: Hours,
    pub assignment: Assignment,
    /// Member user ids.
    pub members: Vec<String>,
}

impl Team {
    /// The owner of a conversation waiting in this team's queue.
    pub fn queue_owner(&self) -> String {
        format!("queue:{}", self.row.name)
    }
}

#[derive(Default)]
pub struct Teams {
    by_name: RwLock<Arc<HashMap<String, Team>>>,
}

impl Teams {
    /// Read every team and membership again.
    pub async fn reload(&self, store: &Store) -> StoreResult<()> {
        let rows = store.teams().await?;
        let memberships = store.memberships().await?;
        let mut by_name = HashMap::new();
        for row in rows {
            let hours = Hours::parse(&row.hours).unwrap_or_else(|error| {
                tracing::warn!(team = %row.name, error = %error, "team hours unreadable, taken as always open");
                Hours::always()
            });
            let members = memberships
                .iter()
                .filter(|(team_id, _)| *team_id == row.id)
                .map(|(_, user_id)| user_id.clone())
                .collect();
            let team = Team {
                assignment: Assignment::parse(&row.assignment).unwrap_or(Assignment::Manual),
                hours,
                members,
                row,
            };
            by_name.insert(team.row.name.clone(), team);
        }
        *self.by_name.write().expect("teams lock") = Arc::new(by_name);
        Ok(())
    }

    pub fn all(&self) -> Arc<HashMap<String, Team>> {
        self.by_name.read().expect("teams lock").clone()
    }

    pub fn get(&self, name: &str) -> Option<Team> {
        self.all().get(name).cloned()
    }

    /// The names of the teams a user belongs to.
    pub fn of_user(&self, user_id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .all()
            .values()
            .filter(|team| team.members.iter().any(|member| member == user_id))
            .map(|team| team.row.name.clone())
            .collect();
        names.sort();
        names
    }
}

impl HandoffPolicy for Teams {
    fn decide(&self, queue: &str, language: Option<&str>) -> HandoffDecision {
        let Some(team) = self.get(queue) else {
            return HandoffDecision::Open;
        };
        let now = chrono::Utc::now();
        if team.hours.is_open(now) {
            return HandoffDecision::Open;
        }
        HandoffDecision::Closed {
            notice: team.hours.closed_notice(now, language),
            back_to_bot: team.row.out_of_hours == "bot",
        }
    }
}
