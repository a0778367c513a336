//! The SQLite group-commit writer: scripts from every task, committed together on one thread.
//!
//! SQLite allows one writer at a time, and every commit rewrites the touched pages into the WAL,
//! so committing many scripts in one transaction costs little more than committing one. The
//! writer takes every script waiting (up to [`GROUP_LIMIT`]) and hands the whole group to a
//! thread that owns a write connection of its own: BEGIN, every statement of every script
//! (prepared once and kept, bound by position), COMMIT, all in one hand-off. Each script's
//! caller gets its rows as soon as the group commits. If one script fails, the group is rolled
//! back and each script runs alone in its own transaction, still on that thread, so a bad script
//! fails only itself.
//!
//! The store's sqlx write pool (one connection) is the other writer, for the few writes that are
//! not scripts. The group holds that pool's connection while it runs, so the two never write at
//! the same time: no write waits on SQLite's busy handler, and no transaction that read first is
//! refused because another connection wrote meanwhile.
//!
//! Measured against running each script as one sqlx call (one hand-off per script, and BEGIN and
//! COMMIT each one more): see docs/performance.md.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc as blocking;

use rusqlite::{Connection, OpenFlags};
use sqlx::AnyPool;
use sqlx::error::{DatabaseError, ErrorKind};
use tokio::sync::{mpsc, oneshot};

use plan::Plan;

use super::script::{Bind, Returned, Statement};
use super::{StoreError, StoreResult};

mod plan;

/// Most scripts committed in one SQLite transaction.
pub const GROUP_LIMIT: usize = 128;

/// What one script yielded: for each of its returning statements, in order, its row (`None`
/// where its RETURNING gave no row).
pub type ScriptRows = Vec<Option<Returned>>;

type Job = (Vec<Statement>, oneshot::Sender<StoreResult<ScriptRows>>);

/// Where the writer's connection opens, and the page cache it gets.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub path: PathBuf,
    pub cache_kib: u32,
}

/// The SQLite group-commit writer's mailbox.
#[derive(Clone, Debug)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Open the writer's connection on the migrated database at `settings.path`, start its
    /// thread, and start the task that forms groups. `lock` is the store's single-connection
    /// sqlx write pool, held while a group runs.
    pub fn start(settings: WriterSettings, lock: AnyPool) -> StoreResult<GroupWriter> {
        let writer = Writer::open(settings)?;
        let (groups, receiver) = blocking::channel::<Group>();
        std::thread::Builder::new()
            .name("sqlite-group-writer".into())
            .spawn(move || writer_thread(writer, receiver))
            .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
        let (jobs, mailbox) = mpsc::channel(GROUP_LIMIT * 8);
        tokio::spawn(group_loop(lock, mailbox, groups));
        Ok(GroupWriter { jobs })
    }

    pub async fn run(&self, statements: Vec<Statement>) -> StoreResult<ScriptRows> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send((statements, done))
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        result
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// A group on its way to the writer thread, and where to say that it is finished.
struct Group {
    jobs: Vec<Job>,
    finished: oneshot::Sender<()>,
}

