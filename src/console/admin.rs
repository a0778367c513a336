//! What admins manage: people (create, change role, roles and teams, disable, sign out
//! everywhere), teams (restriction, assignment rule, business hours), API keys (create and
//! revoke, through the workflow, which owns them), canned replies, and the channels' status.

use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{NewUser, Role, check_name, check_password, hash_password};
use super::hours::Hours;
use super::teams::Assignment;
use super::{Console, ConsoleError, Staff};
use crate::store::console::CannedRow;
use crate::store::{new_id, now_ms};
use crate::workflow::Scope;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub name: Option<String>,
    pub password: Option<String>,
    pub role: Option<Role>,
    pub roles: Option<Vec<String>>,
    pub teams: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamChange {
    #[serde(default)]
    pub name: Option<String>,
    pub restricted: Option<bool>,
    /// `manual`, `round_robin` or `least_loaded`.
    pub assignment: Option<String>,
    /// Business hours (see [`Hours`]); `{}` is always open.
    pub hours: Option<Value>,
    /// `queue` or `bot`.
    pub out_of_hours: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCanned {
    pub shortcut: String,
    pub title: String,
    pub body: String,
}

fn user_json(console: &Console, user: &crate::store::console::UserRow) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "roles": user.roles.split_whitespace().collect::<Vec<_>>(),
        "teams": console.teams.of_user(&user.id),
        "availability": user.availability,
        "last_seen_at_ms": user.last_seen_at,
        "disabled": user.disabled_at.is_some(),
        "created_at_ms": user.created_at,
    })
}

impl Console {
    fn require_admin(&self, staff: &Staff) -> Result<(), ConsoleError> {
        if staff.is_admin() {
            return Ok(());
        }
        Err(ConsoleError::Forbidden {
            code: "admin_only",
            message: "this needs an admin".into(),
        })
    }

