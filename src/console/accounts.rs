//! Staff accounts: roles, argon2id password hashes, sessions with their CSRF tokens, and
//! sign-in with rate limiting per account and per client address.
//!
//! A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the database
//! keeps only its SHA-256, so a leaked database holds no usable session. Each session has its
//! own CSRF token, which every state-changing request must echo in `X-CSRF-Token`.

use std::net::IpAddr;
use std::num::NonZeroU32;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::{Console, ConsoleError};
use crate::store::console::UserRow;
use crate::store::{new_id, now_ms};
use crate::workflow::{Actor, Scope, sha256_hex};

/// What a person may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Conversations: the queue, taking over, replying, handing back.
    Agent,
    /// Back-office task queues (those named by their roles): approve, reject, carry out.
    Backoffice,
    /// Everything, and managing people, teams, API keys, canned replies and channels.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Backoffice => "backoffice",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        [Role::Agent, Role::Backoffice, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == value)
    }
}

/// A signed-in person, as each request sees them.
#[derive(Debug, Clone, Serialize)]
pub struct Staff {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Back-office roles (`finance`, `logistics`): their task queues and approvals.
    pub roles: Vec<String>,
    /// Names of their teams (each works the queue of the same name).
    pub teams: Vec<String>,
    pub availability: String,
    #[serde(skip)]
    pub csrf_token: String,
    /// An admin API key rather than a person: it manages, but never takes conversations.
    #[serde(skip)]
    pub via_api_key: bool,
}

impl Staff {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn works_conversations(&self) -> bool {
        matches!(self.role, Role::Agent | Role::Admin) && !self.via_api_key
    }

    /// How the workflow sees this person: agents read tasks (the customer panel), back-office
    /// staff work the task queues named by their roles, admins do everything.
    pub fn actor(&self) -> Actor {
        match self.role {
            Role::Agent => Actor::staff(
                &self.email,
                vec![Scope::TasksRead, Scope::ConversationsRead],
                self.roles.clone(),
                None,
            ),
            Role::Backoffice => Actor::staff(
                &self.email,
                vec![Scope::TasksRead, Scope::TasksWrite, Scope::TasksApprove],
                self.roles.clone(),
                Some(self.roles.clone()),
            ),
            Role::Admin => Actor::staff(&self.email, vec![Scope::Admin], self.roles.clone(), None),
        }
    }
}

/// A new account.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password: String,
    pub role: Role,
    /// Back-office roles, e.g. `["finance"]`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Team names; teams that do not exist yet are created.
    #[serde(default)]
    pub teams: Vec<String>,
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

pub fn hash_password(password: &str) -> Result<String, ConsoleError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|error| ConsoleError::Internal(format!("salt: {error}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| ConsoleError::Internal(format!("hashing: {error}")))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

pub(super) fn check_password(password: &str) -> Result<(), ConsoleError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ConsoleError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.trim().is_empty() {
        return Err(ConsoleError::invalid("password", "must not be only spaces"));
    }
    Ok(())
}

pub(super) fn check_name(field: &str, name: &str) -> Result<(), ConsoleError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_".contains(&byte)
        });
    if !valid {
        return Err(ConsoleError::invalid(
            field,
            format!("{name:?} must be 1 to 64 of a-z 0-9 - _"),
        ));
    }
    Ok(())
}