async fn group_loop(
    lock: AnyPool,
    mut mailbox: mpsc::Receiver<Job>,
    groups: blocking::Sender<Group>,
) {
    while let Some(first) = mailbox.recv().await {
        let mut jobs = Vec::with_capacity(GROUP_LIMIT);
        jobs.push(first);
        while jobs.len() < GROUP_LIMIT {
            match mailbox.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Hold the sqlx writer while the group runs (see the module's comment).
        let held = match lock.acquire().await {
            Ok(held) => held,
            Err(error) => {
                for (_, done) in jobs {
                    let _ = done.send(Err(StoreError::Database(unavailable(&error))));
                }
                continue;
            }
        };
        let (finished, wait) = oneshot::channel();
        if groups.send(Group { jobs, finished }).is_err() {
            // The thread is gone; every job's sender dropped with the group, so each caller
            // sees the writer closed.
            return;
        }
        let _ = wait.await;
        drop(held);
    }
}

/// The write pool's failure to hand out its connection, once for each job of the group.
fn unavailable(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(format!("the write connection is unavailable: {other}")),
    }
}

fn writer_thread(mut writer: Writer, groups: blocking::Receiver<Group>) {
    while let Ok(group) = groups.recv() {
        let mut jobs = group.jobs;
        let scripts: Vec<&[Statement]> = jobs.iter().map(|(s, _)| s.as_slice()).collect();
        match writer.run_group(&scripts) {
            Ok(results) => {
                for ((_, done), rows) in jobs.drain(..).zip(results) {
                    let _ = done.send(Ok(rows));
                }
            }
            Err(error) if jobs.len() == 1 => {
                let (_, done) = jobs.pop().expect("one job");
                let _ = done.send(Err(error));
            }
            Err(_) => {
                // Somebody's script failed and took the group down: run each alone.
                for (statements, done) in jobs.drain(..) {
                    let result = writer
                        .run_group(&[statements.as_slice()])
                        .map(|mut results| results.pop().unwrap_or_default());
                    let _ = done.send(result);
                }
            }
        }
        let _ = group.finished.send(());
    }
}

/// The writer thread's connection, and how it runs each statement text.
struct Writer {
    connection: Connection,
    settings: WriterSettings,
    plans: HashMap<&'static str, Plan>,
}

impl Writer {
    fn open(settings: WriterSettings) -> StoreResult<Writer> {
        Ok(Writer {
            connection: open(&settings)?,
            settings,
            plans: HashMap::new(),
        })
    }

    /// One transaction for all `scripts`. Returns the rows of each script.
    fn run_group(&mut self, scripts: &[&[Statement]]) -> StoreResult<Vec<ScriptRows>> {
        if let Err(error) = self.execute("BEGIN IMMEDIATE") {
            // A connection that cannot begin may be stuck in a transaction a failed rollback
            // left open.
            self.replace_if_stuck();
            return Err(store_error(error));
        }
        let mut results = Vec::with_capacity(scripts.len());
        for statements in scripts {
            match self.run_script(statements) {
                Ok(Ran::Rows(rows)) => results.push(rows),
                Ok(Ran::GuardFailed { wrote: false }) => results.push(no_rows(statements)),
                Ok(Ran::GuardFailed { wrote: true }) if scripts.len() == 1 => {
                    // Alone in its transaction: rolling it back undoes exactly this script.
                    self.roll_back();
                    return Ok(vec![no_rows(statements)]);
                }
                Ok(Ran::GuardFailed { wrote: true }) => {
                    // What the script wrote before its guard failed cannot be undone alone:
                    // the group is rolled back and each script runs alone.
                    return Err(self.fail(StoreError::Corrupt(
                        "a script's guard failed after it wrote".into(),
                    )));
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
        if let Err(error) = self.execute("COMMIT") {
            return Err(self.fail(store_error(error)));
        }
        Ok(results)
    }

    /// Run a statement without parameters or rows (BEGIN, COMMIT, ROLLBACK) from the statement
    /// cache, so that it is not parsed again for every group.
    fn execute(&self, sql: &str) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached(sql)?
            .raw_execute()
            .map(|_| ())
    }

    /// Roll back a failed group, and pass on why it failed.
    fn fail(&mut self, error: StoreError) -> StoreError {
        self.roll_back();
        error
    }

    /// Roll back the open transaction. SQLite may already have rolled back on its own (a full
    /// disk, an I/O error).
    fn roll_back(&mut self) {
        if !self.connection.is_autocommit()
            && let Err(rollback) = self.execute("ROLLBACK")
        {
            tracing::warn!(error = %rollback, "rollback failed");
        }
        self.replace_if_stuck();
    }

    /// A transaction still open after a rollback would make every later group fail to
    /// begin: the connection is replaced.
    fn replace_if_stuck(&mut self) {
        if self.connection.is_autocommit() {
            return;
        }
        loop {
            match open(&self.settings) {
                Ok(connection) => {
                    tracing::warn!("the SQLite group writer's connection was replaced");
                    self.connection = connection;
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot reopen the SQLite write connection; retrying");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// Run one script's statements in order; returns the rows of its returning statements,
    /// or stops at the first guarded statement whose guard fails.
    fn run_script(&mut self, statements: &[Statement]) -> StoreResult<Ran> {
        let changes = self.connection.total_changes();
        let mut rows = Vec::new();
        for statement in statements {
            if !self.plans.contains_key(statement.sql) {
                let plan = Plan::new(&self.connection, statement)?;
                self.plans.insert(statement.sql, plan);
            }
            let plan = &self.plans[statement.sql];
            let mut prepared = self
                .connection
                .prepare_cached(&plan.sql)
                .map_err(store_error)?;
            for (index, position) in plan.positions.iter().enumerate() {
                // The positions were worked out for the first statement with this text; one
                // with fewer binds is refused, not a panic of the writer thread.
                let Some(bind) = statement.binds.get(*position) else {
                    return Err(StoreError::Corrupt(format!(
                        "script parameter ${} has no bind: {}",
                        position + 1,
                        statement.sql
                    )));
                };
                let bound = match bind {
                    Bind::Text(value) => prepared.raw_bind_parameter(index + 1, value.as_str()),
                    Bind::OptText(value) => {
                        prepared.raw_bind_parameter(index + 1, value.as_deref())
                    }
                    Bind::Int(value) => prepared.raw_bind_parameter(index + 1, value),
                    Bind::OptInt(value) => prepared.raw_bind_parameter(index + 1, value),
                };
                bound.map_err(store_error)?;
            }
            if let Some(returning) = &plan.returning {
                match prepared.raw_execute() {
                    Ok(changed) => {
                        rows.push(returning.row(&self.connection, changed, statement)?)
                    }
                    Err(error) if statement.guarded && is_not_null(&error) => {
                        return Ok(self.guard_failed(changes));
                    }
                    Err(error) => return Err(store_error(error)),
                }
                continue;
            }
            let mut cursor = prepared.raw_query();
            let first = match cursor.next() {
                Ok(first) => first,
                Err(error) if statement.guarded && is_not_null(&error) => {
                    drop(cursor);
                    drop(prepared);
                    return Ok(self.guard_failed(changes));
                }
                Err(error) => return Err(store_error(error)),
            };
            match (first, statement.returning.is_empty()) {
                (None, true) => {}
                (None, false) => rows.push(None),
                (Some(row), false) => {
                    rows.push(plan::returned_row(row, statement)?);
                    if cursor.next().map_err(store_error)?.is_some() {
                        return Err(StoreError::Corrupt(format!(
                            "a script statement returned more than one row: {}",
                            statement.sql
                        )));
                    }
                }
                (Some(_), true) => {
                    return Err(StoreError::Corrupt(format!(
                        "a script statement without RETURNING returned a row: {}",
                        statement.sql
                    )));
                }
            }
        }
        Ok(Ran::Rows(rows))
    }

    /// A guarded statement's guard failed in a script that began at `total_changes`.
    fn guard_failed(&self, total_changes: u64) -> Ran {
        Ran::GuardFailed {
            wrote: self.connection.total_changes() != total_changes,
        }
    }
}

/// How a script ran on the writer's connection.
enum Ran {
    Rows(ScriptRows),
    /// A guarded statement's guard failed ([`Statement::guarded`]); `wrote` says whether the
    /// statements before it changed any row.
    GuardFailed {
        wrote: bool,
    },
}

/// A script's rows when its guard failed: none for each returning statement.
fn no_rows(statements: &[Statement]) -> ScriptRows {
    let returning = statements
        .iter()
        .filter(|statement| !statement.returning.is_empty())
        .count();
    vec![None; returning]
}

/// A NULL in a NOT NULL column: how a guarded statement's guard fails.
fn is_not_null(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL
    )
}

fn open(settings: &WriterSettings) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(&settings.path, flags).map_err(store_error)?;
    connection
        .execute_batch(&super::sqlite_pragmas(settings.cache_kib))
        .map_err(store_error)?;
    // Every statement a script may use stays prepared.
    connection.set_prepared_statement_cache_capacity(512);
    Ok(connection)
}

/// A SQLite error as the rest of the store sees errors: an sqlx database error, so that
/// unique violations and their messages read the same whichever writer ran the statement.
fn store_error(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            StoreError::Database(sqlx::Error::Database(Box::new(SqliteFailure {
                extended_code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            })))
        }
        other => StoreError::Database(sqlx::Error::Protocol(other.to_string())),
    }
}

/// An error SQLite returned to the group writer.
#[derive(Debug)]
struct SqliteFailure {
    extended_code: std::ffi::c_int,
    message: String,
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.extended_code, self.message)
    }
}

impl std::error::Error for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.extended_code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::super::script::{Returns, Statement, Value};
    use crate::config::DatabaseSettings;

    async fn store(dir: &tempfile::TempDir) -> Store {
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/group.db?mode=rwc", dir.path().display()),
            max_connections: 2,
            sqlite_cache_kib: 300,
        };
        Store::open(&settings).await.unwrap()
    }

    fn insert_cursor(key: &str) -> Statement {
        Statement::new(
            "INSERT INTO channel_cursors (channel, key, value, version, updated_at) \
             VALUES ($1, $2, $3, 1, $4) RETURNING version",
            vec!["test".into(), key.into(), "0".into(), 0i64.into()],
        )
        .returning("version")
    }

    #[tokio::test]
    async fn binds_each_placeholder_by_the_number_in_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        // SQLite numbers parameters in the order they appear: here $2 is its first.
        let statement = Statement::new("SELECT $2 AS a, $1 AS b", vec![7i64.into(), "x".into()])
            .returning_as("a", Returns::Text)
            .returning_as("b", Returns::Int);
        let rows = store.run_script_rows(vec![statement]).await.unwrap();
        let row = rows[0].as_ref().expect("a row");
        assert_eq!(row.0, vec![Value::Text("x".into()), Value::Int(7)]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_statement_short_of_binds_fails_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let sql = "SELECT $1 AS a, $2 AS b";
        let full = Statement::new(sql, vec![1i64.into(), 2i64.into()])
            .returning("a")
            .returning("b");
        assert!(store.run_script_rows(vec![full]).await.is_ok());
        let short = Statement::new(sql, vec![1i64.into()])
            .returning("a")
            .returning("b");
        let error = store.run_script_rows(vec![short]).await.unwrap_err();
        assert!(error.to_string().contains("$2 has no bind"), "{error}");
        store
            .run_script(vec![insert_cursor("after")])
            .await
            .unwrap();
        store.close().await;
    }

    #[tokio::test]
    async fn a_failing_script_fails_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .run_script(vec![insert_cursor("taken")])
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..60 {
            let store = store.clone();
            let key = if index == 30 {
                "taken".to_string()
            } else {
                format!("k{index}")
            };
            tasks.spawn(async move { (index, store.run_script(vec![insert_cursor(&key)]).await) });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.unwrap();
            if let Err(error) = result {
                assert!(error.is_unique_violation(), "{error}");
                assert!(error.to_string().contains("channel_cursors"), "{error}");
                failed.push(index);
            }
        }
        assert_eq!(failed, vec![30]);
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM channel_cursors")
            .fetch_one(&store.read)
            .await
            .unwrap();
        assert_eq!(count, 60, "59 new keys and the one taken before");
        store.close().await;
    }

    /// A statement that writes nothing yields no row, even an INSERT right after one that did
    /// (their RETURNING clauses do not run on SQLite: see `plan`).
    #[tokio::test]
    async fn a_statement_that_writes_nothing_returns_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let again = Statement::new(
            "INSERT INTO channel_cursors (channel, key, value, version, updated_at) \
             VALUES ('test', $1, '0', 5, 0) ON CONFLICT (channel, key) DO NOTHING \
             RETURNING version",
            vec!["once".into()],
        )
        .returning("version");
        // One script each: a script's returning statements yield all their rows or none. The
        // writer's connection still remembers the rowid the first one inserted.
        let run = |statement: Statement| {
            let store = store.clone();
            async move {
                let rows = store.run_script_rows(vec![statement]).await.unwrap();
                rows[0].as_ref().map(|row| row.int(0).unwrap())
            }
        };
        assert_eq!(run(insert_cursor("once")).await, Some(1));
        assert_eq!(run(again).await, None);
        // The same for an UPDATE whose returned column is what it sets.
        let set = |key: &str| {
            Statement::new(
                "UPDATE channel_cursors SET version = $1 WHERE key = $2 RETURNING version",
                vec![7i64.into(), key.into()],
            )
            .returning("version")
        };
        assert_eq!(run(set("absent")).await, None);
        assert_eq!(run(set("once")).await, Some(7));
        store.close().await;
    }

    /// A cursor row inserted only while the cursor `gate` is at `version`: its NOT NULL
    /// `channel` comes from the guard's subquery.
    fn guarded_cursor(key: &str, version: i64) -> Statement {
        Statement::new(
            "INSERT INTO channel_cursors (channel, key, value, version, updated_at) \
             VALUES ((SELECT channel FROM channel_cursors WHERE key = 'gate' AND version = $2), \
             $1, '0', 1, 0) RETURNING version",
            vec![key.into(), version.into()],
        )
        .returning("version")
        .guarded()
    }

    async fn keys(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT key FROM channel_cursors ORDER BY key")
            .fetch_all(&store.read)
            .await
            .unwrap()
    }

    /// A failed guard is not an error: its script writes nothing (not even what came before
    /// the guard), the statements after it do not run, and the rest of its group commits.
    #[tokio::test]
    async fn a_failed_guard_writes_nothing_and_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.run_script(vec![insert_cursor("gate")]).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..60 {
            let store = store.clone();
            // 20: the guard fails first; 40: it fails after the script wrote a row.
            let version = if index == 20 || index == 40 { 2 } else { 1 };
            let script = if index == 20 {
                vec![
                    guarded_cursor(&format!("g{index}"), version),
                    insert_cursor(&format!("k{index}")),
                ]
            } else {
                vec![
                    insert_cursor(&format!("k{index}")),
                    guarded_cursor(&format!("g{index}"), version),
                ]
            };
            tasks.spawn(async move { (index, store.run_script(script).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.unwrap();
            let values = result.unwrap_or_else(|error| panic!("script {index}: {error}"));
            if index == 20 || index == 40 {
                assert_eq!(values, vec![None, None], "script {index}");
            } else {
                assert_eq!(values, vec![Some(1), Some(1)], "script {index}");
            }
        }
        let keys = keys(&store).await;
        assert_eq!(keys.len(), 1 + 58 * 2, "{keys:?}");
        for absent in ["g20", "k20", "g40", "k40"] {
            assert!(
                !keys.iter().any(|key| key == absent),
                "{absent} was written"
            );
        }
        store.close().await;
    }

    /// A transaction of the sqlx writer that reads before it writes would be refused
    /// (SQLITE_BUSY, at once) if the group writer committed in between: the two take turns.
    #[tokio::test]
    async fn the_group_and_the_sqlx_writer_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .run_script(vec![insert_cursor("shared")])
            .await
            .unwrap();
        let scripts = {
            let store = store.clone();
            tokio::spawn(async move {
                for index in 0..400 {
                    let key = format!("s{index}");
                    store.run_script(vec![insert_cursor(&key)]).await.unwrap();
                }
            })
        };
        for _ in 0..200 {
            let mut tx = store.write.begin().await.unwrap();
            let version: i64 = sqlx::query_scalar(
                "SELECT version FROM channel_cursors WHERE channel = 'test' AND key = 'shared'",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            tokio::task::yield_now().await;
            sqlx::query(
                "UPDATE channel_cursors SET version = $1 WHERE channel = 'test' AND key = 'shared'",
            )
            .bind(version + 1)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        scripts.await.unwrap();
        let version: i64 = sqlx::query_scalar(
            "SELECT version FROM channel_cursors WHERE channel = 'test' AND key = 'shared'",
        )
        .fetch_one(&store.read)
        .await
        .unwrap();
        assert_eq!(version, 201);
        store.close().await;
    }
}
