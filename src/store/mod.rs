//! Persistence: every SQL statement of Switchboard lives under this module.
//!
//! One SQL text serves SQLite (the embedded default) and PostgreSQL (scale-out) through sqlx's
//! `Any` driver: ids are TEXT, timestamps BIGINT milliseconds, JSON is TEXT, and placeholders
//! are `$n`, which both backends accept. Where the dialects differ (row locking for the outbox)
//! the [`Backend`] picks the text.
//!
//! SQLite allows one writer at a time, so writes queue in-process instead of failing with
//! SQLITE_BUSY: scripts go to the group-commit writer ([`group`]), the few other writes to a
//! single-connection write pool, and the two take turns; reads use a pool of their own. All run
//! in WAL mode. PostgreSQL uses one pool for both, and runs scripts on connections of their own
//! ([`connections`]).

mod connections;
pub mod console;
mod conversations;
mod cursors;
mod events;
mod group;
mod outbox;
mod reachability;
mod script;
mod transfers;
mod turns;
mod workflow;

pub use conversations::{
    Committed, Conversation, IngestOptions, Ingested, NewReply, PendingInbound, TurnCommit,
};
pub use cursors::CursorWrite;
pub use events::NewEvent;
pub use outbox::{Finished, OutboxRow, Outcome as DeliveryOutcome};
pub use reachability::{Unreachable, UnreachableThread};
pub use transfers::{Transfer, TransferError};
pub use workflow::{
    ApiKeyRow, CustomerNotice, DeliveryRow, IdempotencyHit, IdempotencyRecord, OrderRow,
    ProductRow, TaskCommit, TaskConflict, TaskEventRow, TaskFilter, TaskRow, TaskUpdate,
    WebhookRow, task_conflict,
};

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Connection, Executor, Row};
use switchboard_connector::{Attachment, AuthorKind, ChannelMessage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The conversation changed (owner, state) since it was read; nothing was written.
    #[error("conversation {0} changed since it was read")]
    OwnerChanged(String),
}