/// Sign-in attempts allowed: per account and per client address, each per minute.
pub struct LoginLimits {
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl LoginLimits {
    pub fn new(per_account_per_minute: u32, per_address_per_minute: u32) -> LoginLimits {
        let quota = |per_minute: u32| {
            Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"))
        };
        LoginLimits {
            per_account: RateLimiter::keyed(quota(per_account_per_minute)),
            per_address: RateLimiter::keyed(quota(per_address_per_minute)),
        }
    }

    fn allow(&self, email: &str, address: Option<IpAddr>) -> bool {
        let address_ok = address.is_none_or(|address| self.per_address.check_key(&address).is_ok());
        address_ok && self.per_account.check_key(&email.to_string()).is_ok()
    }
}

/// A session just opened: the cookie's token (shown once) and the person.
pub struct Opened {
    pub token: String,
    pub staff: Staff,
}

/// The same work as a real check, for an unknown account, so that timing does not tell which
/// emails have accounts.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Sv9zCq0aaG3cxT2ZyuJ9OBe5AnbO0pN2gSmr3Y2rUQ";

impl Console {
    /// Create an account (admins over the API; operators on the command line).
    pub async fn create_user(&self, request: NewUser) -> Result<UserRow, ConsoleError> {
        let email = switchboard_connector::normalise_email(&request.email);
        if !switchboard_connector::is_plausible_email(&email) {
            return Err(ConsoleError::invalid("email", "is not an email address"));
        }
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ConsoleError::invalid("name", "must be 1 to 100 characters"));
        }
        check_password(&request.password)?;
        for role in &request.roles {
            check_name("roles", role)?;
        }
        for team in &request.teams {
            check_name("teams", team)?;
        }
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(ConsoleError::Conflict {
                code: "user_exists",
                message: format!("an account for {email} exists"),
            });
        }
        let user = UserRow {
            id: new_id(),
            email,
            name: name.to_string(),
            password_hash: hash_password(&request.password)?,
            role: request.role.as_str().to_string(),
            roles: request.roles.join(" "),
            availability: "offline".into(),
            last_seen_at: None,
            disabled_at: None,
            created_at: now_ms(),
        };
        self.store.insert_user(&user).await.map_err(|error| {
            if error.is_unique_violation() {
                ConsoleError::Conflict {
                    code: "user_exists",
                    message: format!("an account for {} exists", user.email),
                }
            } else {
                error.into()
            }
        })?;
        let team_ids = self.ensure_teams(&request.teams).await?;
        self.store.set_user_teams(&user.id, &team_ids).await?;
        self.teams.reload(&self.store).await?;
        tracing::info!(user = %user.email, role = %user.role, "console account created");
        Ok(user)
    }

    /// The ids of the named teams, creating those that do not exist.
    pub(super) async fn ensure_teams(&self, names: &[String]) -> Result<Vec<String>, ConsoleError> {
        let mut ids = Vec::new();
        for name in names {
            check_name("teams", name)?;
            if self.teams.get(name).is_none() {
                self.store.ensure_team(&super::new_team(name)).await?;
                self.teams.reload(&self.store).await?;
            }
            let team = self
                .teams
                .get(name)
                .ok_or_else(|| ConsoleError::Internal(format!("team {name} not created")))?;
            ids.push(team.row.id.clone());
        }
        Ok(ids)
    }

    pub(super) fn staff_of(&self, user: &UserRow, csrf_token: String) -> Staff {
        Staff {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            role: Role::parse(&user.role).unwrap_or(Role::Agent),
            roles: user.roles.split_whitespace().map(str::to_string).collect(),
            teams: self.teams.of_user(&user.id),
            availability: user.availability.clone(),
            csrf_token,
            via_api_key: false,
        }
    }

    /// Check the credentials and open a session. Refused alike for an unknown account, a
    /// wrong password and a disabled account; too many attempts are refused before checking.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<Opened, ConsoleError> {
        let email = switchboard_connector::normalise_email(email);
        if !self.login_limits.allow(&email, address) {
            tracing::warn!(user = %email, ?address, "sign-in attempts over the limit");
            return Err(ConsoleError::RateLimited);
        }
        let user = self.store.user_by_email(&email).await?;
        let hash = user
            .as_ref()
            .map_or(DUMMY_HASH, |user| user.password_hash.as_str())
            .to_string();
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|error| ConsoleError::Internal(error.to_string()))?;
        let user = match user {
            Some(user) if matches && user.disabled_at.is_none() => user,
            _ => {
                tracing::info!(user = %email, "sign-in refused");
                return Err(ConsoleError::BadCredentials);
            }
        };
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let csrf_token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let now = now_ms();
        let expires = now + self.settings.session_hours as i64 * 3_600_000;
        self.store
            .insert_session(
                &sha256_hex(token.as_bytes()),
                &user.id,
                &csrf_token,
                now,
                expires,
            )
            .await?;
        tracing::info!(user = %user.email, "signed in");
        Ok(Opened {
            token,
            staff: self.staff_of(&user, csrf_token),
        })
    }

    /// The person behind a session cookie's token, if the session is live.
    pub async fn session(&self, token: &str) -> Result<Option<Staff>, ConsoleError> {
        let found = self
            .store
            .session(&sha256_hex(token.as_bytes()), now_ms())
            .await?;
        Ok(found.map(|(user, csrf)| self.staff_of(&user, csrf)))
    }

    pub async fn sign_out(&self, token: &str) -> Result<(), ConsoleError> {
        self.store
            .delete_session(&sha256_hex(token.as_bytes()))
            .await?;
        Ok(())
    }

    /// End every session of a person (their own "sign out everywhere", or an admin's).
    pub async fn sign_out_everywhere(&self, user_id: &str) -> Result<u64, ConsoleError> {
        let ended = self.store.delete_user_sessions(user_id).await?;
        tracing::info!(user = user_id, sessions = ended, "signed out everywhere");
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap());
        // The dummy hash parses, so an unknown account costs a real verification.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn passwords_need_length_and_something_besides_spaces() {
        assert!(check_password("short").is_err());
        assert!(check_password("          ").is_err(), "ten spaces");
        assert!(check_password("\t \n        ").is_err(), "whitespace");
        assert!(check_password("correct horse battery").is_ok());
        assert!(check_password("  spaced out  ").is_ok());
    }

    #[test]
    fn login_limits_per_account_and_address() {
        let limits = LoginLimits::new(3, 5);
        let address: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.allow("a@x.io", Some(address)));
        }
        assert!(
            !limits.allow("a@x.io", Some(address)),
            "account over its limit"
        );
        assert!(limits.allow("b@x.io", Some(address)));
        assert!(
            !limits.allow("c@x.io", Some(address)),
            "address over its limit"
        );
        assert!(limits.allow("d@x.io", Some("127.0.0.2".parse().unwrap())));
    }
}
