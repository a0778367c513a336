//! Scripts: several statements committed together, in as few round trips as the backend allows.
//!
//! SQLite runs in-process behind one writer thread, where every call costs a thread hand-off
//! and every commit rewrites the touched pages into the WAL. So scripts go to a group-commit
//! writer: it takes every script waiting (up to [`GROUP_LIMIT`]), joins them into one
//! multi-statement call inside one BEGIN/COMMIT (sqlx binds `$n` across the statements of a
//! call), and splits the returned rows at a marker row after each script. If the group fails,
//! it is rolled back and each script runs alone, so one bad script fails only itself.
//!
//! PostgreSQL takes one statement per call and commits concurrently from many connections, so
//! a script runs statement by statement inside its own transaction. Both commit all or nothing.

use std::borrow::Cow;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, StoreResult};

/// Most scripts committed in one SQLite transaction.
pub const GROUP_LIMIT: usize = 128;

#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

impl From<&str> for Bind {
    fn from(value: &str) -> Bind {
        Bind::Text(value.to_string())
    }
}

impl From<String> for Bind {
    fn from(value: String) -> Bind {
        Bind::Text(value)
    }
}

impl From<&String> for Bind {
    fn from(value: &String) -> Bind {
        Bind::Text(value.clone())
    }
}

impl From<Option<String>> for Bind {
    fn from(value: Option<String>) -> Bind {
        Bind::OptText(value)
    }
}

impl From<i64> for Bind {
    fn from(value: i64) -> Bind {
        Bind::Int(value)
    }
}

impl From<Option<i64>> for Bind {
    fn from(value: Option<i64>) -> Bind {
        Bind::OptInt(value)
    }
}

/// The type of a column a statement returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    Int,
    Text,
}

/// A value a statement's RETURNING clause yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Text(String),
}

/// The columns one statement returned, in the order it named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned(pub Vec<Value>);

impl Returned {
    pub fn int(&self, index: usize) -> StoreResult<i64> {
        match self.0.get(index) {
            Some(Value::Int(value)) => Ok(*value),
            other => Err(StoreError::Corrupt(format!(
                "script column {index} is not an integer: {other:?}"
            ))),
        }
    }

    pub fn text(&self, index: usize) -> StoreResult<String> {
        match self.0.get(index) {
            Some(Value::Text(value)) => Ok(value.clone()),
            other => Err(StoreError::Corrupt(format!(
                "script column {index} is not text: {other:?}"
            ))),
        }
    }
}

/// One statement with its own `$1..$n` placeholders.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Literal SQL with placeholders; only ever built from constants, never from input.
    pub sql: Cow<'static, str>,
    pub binds: Vec<Bind>,
    /// The columns of the one row this statement's RETURNING clause yields (none: it returns
    /// nothing).
    pub returning: Vec<(&'static str, Returns)>,
}

impl Statement {
    pub fn new(sql: &'static str, binds: Vec<Bind>) -> Statement {
        Statement {
            sql: Cow::Borrowed(sql),
            binds,
            returning: Vec::new(),
        }
    }

    /// A statement whose text is chosen at run time (per backend, or with a number of
    /// placeholders); still only ever built from constants.
    pub fn dynamic(sql: String, binds: Vec<Bind>) -> Statement {
        Statement {
            sql: Cow::Owned(sql),
            binds,
            returning: Vec::new(),
        }
    }

    /// The statement returns the BIGINT `column`.
    pub fn returning(self, column: &'static str) -> Statement {
        self.returning_as(column, Returns::Int)
    }

    pub fn returning_as(mut self, column: &'static str, kind: Returns) -> Statement {
        self.returning.push((column, kind));
        self
    }
}

fn value_of(row: &AnyRow, index: usize, kind: Returns) -> StoreResult<Option<Value>> {
    Ok(match kind {
        Returns::Int => row.try_get::<Option<i64>, _>(index)?.map(Value::Int),
        Returns::Text => row.try_get::<Option<String>, _>(index)?.map(Value::Text),
    })
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    binds: &[Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(value) => query.bind(value.clone()),
            Bind::OptText(value) => query.bind(value.clone()),
            Bind::Int(value) => query.bind(*value),
            Bind::OptInt(value) => query.bind(*value),
        };
    }
    query
}

