//! Scripts: several statements committed together, in as few round trips as the backend allows.
//!
//! On SQLite, scripts go to the group-commit writer ([`super::group`]), which commits every
//! script waiting in one transaction on a thread of its own.
//!
//! PostgreSQL commits concurrently from many connections, so a script is sent as one statement
//! (a chain of data-modifying CTEs) in its own implicit transaction. Both commit all or nothing.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Scripts, Store, StoreError, StoreResult, connections};

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

/// PostgreSQL's SQLSTATE for a NULL in a NOT NULL column (`not_null_violation`).
const POSTGRES_NOT_NULL: &str = "23502";

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
    /// Literal SQL with placeholders: a constant, never built from input, and one text per
    /// kind of statement whatever the data, so that each is prepared once.
    pub sql: &'static str,
    pub binds: Vec<Bind>,
    /// The columns of the one row this statement's RETURNING clause yields (none: it returns
    /// nothing).
    pub returning: Vec<(&'static str, Returns)>,
    /// See [`Statement::guarded`].
    pub guarded: bool,
}

impl Statement {
    pub fn new(sql: &'static str, binds: Vec<Bind>) -> Statement {
        Statement {
            sql,
            binds,
            returning: Vec::new(),
            guarded: false,
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

    /// The statement is a single-row `INSERT ... VALUES` whose guard feeds a NOT NULL column
    /// from a subquery, such as `(SELECT id FROM conversations WHERE id = $1 AND version = $2)`:
    /// when the guard fails (the conversation moved on), the subquery finds nothing and the
    /// insert fails on that column. Both executors read a NOT NULL failure of a guarded
    /// statement as the guard failing: the script writes nothing, the statements after it do
    /// not run, and every returning statement of the script yields no row, as when a guarded
    /// `INSERT ... SELECT ... WHERE EXISTS` selects nothing.
    ///
    /// Why not that form: SQLite runs an `INSERT ... SELECT` whose SELECT reads the table it
    /// inserts into (the conversation's last number) through a temporary table and a
    /// coroutine, which a single-row `VALUES` insert does without: fewer instructions per
    /// statement, measured in docs/performance.md.
    pub fn guarded(mut self) -> Statement {
        self.guarded = true;
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
        renumber(statement.sql, binds.len(), &mut sql);
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
        match &self.scripts {
            Scripts::Group(group) => {
                let rows = group.run(statements).await?;
                if rows.len() != shapes.len() {
                    return Err(StoreError::Corrupt(format!(
                        "script returned {} rows, expected {}",
                        rows.len(),
                        shapes.len()
                    )));
                }
                let yielded = rows.iter().filter(|row| row.is_some()).count();
                if yielded != 0 && yielded != rows.len() {
                    return Err(StoreError::Corrupt(format!(
                        "{yielded} of the script's {} returning statements yielded a row",
                        rows.len()
                    )));
                }
                Ok(rows)
            }
            Scripts::Connections(connections) => {
                let guarded = statements.iter().any(|statement| statement.guarded);
                let (sql, binds) = postgres_cte(&statements);
                let mut connection = connections::get(connections).await?;
                let query = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds);
                let row = match connection.run(async |raw| query.fetch_one(raw).await).await {
                    Ok(row) => row,
                    // The script is one statement: it wrote nothing.
                    Err(sqlx::Error::Database(error))
                        if guarded && error.code().as_deref() == Some(POSTGRES_NOT_NULL) =>
                    {
                        return Ok(vec![None; shapes.len()]);
                    }
                    Err(error) => return Err(error.into()),
                };
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

/// The values of `shape` in `row`, the i-th at column `column(i)`: PostgreSQL's one collecting
/// row holds every statement's columns side by side.
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
    assemble(values)
}

/// One statement's returned columns: `None` where its RETURNING gave no row (every column
/// NULL), refused as corrupt where only some columns are NULL.
pub(super) fn assemble(values: Vec<Option<Value>>) -> StoreResult<Option<Returned>> {
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