impl StoreError {
    /// A unique-constraint race between instances; the caller may retry.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(error)) => error.is_unique_violation(),
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What runs a store's scripts (see [`script`]).
#[derive(Clone, Debug)]
enum Scripts {
    /// SQLite: the group-commit writer.
    Group(group::GroupWriter),
    /// PostgreSQL: connections of their own ([`connections`]).
    Connections(connections::ScriptConnections),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    /// What runs scripts, which also says the backend.
    scripts: Scripts,
    /// See [`Store::retried_writes`].
    retries: Arc<AtomicU64>,
}

/// How many times a write that lost a race on a unique constraint is written again. With these
/// retries and their pauses, 64, 96 and 256 writers of one conversation at once on PostgreSQL
/// (eight connections) lost no write in 30 to 40 runs each, and 128 writers lost one in 2 runs
/// of 30; with ten retries at once, one run in seven to one in two lost one
/// (docs/performance.md).
const RETRIES: u32 = 16;

/// The longest pause before a retry (see [`Store::retrying`]).
const LONGEST_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How long a statement waits for a PostgreSQL connection, a new one's opening included.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a PostgreSQL connection may sit idle in the pool before it is pinged on its next
/// acquire. Under load connections are back in use within milliseconds and skip the ping.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pause before retry number `attempt` (from 1): none before the first, then a random
/// pause of up to 1, 2, 4, ... ms, at most [`LONGEST_RETRY_PAUSE`]: half a second in all at
/// worst over the [`RETRIES`].
fn retry_pause(attempt: u32) -> Option<Duration> {
    use rand::Rng;
    let ceiling =
        Duration::from_millis(1u64 << attempt.checked_sub(2)?.min(16)).min(LONGEST_RETRY_PAUSE);
    Some(rand::rng().random_range(Duration::ZERO..=ceiling))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored time (milliseconds since the epoch) as RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A value as JSON text, for a TEXT column or a statement that takes a list as one
/// parameter.
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn author_of(value: &str) -> StoreResult<AuthorKind> {
    AuthorKind::parse(value).ok_or_else(|| StoreError::Corrupt(format!("author kind {value}")))
}

pub(crate) fn attachments_of(value: &str) -> StoreResult<Vec<Attachment>> {
    serde_json::from_str(value)
        .map_err(|error| StoreError::Corrupt(format!("attachments: {error}")))
}

pub(crate) fn choices_of(value: &str) -> StoreResult<Vec<switchboard_connector::Choice>> {
    serde_json::from_str(value).map_err(|error| StoreError::Corrupt(format!("choices: {error}")))
}

fn message_of(row: &sqlx::any::AnyRow) -> StoreResult<ChannelMessage> {
    Ok(ChannelMessage {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        author: author_of(row.try_get::<&str, _>("author_kind")?)?,
        text: row.try_get("text")?,
        attachments: attachments_of(row.try_get::<&str, _>("attachments")?)?,
        choices: choices_of(row.try_get::<&str, _>("choices")?)?,
        platform_message_id: row.try_get("platform_message_id")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, author_kind, text, attachments, \
                               choices, platform_message_id, created_at";

impl Store {
    /// Open the database named by `url` with `max_connections` and SQLite's default page
    /// cache, creating a SQLite file if needed, and migrate it.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        let settings = crate::config::DatabaseSettings {
            url: url.to_string(),
            max_connections,
            ..crate::config::DatabaseSettings::default()
        };
        Store::open(&settings).await
    }

    /// Open the database `settings` name, creating a SQLite file if needed, and migrate it.
    /// `settings.url` must be filled in (see [`crate::config::Settings::database_url`]).
    pub async fn open(settings: &crate::config::DatabaseSettings) -> StoreResult<Store> {
        let url = settings.url.as_str();
        let max_connections = settings.max_connections;
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database url scheme in {}",
                    crate::config::redact_url(url)
                )
                .into(),
            )));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let store = match backend {
            Backend::Sqlite => {
                // The group writer opens the same file beside the pools (an in-memory database
                // would be a different one for each connection).
                let Some(path) = sqlite_path(url) else {
                    return Err(StoreError::Database(sqlx::Error::Configuration(
                        "SQLite needs a database file: the store's connections share it".into(),
                    )));
                };
                if let Some(parent) = std::path::Path::new(&path).parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
                }
                let pragmas = |pool: AnyPoolOptions| {
                    let pragmas = sqlite_pragmas(settings.sqlite_cache_kib);
                    pool.after_connect(move |connection, _meta| {
                        // Only a number from the settings is spliced in.
                        let pragmas = AssertSqlSafe(pragmas.clone());
                        Box::pin(async move {
                            connection.execute(pragmas).await?;
                            Ok(())
                        })
                    })
                };
                // No ping before each acquire: an in-process connection has no network to lose,
                // and a ping is one more hand-off to its thread.
                let write = pragmas(AnyPoolOptions::new().max_connections(1).min_connections(1))
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options.clone())
                    .await?;
                // Migrate before the readers open, so they see the schema.
                sqlx::migrate!("migrations/sqlite").run(&write).await?;
                let read = pragmas(AnyPoolOptions::new().max_connections(max_connections.max(1)))
                    .test_before_acquire(false)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                let writer = group::WriterSettings {
                    path: path.into(),
                    cache_kib: settings.sqlite_cache_kib,
                };
                Store {
                    scripts: Scripts::Group(group::GroupWriter::start(writer, write.clone())?),
                    write,
                    read,
                    retries: Arc::default(),
                }
            }
            Backend::Postgres => {
                // sqlx pings a connection on every acquire by default: a round trip to the
                // server before each statement, as many as the statements themselves. A
                // connection in use a moment ago is almost always alive (one the server closed
                // since fails its next statement once); one idle for a while (the server may
                // have restarted meanwhile) is pinged, and replaced if that fails. Scripts, most
                // of the writes, have connections of their own ([`connections`]): sqlx's pool
                // also pings every connection it gets back.
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .test_before_acquire(false)
                    // A failed ping discards the connection quietly, as the script
                    // connections' pool does: after a restart of the server every idle
                    // connection fails it, which is no error to report one by one (an error
                    // here would be a warning from sqlx for each).
                    .before_acquire(|connection, meta| {
                        Box::pin(async move {
                            Ok(meta.idle_for < PING_AFTER_IDLE || connection.ping().await.is_ok())
                        })
                    })
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options.clone())
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Store {
                    write: pool.clone(),
                    read: pool,
                    scripts: Scripts::Connections(connections::script_connections(
                        options,
                        max_connections.max(2) as usize,
                    )?),
                    retries: Arc::default(),
                }
            }
        };
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.scripts {
            Scripts::Group(_) => Backend::Sqlite,
            Scripts::Connections(_) => Backend::Postgres,
        }
    }

    /// Writes done again since the store was opened because another writer won a race on a
    /// unique constraint first (took the same number, opened the same conversation): how often
    /// writers of the same rows collide.
    pub fn retried_writes(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Run `write` again while it fails in a way `lost_race` recognises (another writer won a
    /// race on a unique constraint: the next try sees the winner's rows), at most [`RETRIES`]
    /// times, counting each retry ([`Store::retried_writes`]).
    ///
    /// The first retry is at once: the loser waited for the winner's commit, so it sees the
    /// winner's rows. Losing again means other losers retried at the same moment, and retrying
    /// in step they would collide round after round (one winner a round), so later retries
    /// first wait a random pause that doubles each time ([`retry_pause`]).
    pub(crate) async fn retrying<T, E, Fut>(
        &self,
        lost_race: impl Fn(&E) -> bool,
        mut write: impl FnMut() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match write().await {
                Err(error) if lost_race(&error) && attempt < RETRIES => {
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    if let Some(pause) = retry_pause(attempt) {
                        tokio::time::sleep(pause).await;
                    }
                }
                other => return other,
            }
        }
    }

    pub async fn close(&self) {
        if let Scripts::Connections(connections) = &self.scripts {
            connections::close(connections).await;
        }
        self.read.close().await;
        self.write.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

/// The settings every SQLite connection of the store starts with. Each connection keeps its own
/// page cache, which fills up to `cache_kib` as the database grows, so the caches level off at
/// (connections + 2) x this (see docs/performance.md).
pub(super) fn sqlite_pragmas(cache_kib: u32) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
         PRAGMA foreign_keys = ON; PRAGMA cache_size = -{};",
        cache_kib.max(64)
    )
}