/// Shift every `$n` placeholder of `sql` by `offset`.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some((_, d)) = chars.peek() {
            if d.is_ascii_digit() {
                digits.push(*d);
                chars.next();
            } else {
                break;
            }
        }
        match digits.parse::<usize>() {
            Ok(n) => {
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            Err(_) => {
                out.push('$');
                out.push_str(&digits);
            }
        }
    }
}

type Job = (Vec<Statement>, oneshot::Sender<StoreResult<Vec<AnyRow>>>);

/// The SQLite group-commit writer's mailbox.
#[derive(Clone, Debug)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Start the writer task on `pool` (the single-connection SQLite write pool).
    pub fn start(pool: AnyPool) -> GroupWriter {
        let (jobs, receiver) = mpsc::channel(GROUP_LIMIT * 8);
        tokio::spawn(group_loop(pool, receiver));
        GroupWriter { jobs }
    }

    pub async fn run(&self, statements: Vec<Statement>) -> StoreResult<Vec<AnyRow>> {
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

async fn group_loop(pool: AnyPool, mut receiver: mpsc::Receiver<Job>) {
    let mut group: Vec<Job> = Vec::with_capacity(GROUP_LIMIT);
    while let Some(first) = receiver.recv().await {
        group.push(first);
        while group.len() < GROUP_LIMIT {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let scripts: Vec<&[Statement]> = group.iter().map(|(s, _)| s.as_slice()).collect();
        match run_sqlite(&pool, &scripts).await {
            Ok(results) => {
                for ((_, done), rows) in group.drain(..).zip(results) {
                    let _ = done.send(Ok(rows));
                }
            }
            Err(_) if group.len() > 1 => {
                // Somebody's script failed and took the group down: run each alone.
                for (statements, done) in group.drain(..) {
                    let result = run_sqlite(&pool, &[statements.as_slice()]).await;
                    let _ = done.send(result.map(|mut results| results.pop().unwrap_or_default()));
                }
            }
            Err(error) => {
                let (_, done) = group.pop().expect("one job");
                let _ = done.send(Err(error));
            }
        }
    }
}

/// One transaction for all `scripts`, each script one multi-statement call. A script's SQL
/// text depends only on its shape (which statements, not which values), so SQLite reuses its
/// prepared form from sqlx's statement cache. Returns the RETURNING rows of each script.
async fn run_sqlite(pool: &AnyPool, scripts: &[&[Statement]]) -> StoreResult<Vec<Vec<AnyRow>>> {
    let mut connection = pool.acquire().await?;
    if let Err(error) = connection.execute("BEGIN").await {
        // A connection that cannot begin may be stuck in a transaction a failed rollback left
        // open: never hand it out again, the pool opens a fresh one for the next group.
        connection.close_on_drop();
        return Err(error.into());
    }
    let mut results = Vec::with_capacity(scripts.len());
    for statements in scripts {
        let mut sql = String::new();
        let mut binds: Vec<Bind> = Vec::new();
        for statement in *statements {
            renumber(&statement.sql, binds.len(), &mut sql);
            sql.push_str(";\n");
            binds.extend(statement.binds.iter().cloned());
        }
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds);
        match query.fetch_all(&mut *connection).await {
            Ok(rows) => results.push(rows),
            Err(error) => {
                // Undo the group before the connection goes back to the pool.
                roll_back(&mut connection).await;
                return Err(error.into());
            }
        }
    }
    if let Err(error) = connection.execute("COMMIT").await {
        roll_back(&mut connection).await;
        return Err(error.into());
    }
    Ok(results)
}

/// Roll back a failed group. SQLite may already have rolled back on its own (a full disk, an
/// I/O error), and then ROLLBACK fails with "no transaction is active", which is fine; but if
/// the rollback fails while a transaction is still open (the disk still full), the connection
/// would start every later group inside it ("cannot start a transaction within a
/// transaction") and no write would ever succeed again. So the connection is closed instead
/// of going back to the pool.
async fn roll_back(connection: &mut sqlx::pool::PoolConnection<sqlx::Any>) {
    match connection.execute("ROLLBACK").await {
        Ok(_) => {}
        Err(error) if error.to_string().contains("no transaction is active") => {}
        Err(error) => {
            tracing::warn!(error = %error, "rollback failed: the write connection is replaced");
            connection.close_on_drop();
        }
    }
}

/// A script as one PostgreSQL statement: every statement but the last becomes a
/// data-modifying CTE (all run exactly once, on one snapshot), and a final SELECT collects the
/// RETURNING values.
fn postgres_cte(statements: &[Statement]) -> (String, Vec<Bind>) {
    let mut sql = String::from("WITH ");
    let mut binds: Vec<Bind> = Vec::new();
    let mut collected = Vec::new();
    for (index, statement) in statements.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("s{index} AS ("));
        renumber(&statement.sql, binds.len(), &mut sql);
        sql.push(')');
        binds.extend(statement.binds.iter().cloned());
        for (position, (column, _)) in statement.returning.iter().enumerate() {
            collected.push(format!(
                "(SELECT {column} FROM s{index}) AS r{index}_{position}"
            ));
        }
    }
    if collected.is_empty() {
        sql.push_str(" SELECT 1 AS done");
    } else {
        sql.push_str(" SELECT ");
        sql.push_str(&collected.join(", "));
    }
    (sql, binds)
}

