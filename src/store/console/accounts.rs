//! Staff accounts, teams, sessions and canned replies.

use sqlx::Row;

use crate::store::script::Statement;
use crate::store::{Store, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    /// Space-separated back-office roles.
    pub roles: String,
    pub availability: String,
    pub last_seen_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub restricted: bool,
    pub assignment: String,
    /// JSON.
    pub hours: String,
    pub out_of_hours: String,
    pub last_assigned: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedRow {
    pub id: String,
    pub shortcut: String,
    pub title: String,
    pub body: String,
    pub created_at: i64,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, role, roles, availability, \
                            last_seen_at, disabled_at, created_at";
const TEAM_COLUMNS: &str =
    "id, name, restricted, assignment, hours, out_of_hours, last_assigned, created_at";

fn user_of(row: &sqlx::any::AnyRow) -> StoreResult<UserRow> {
    Ok(UserRow {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        role: row.try_get("role")?,
        roles: row.try_get("roles")?,
        availability: row.try_get("availability")?,
        last_seen_at: row.try_get("last_seen_at")?,
        disabled_at: row.try_get("disabled_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn team_of(row: &sqlx::any::AnyRow) -> StoreResult<TeamRow> {
    Ok(TeamRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        restricted: row.try_get::<i64, _>("restricted")? != 0,
        assignment: row.try_get("assignment")?,
        hours: row.try_get("hours")?,
        out_of_hours: row.try_get("out_of_hours")?,
        last_assigned: row.try_get("last_assigned")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    pub async fn insert_user(&self, user: &UserRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO users (id, email, name, password_hash, role, roles, availability, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                (&user.id).into(),
                (&user.email).into(),
                (&user.name).into(),
                (&user.password_hash).into(),
                (&user.role).into(),
                (&user.roles).into(),
                (&user.availability).into(),
                user.created_at.into(),
            ],
        )])
        .await?;
        Ok(())
    }

    /// Write a user's editable fields (name, password, role, roles, disabled).
    pub async fn update_user(&self, user: &UserRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "UPDATE users SET name = $1, password_hash = $2, role = $3, roles = $4, \
             disabled_at = $5 WHERE id = $6",
            vec![
                (&user.name).into(),
                (&user.password_hash).into(),
                (&user.role).into(),
                (&user.roles).into(),
                user.disabled_at.into(),
                (&user.id).into(),
            ],
        )])
        .await?;
        Ok(())
    }

    pub async fn user(&self, id: &str) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(user_of).transpose()
    }

    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(user_of).transpose()
    }

    pub async fn users(&self) -> StoreResult<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY email");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(user_of).collect()
    }

    /// Set whether an agent takes conversations, and when they were last seen.
    pub async fn set_availability(
        &self,
        user_id: &str,
        availability: &str,
        now: i64,
    ) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "UPDATE users SET availability = $1, last_seen_at = $2 WHERE id = $3",
            vec![availability.into(), now.into(), user_id.into()],
        )])
        .await?;
        Ok(())
    }

    /// The user is still there (their console is open).
    pub async fn touch_user(&self, user_id: &str, now: i64) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "UPDATE users SET last_seen_at = $1 WHERE id = $2",
            vec![now.into(), user_id.into()],
        )])
        .await?;
        Ok(())
    }

    pub async fn insert_team(&self, team: &TeamRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO teams (id, name, restricted, assignment, hours, out_of_hours, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                (&team.id).into(),
                (&team.name).into(),
                i64::from(team.restricted).into(),
                (&team.assignment).into(),
                (&team.hours).into(),
                (&team.out_of_hours).into(),
                team.created_at.into(),
            ],
        )])
        .await?;
        Ok(())
    }

    /// Create a team unless one of that name exists.
    pub async fn ensure_team(&self, team: &TeamRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO teams (id, name, restricted, assignment, hours, out_of_hours, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
            vec![
                (&team.id).into(),
                (&team.name).into(),
                i64::from(team.restricted).into(),
                (&team.assignment).into(),
                (&team.hours).into(),
                (&team.out_of_hours).into(),
                team.created_at.into(),
            ],
        )])
        .await?;
        Ok(())
    }

    pub async fn update_team(&self, team: &TeamRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "UPDATE teams SET restricted = $1, assignment = $2, hours = $3, out_of_hours = $4 \
             WHERE id = $5",
            vec![
                i64::from(team.restricted).into(),
                (&team.assignment).into(),
                (&team.hours).into(),
                (&team.out_of_hours).into(),
                (&team.id).into(),
            ],
        )])
        .await?;
        Ok(())
    }

    pub async fn teams(&self) -> StoreResult<Vec<TeamRow>> {
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(team_of).collect()
    }

    pub async fn set_last_assigned(&self, team_id: &str, user_id: &str) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "UPDATE teams SET last_assigned = $1 WHERE id = $2",
            vec![user_id.into(), team_id.into()],
        )])
        .await?;
        Ok(())
    }

    /// Every (team id, user id) membership.
    pub async fn memberships(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT team_id, user_id FROM team_members ORDER BY team_id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("team_id")?, row.try_get("user_id")?)))
            .collect()
    }

    /// Make `team_ids` the user's teams.
    pub async fn set_user_teams(&self, user_id: &str, team_ids: &[String]) -> StoreResult<()> {
        // One transaction of plain statements: a PostgreSQL script runs as one statement on
        // one snapshot, which cannot delete and re-insert the same key.
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM team_members WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for team_id in team_ids {
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
                .bind(team_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_session(
        &self,
        token_hash: &str,
        user_id: &str,
        csrf_token: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                token_hash.into(),
                user_id.into(),
                csrf_token.into(),
                now.into(),
                expires_at.into(),
            ],
        )])
        .await?;
        Ok(())
    }

    /// The user and CSRF token of a live session.
    pub async fn session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<(UserRow, String)>> {
        let sql = format!(
            "SELECT {}, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
            USER_COLUMNS
                .split(", ")
                .map(|column| format!("u.{column}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((user_of(&row)?, row.try_get("csrf_token")?)))
    }

    pub async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "DELETE FROM sessions WHERE token_hash = $1",
            vec![token_hash.into()],
        )])
        .await?;
        Ok(())
    }

    /// Sign a user out everywhere; returns how many sessions ended.
    pub async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let result = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(result.rows_affected())
    }

    pub async fn insert_canned(&self, canned: &CannedRow) -> StoreResult<()> {
        self.run_script(vec![Statement::new(
            "INSERT INTO canned_replies (id, shortcut, title, body, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                (&canned.id).into(),
                (&canned.shortcut).into(),
                (&canned.title).into(),
                (&canned.body).into(),
                canned.created_at.into(),
            ],
        )])
        .await?;
        Ok(())
    }

    pub async fn canned_replies(&self) -> StoreResult<Vec<CannedRow>> {
        let rows = sqlx::query(
            "SELECT id, shortcut, title, body, created_at FROM canned_replies ORDER BY shortcut",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CannedRow {
                    id: row.try_get("id")?,
                    shortcut: row.try_get("shortcut")?,
                    title: row.try_get("title")?,
                    body: row.try_get("body")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Whether a canned reply was deleted.
    pub async fn delete_canned(&self, id: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM canned_replies WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}