/// The file path of a `sqlite://PATH?options` URL, if it names a file.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(path.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Store;
    use super::script::Statement;
    use crate::config::DatabaseSettings;

    #[tokio::test]
    async fn every_sqlite_connection_gets_the_configured_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/cache.db?mode=rwc", dir.path().display()),
            max_connections: 2,
            sqlite_cache_kib: 300,
        };
        let store = Store::open(&settings).await.unwrap();
        for pool in [&store.read, &store.write] {
            let size: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(size, -300, "negative: a size in KiB");
        }
        let group = Statement::new("SELECT cache_size FROM pragma_cache_size()", Vec::new())
            .returning("cache_size");
        let size = store.run_script(vec![group]).await.unwrap();
        assert_eq!(size, vec![Some(-300)], "the group writer's connection");
        store.close().await;
    }

    /// The first retry is at once; later ones wait a random pause under a ceiling that
    /// doubles from 1 ms up to `LONGEST_RETRY_PAUSE`.
    #[test]
    fn retries_after_the_first_wait_a_growing_random_pause() {
        assert_eq!(super::retry_pause(1), None);
        for (attempt, ceiling_ms) in [(2, 1), (3, 2), (4, 4), (7, 32), (8, 50), (10, 50)] {
            let pauses: Vec<Duration> = (0..200)
                .map(|_| super::retry_pause(attempt).expect("a pause"))
                .collect();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(pauses.iter().all(|pause| *pause <= ceiling), "{attempt}");
            assert!(
                pauses.iter().any(|pause| *pause > ceiling / 2)
                    && pauses.iter().any(|pause| *pause < ceiling / 2),
                "random under the ceiling: {attempt}"
            );
        }
    }

    /// A write that lost a race is written again, at most `RETRIES` times, and every retry is
    /// counted; any other failure is returned at once.
    #[tokio::test]
    async fn lost_races_are_retried_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/retry.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url, 2).await.unwrap();
        let lost = |error: &&str| *error == "lost";
        let tries = std::cell::Cell::new(0);
        let written = store
            .retrying(lost, || {
                tries.set(tries.get() + 1);
                let outcome = if tries.get() < 3 {
                    Err("lost")
                } else {
                    Ok(tries.get())
                };
                async move { outcome }
            })
            .await;
        assert_eq!(written, Ok(3));
        assert_eq!(store.retried_writes(), 2);
        let always = store
            .retrying(lost, || async { Err::<(), _>("lost") })
            .await;
        assert_eq!(always, Err("lost"));
        assert_eq!(store.retried_writes(), 2 + u64::from(super::RETRIES));
        tries.set(0);
        let other = store
            .retrying(lost, || {
                tries.set(tries.get() + 1);
                async { Err::<(), _>("broken") }
            })
            .await;
        assert_eq!((other, tries.get()), (Err("broken"), 1), "not retried");
        store.close().await;
    }
}
