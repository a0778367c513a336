//! Automatic assignment: teams whose rule is `round_robin` or `least_loaded` get their queued
//! conversations, oldest first, given to members who are online (their console was seen
//! lately and they said they are available), each up to a most at once. Assignment goes
//! through the router like any move, pinned to the version read, so a conversation an agent
//! claimed meanwhile is left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Console;
use super::teams::{Assignment, Team};
use crate::conversation::{Move, Owner};
use crate::store::console::QueueFilter;
use crate::store::{StoreResult, Transfer, now_ms};

/// Run assignment rounds until `stop`.
pub async fn run(console: Arc<Console>, stop: CancellationToken) {
    let every = Duration::from_millis(console.settings.assign_interval_ms.max(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(error) = console.assign_round().await {
            tracing::warn!(error = %error, "automatic assignment round failed");
        }
    }
}

impl Console {
    /// One round over every team with automatic assignment; returns how many conversations
    /// were given to someone.
    pub async fn assign_round(&self) -> StoreResult<usize> {
        self.teams.reload(&self.store).await?;
        let now = now_ms();
        let mut assigned = 0;
        let teams: Vec<Team> = self.teams.all().values().cloned().collect();
        for team in teams {
            if team.assignment == Assignment::Manual || team.members.is_empty() {
                continue;
            }
            if !team.hours.is_open(chrono::Utc::now()) {
                continue;
            }
            assigned += self.assign_team(&team, now).await?;
        }
        Ok(assigned)
    }

    async fn assign_team(&self, team: &Team, now: i64) -> StoreResult<usize> {
        let mut waiting = self
            .store
            .queue(&QueueFilter {
                statuses: vec!["queued".into()],
                owners: Some(vec![team.queue_owner()]),
                limit: 100,
                ..QueueFilter::default()
            })
            .await?;
        if waiting.is_empty() {
            return Ok(0);
        }
        waiting.sort_by_key(|row| (row.updated_at, row.id.clone()));
        let online_since = now - self.settings.online_timeout_secs as i64 * 1000;
        let mut online: Vec<String> = Vec::new();
        for member in &team.members {
            let Some(user) = self.store.user(member).await? else {
                continue;
            };
            let available = user.disabled_at.is_none()
                && user.role != "backoffice"
                && user.availability == "online"
                && user.last_seen_at.is_some_and(|seen| seen >= online_since);
            if available {
                online.push(user.id);
            }
        }
        if online.is_empty() {
            return Ok(0);
        }
        online.sort();
        let owners: Vec<String> = online.iter().map(|id| format!("agent:{id}")).collect();
        let mut load: HashMap<String, u32> = online.iter().map(|id| (id.clone(), 0)).collect();
        for row in self
            .store
            .queue(&QueueFilter {
                statuses: vec!["agent".into()],
                owners: Some(owners),
                limit: 10_000,
                ..QueueFilter::default()
            })
            .await?
        {
            if let Some(Owner::Agent(id)) = Owner::parse(&row.owner) {
                *load.entry(id).or_default() += 1;
            }
        }
        let most = self.settings.max_conversations_per_agent.max(1);
        let mut last = team.row.last_assigned.clone();
        let mut assigned = 0;
        for row in waiting {
            let candidates: Vec<&String> = online.iter().filter(|id| load[*id] < most).collect();
            let chosen = match team.assignment {
                Assignment::RoundRobin => {
                    let after = last.as_ref();
                    candidates
                        .iter()
                        .find(|id| after.is_none_or(|last| **id > last))
                        .or(candidates.first())
                        .map(|id| (*id).clone())
                }
                _ => candidates
                    .iter()
                    .min_by_key(|id| (load[**id], (**id).clone()))
                    .map(|id| (*id).clone()),
            };
            let Some(agent) = chosen else { break };
            let transfer = Transfer {
                to: Move::To(Owner::Agent(agent.clone())),
                change: "assigned".into(),
                actor: "assigner".into(),
                data: serde_json::json!({"rule": team.row.assignment, "team": team.row.name}),
            };
            match self
                .router
                .transfer(&row.id, &transfer, Some(row.version))
                .await
            {
                Ok(_) => {
                    *load.entry(agent.clone()).or_default() += 1;
                    self.store.set_last_assigned(&team.row.id, &agent).await?;
                    last = Some(agent);
                    assigned += 1;
                }
                Err(error) => {
                    tracing::debug!(conversation = %row.id, error = %error, "not assigned (it changed meanwhile)");
                }
            }
        }
        Ok(assigned)
    }
}