impl Store {
    /// Run `statements` atomically; returns what each returning statement yielded, in
    /// statement order: `None` where its RETURNING gave no row (a guard failed). Scripts are
    /// all or nothing in this respect too: on SQLite either every returning statement of a
    /// script yields its row or none does, else the result is refused as corrupt.
    /// Statements must not depend on rows written earlier in the same script (PostgreSQL runs
    /// them on one snapshot), unless they say how per backend.
    pub(super) async fn run_script_rows(
        &self,
        statements: Vec<Statement>,
    ) -> StoreResult<Vec<Option<Returned>>> {
        let shapes: Vec<Vec<Returns>> = statements
            .iter()
            .filter(|s| !s.returning.is_empty())
            .map(|s| s.returning.iter().map(|(_, kind)| *kind).collect())
            .collect();
        match &self.group {
            Some(group) => {
                let rows = group.run(statements).await?;
                if rows.is_empty() {
                    return Ok(vec![None; shapes.len()]);
                }
                if rows.len() != shapes.len() {
                    return Err(StoreError::Corrupt(format!(
                        "script returned {} rows, expected {}",
                        rows.len(),
                        shapes.len()
                    )));
                }
                rows.iter()
                    .zip(&shapes)
                    .map(|(row, shape)| returned(row, shape, |index| index))
                    .collect()
            }
            None => {
                let (sql, binds) = postgres_cte(&statements);
                let row = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds)
                    .fetch_one(&self.write)
                    .await?;
                let mut offset = 0;
                let mut values = Vec::with_capacity(shapes.len());
                for shape in &shapes {
                    values.push(returned(&row, shape, |index| offset + index)?);
                    offset += shape.len();
                }
                Ok(values)
            }
        }
    }

    /// [`Store::run_script_rows`] for scripts whose returning statements each return one
    /// BIGINT: the values in statement order.
    pub(super) async fn run_script(
        &self,
        statements: Vec<Statement>,
    ) -> StoreResult<Vec<Option<i64>>> {
        self.run_script_rows(statements)
            .await?
            .into_iter()
            .map(|returned| returned.map(|row| row.int(0)).transpose())
            .collect()
    }
}

/// The values of `shape` in `row`, the i-th at column `column(i)`: a SQLite RETURNING row
/// holds exactly the named columns in order; PostgreSQL's one collecting row holds every
/// statement's columns side by side.
fn returned(
    row: &AnyRow,
    shape: &[Returns],
    column: impl Fn(usize) -> usize,
) -> StoreResult<Option<Returned>> {
    let values = shape
        .iter()
        .enumerate()
        .map(|(index, kind)| value_of(row, column(index), *kind))
        .collect::<StoreResult<Vec<Option<Value>>>>()?;
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let values: Option<Vec<Value>> = values.into_iter().collect();
    values
        .map(|values| Some(Returned(values)))
        .ok_or_else(|| StoreError::Corrupt("a returned row is partly NULL".into()))
}

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn renumbers_placeholders() {
        let mut out = String::new();
        renumber(
            "UPDATE t SET a = $1, b = $12 WHERE c = '$x' AND d = $2",
            3,
            &mut out,
        );
        assert_eq!(
            out,
            "UPDATE t SET a = $4, b = $15 WHERE c = '$x' AND d = $5"
        );
    }
}