    pub async fn admin_users(&self, staff: &Staff) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let users = self.store.users().await?;
        Ok(json!({"data": users.iter().map(|user| user_json(self, user)).collect::<Vec<_>>()}))
    }

    pub async fn admin_create_user(
        &self,
        staff: &Staff,
        request: NewUser,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let user = self.create_user(request).await?;
        Ok(user_json(self, &user))
    }

    pub async fn admin_change_user(
        &self,
        staff: &Staff,
        id: &str,
        change: UserChange,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let mut user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| ConsoleError::NotFound {
                code: "user_not_found",
                what: format!("user {id}"),
            })?;
        if let Some(name) = change.name {
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(ConsoleError::invalid("name", "must be 1 to 100 characters"));
            }
            user.name = name;
        }
        if let Some(password) = change.password {
            check_password(&password)?;
            user.password_hash = hash_password(&password)?;
        }
        if let Some(role) = change.role {
            if user.id == staff.id && role != Role::Admin {
                return Err(ConsoleError::invalid(
                    "role",
                    "you cannot take away your own admin role",
                ));
            }
            user.role = role.as_str().into();
        }
        if let Some(roles) = change.roles {
            for role in &roles {
                check_name("roles", role)?;
            }
            user.roles = roles.join(" ");
        }
        let mut sign_out = false;
        if let Some(disabled) = change.disabled {
            if disabled && user.id == staff.id {
                return Err(ConsoleError::invalid(
                    "disabled",
                    "you cannot disable yourself",
                ));
            }
            user.disabled_at = if disabled { Some(now_ms()) } else { None };
            sign_out = disabled;
        }
        self.store.update_user(&user).await?;
        if let Some(teams) = change.teams {
            let ids = self.ensure_teams(&teams).await?;
            self.store.set_user_teams(&user.id, &ids).await?;
            self.teams.reload(&self.store).await?;
        }
        if sign_out {
            self.sign_out_everywhere(&user.id).await?;
        }
        tracing::info!(user = %user.email, by = %staff.email, "account changed");
        Ok(user_json(self, &user))
    }

    pub async fn admin_sign_out_user(
        &self,
        staff: &Staff,
        id: &str,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let ended = self.sign_out_everywhere(id).await?;
        Ok(json!({"sessions_ended": ended}))
    }

    pub fn teams_json(&self) -> Value {
        let mut teams: Vec<Value> = self
            .teams
            .all()
            .values()
            .map(|team| {
                json!({
                    "id": team.row.id,
                    "name": team.row.name,
                    "restricted": team.row.restricted,
                    "assignment": team.row.assignment,
                    "hours": serde_json::from_str::<Value>(&team.row.hours).unwrap_or(json!({})),
                    "out_of_hours": team.row.out_of_hours,
                    "members": team.members,
                    "open_now": team.hours.is_open(chrono::Utc::now()),
                })
            })
            .collect();
        teams.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({"data": teams})
    }

    pub async fn admin_teams(&self, staff: &Staff) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        self.teams.reload(&self.store).await?;
        Ok(self.teams_json())
    }

    /// Create a team (with `name`) or change one.
    pub async fn admin_save_team(
        &self,
        staff: &Staff,
        name: &str,
        change: TeamChange,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        check_name("name", name)?;
        self.ensure_teams(&[name.to_string()]).await?;
        let mut row = self
            .teams
            .get(name)
            .ok_or_else(|| ConsoleError::Internal(format!("team {name} not created")))?
            .row;
        if let Some(restricted) = change.restricted {
            row.restricted = restricted;
        }
        if let Some(assignment) = change.assignment {
            if Assignment::parse(&assignment).is_none() {
                return Err(ConsoleError::invalid(
                    "assignment",
                    "must be manual, round_robin or least_loaded",
                ));
            }
            row.assignment = assignment;
        }
        if let Some(hours) = change.hours {
            let text = hours.to_string();
            Hours::parse(&text).map_err(|message| ConsoleError::invalid("hours", message))?;
            row.hours = text;
        }
        if let Some(out_of_hours) = change.out_of_hours {
            if !["queue", "bot"].contains(&out_of_hours.as_str()) {
                return Err(ConsoleError::invalid(
                    "out_of_hours",
                    "must be queue or bot",
                ));
            }
            row.out_of_hours = out_of_hours;
        }
        self.store.update_team(&row).await?;
        self.teams.reload(&self.store).await?;
        tracing::info!(team = name, by = %staff.email, "team saved");
        Ok(self.teams_json())
    }

    pub async fn admin_api_keys(&self, staff: &Staff) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let keys = self.store.api_keys().await?;
        Ok(json!({"data": keys.iter().map(|(key, revoked_at)| json!({
            "id": key.id,
            "name": key.name,
            "scopes": key.scopes.split_whitespace().collect::<Vec<_>>(),
            "roles": key.roles.split_whitespace().collect::<Vec<_>>(),
            "created_at_ms": key.created_at,
            "revoked_at_ms": revoked_at,
        })).collect::<Vec<_>>()}))
    }

    /// Create an API key; the answer holds the only copy of the key.
    pub async fn admin_create_api_key(
        &self,
        staff: &Staff,
        request: NewApiKey,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let (principal, key) = self
            .workflow
            .create_api_key(
                &staff.actor(),
                &request.name,
                &request.scopes,
                &request.roles,
            )
            .await?;
        Ok(json!({
            "id": principal.id,
            "name": principal.name,
            "scopes": principal.scopes,
            "roles": principal.roles,
            "key": key,
        }))
    }

    pub async fn admin_revoke_api_key(
        &self,
        staff: &Staff,
        id: &str,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        self.workflow.revoke_api_key(&staff.actor(), id).await?;
        Ok(json!({"revoked": id}))
    }

    pub async fn canned_replies(&self) -> Result<Vec<Value>, ConsoleError> {
        Ok(self
            .store
            .canned_replies()
            .await?
            .into_iter()
            .map(|canned| {
                json!({
                    "id": canned.id,
                    "shortcut": canned.shortcut,
                    "title": canned.title,
                    "body": canned.body,
                })
            })
            .collect())
    }

    pub async fn admin_create_canned(
        &self,
        staff: &Staff,
        request: NewCanned,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let shortcut = request
            .shortcut
            .trim()
            .trim_start_matches('/')
            .to_lowercase();
        check_name("shortcut", &shortcut)?;
        let title = request.title.trim();
        let body = request.body.trim();
        if title.is_empty() || title.chars().count() > 100 {
            return Err(ConsoleError::invalid(
                "title",
                "must be 1 to 100 characters",
            ));
        }
        if body.is_empty() || body.chars().count() > super::work::MAX_TEXT_CHARS {
            return Err(ConsoleError::invalid(
                "body",
                "must be 1 to 4000 characters",
            ));
        }
        let row = CannedRow {
            id: new_id(),
            shortcut,
            title: title.into(),
            body: body.into(),
            created_at: now_ms(),
        };
        self.store.insert_canned(&row).await.map_err(|error| {
            if error.is_unique_violation() {
                ConsoleError::Conflict {
                    code: "shortcut_taken",
                    message: format!("a canned reply is already called /{}", row.shortcut),
                }
            } else {
                error.into()
            }
        })?;
        Ok(json!({"id": row.id, "shortcut": row.shortcut, "title": row.title, "body": row.body}))
    }

    pub async fn admin_delete_canned(
        &self,
        staff: &Staff,
        id: &str,
    ) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        if !self.store.delete_canned(id).await? {
            return Err(ConsoleError::NotFound {
                code: "canned_reply_not_found",
                what: format!("canned reply {id}"),
            });
        }
        Ok(json!({"deleted": id}))
    }

    pub fn admin_channels(&self, staff: &Staff) -> Result<Value, ConsoleError> {
        self.require_admin(staff)?;
        let channels: Vec<_> = self
            .channels
            .all()
            .map(|instance| instance.status.view())
            .collect();
        Ok(json!({"data": channels}))
    }
}
