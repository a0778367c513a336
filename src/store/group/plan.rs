//! How the group writer runs one statement text: where its binds go, and whether it runs
//! without its RETURNING clause.

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::super::script::{Bind, Returned, Returns, Statement, Value, assemble};
use super::super::{StoreError, StoreResult};
use super::store_error;

/// How the writer runs one statement text, worked out the first time it sees it.
pub(super) struct Plan {
    /// The SQL it prepares: the statement's own, or without its RETURNING clause.
    pub(super) sql: String,
    /// The bind (0-based) of each parameter in SQLite's order: SQLite numbers `$n` parameters
    /// in the order they first appear, so a statement that names `$2` before `$1` binds them
    /// the other way round.
    pub(super) positions: Box<[usize]>,
    /// Where the returning columns come from when the statement runs without its RETURNING
    /// clause. SQLite runs RETURNING as a trigger that collects the rows in a temporary table,
    /// and a statement with a trigger that may fail midway keeps a statement journal (a copy
    /// of each page it changes that the transaction had already changed), so either way
    /// below costs less (docs/performance.md).
    pub(super) returning: Option<Returning>,
}

/// The returning columns of a statement run without its RETURNING clause.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Returning {
    /// An INSERT's row, read back by the rowid SQLite last inserted with this query.
    ReadBack(String),
    /// An UPDATE that sets each returned column to a parameter: these binds (0-based).
    Set(Box<[usize]>),
}

impl Plan {
    pub(super) fn new(connection: &Connection, statement: &Statement) -> StoreResult<Plan> {
        let (sql, returning) = match without_returning(statement.sql, &statement.returning) {
            // A table without rowids cannot be read back so: the statement runs as written.
            Some((_, Returning::ReadBack(query))) if connection.prepare_cached(&query).is_err() => {
                (statement.sql.to_string(), None)
            }
            Some((sql, returning)) => (sql, Some(returning)),
            None => (statement.sql.to_string(), None),
        };
        let prepared = connection.prepare_cached(&sql).map_err(store_error)?;
        let positions = positions_of(&prepared, statement.binds.len())?;
        Ok(Plan {
            sql,
            positions,
            returning,
        })
    }
}

impl Returning {
    /// The row of a statement that changed `changed` rows: none if it changed none (an
    /// `ON CONFLICT DO NOTHING`, an UPDATE whose WHERE matched nothing).
    pub(super) fn row(
        &self,
        connection: &Connection,
        changed: usize,
        statement: &Statement,
    ) -> StoreResult<Option<Returned>> {
        match changed {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "a script statement returned more than one row: {}",
                    statement.sql
                )));
            }
        }
        let values = match self {
            Returning::ReadBack(query) => {
                let mut prepared = connection.prepare_cached(query).map_err(store_error)?;
                prepared
                    .raw_bind_parameter(1, connection.last_insert_rowid())
                    .map_err(store_error)?;
                let mut cursor = prepared.raw_query();
                let Some(row) = cursor.next().map_err(store_error)? else {
                    return Err(StoreError::Corrupt(format!(
                        "the row a script statement inserted is gone: {}",
                        statement.sql
                    )));
                };
                return returned_row(row, statement);
            }
            Returning::Set(binds) => binds
                .iter()
                .zip(&statement.returning)
                .map(|(bind, (name, kind))| bound_value(statement, *bind, name, *kind))
                .collect::<StoreResult<Vec<Option<Value>>>>()?,
        };
        assemble(values)
    }
}

/// The returning columns of `statement` in `row`, in the order it names them.
pub(super) fn returned_row(
    row: &rusqlite::Row<'_>,
    statement: &Statement,
) -> StoreResult<Option<Returned>> {
    let values = statement
        .returning
        .iter()
        .enumerate()
        .map(|(index, (_, kind))| value_at(row, index, *kind))
        .collect::<StoreResult<Vec<Option<Value>>>>()?;
    assemble(values)
}

/// The value a bind gave a column the statement returns.
fn bound_value(
    statement: &Statement,
    bind: usize,
    name: &str,
    kind: Returns,
) -> StoreResult<Option<Value>> {
    Ok(match (statement.binds.get(bind), kind) {
        (Some(Bind::Int(value)), Returns::Int) => Some(Value::Int(*value)),
        (Some(Bind::OptInt(value)), Returns::Int) => value.map(Value::Int),
        (Some(Bind::Text(value)), Returns::Text) => Some(Value::Text(value.clone())),
        (Some(Bind::OptText(value)), Returns::Text) => value.clone().map(Value::Text),
        (other, _) => {
            return Err(StoreError::Corrupt(format!(
                "script column {name} is set from {other:?}, expected {kind:?}: {}",
                statement.sql
            )));
        }
    })
}

/// A statement whose RETURNING names only `returning`'s columns, as the statement without that
/// clause and where the columns come from instead:
/// - `INSERT INTO t ... RETURNING a, b`: `SELECT a, b FROM t WHERE rowid = ?1`; not for an
///   upsert that may update (an update sets no rowid to read back);
/// - `UPDATE t SET a = $1, ... WHERE ... RETURNING a`: the binds each column is set to.
fn without_returning(sql: &str, returning: &[(&str, Returns)]) -> Option<(String, Returning)> {
    if returning.is_empty() {
        return None;
    }
    let at = sql.rfind(" RETURNING ")?;
    let columns = sql[at + " RETURNING ".len()..].trim();
    let named: Vec<&str> = columns.split(',').map(str::trim).collect();
    if named.len() != returning.len()
        || named
            .iter()
            .zip(returning)
            .any(|(name, (wanted, _))| name != wanted)
    {
        return None;
    }
    let statement = sql[..at].to_string();
    if let Some(rest) = sql.strip_prefix("INSERT INTO ") {
        let table = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .filter(|table| !table.is_empty())?;
        // An upsert that updates changes a row but inserts none: no rowid to read back.
        let words: Vec<String> = sql
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        if words
            .windows(2)
            .any(|pair| pair[0] == "DO" && pair[1] == "UPDATE")
        {
            return None;
        }
        let query = format!("SELECT {columns} FROM {table} WHERE rowid = ?1");
        return Some((statement, Returning::ReadBack(query)));
    }
    if sql.starts_with("UPDATE ") {
        let set = top_level(&statement, " SET ")?;
        let set = &statement[set + " SET ".len()..];
        let set = &set[..top_level(set, " WHERE ").unwrap_or(set.len())];
        // The scanners below do not know quotes: a literal could hide a comma or a paren.
        if set.contains(['\'', '"']) {
            return None;
        }
        let assignments = split_top_level(set);
        let binds = named
            .iter()
            .map(|name| {
                assignments.iter().find_map(|assignment| {
                    let (column, value) = assignment.split_once('=')?;
                    (column.trim() == *name).then_some(())?;
                    let number: usize = value.trim().strip_prefix('$')?.parse().ok()?;
                    number.checked_sub(1)
                })
            })
            .collect::<Option<Box<[usize]>>>()?;
        return Some((statement, Returning::Set(binds)));
    }
    None
}

/// Where `needle` first occurs in `sql` outside parentheses.
fn top_level(sql: &str, needle: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (at, c) in sql.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 && sql[at..].starts_with(needle) => return Some(at),
            _ => {}
        }
    }
    None
}

/// `a = $1, b = COALESCE($2, b)` as its assignments: commas inside parentheses do not split.
fn split_top_level(set: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (at, c) in set.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&set[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&set[start..]);
    parts
}

/// Where each parameter of a statement written with `$1..$n` takes its bind from (see
/// [`Plan::positions`]).
pub(super) fn positions_of(
    prepared: &rusqlite::Statement<'_>,
    binds: usize,
) -> StoreResult<Box<[usize]>> {
    (1..=prepared.parameter_count())
        .map(|index| {
            prepared
                .parameter_name(index)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|number| number.parse::<usize>().ok())
                .filter(|number| (1..=binds).contains(number))
                .map(|number| number - 1)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "script parameter {index} is not one of $1..${binds}"
                    ))
                })
        })
        .collect()
}

fn value_at(row: &rusqlite::Row<'_>, index: usize, kind: Returns) -> StoreResult<Option<Value>> {
    let value = row.get_ref(index).map_err(store_error)?;
    Ok(match (value, kind) {
        (ValueRef::Null, _) => None,
        (ValueRef::Integer(value), Returns::Int) => Some(Value::Int(value)),
        (ValueRef::Text(text), Returns::Text) => Some(Value::Text(
            String::from_utf8(text.to_vec())
                .map_err(|_| StoreError::Corrupt(format!("script column {index} is not UTF-8")))?,
        )),
        (other, _) => {
            return Err(StoreError::Corrupt(format!(
                "script column {index} is {:?}, expected {kind:?}",
                other.data_type()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Returning, without_returning};
    use crate::store::script::Returns;

    #[test]
    fn an_insert_returning_its_columns_is_read_back_by_rowid() {
        let (sql, returning) = without_returning(
            "INSERT INTO messages (id, seq) VALUES ($1, $2) \
             ON CONFLICT (id) DO NOTHING RETURNING conversation_id, seq",
            &[("conversation_id", Returns::Text), ("seq", Returns::Int)],
        )
        .expect("a form without RETURNING");
        assert_eq!(
            sql,
            "INSERT INTO messages (id, seq) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
        );
        assert_eq!(
            returning,
            Returning::ReadBack(
                "SELECT conversation_id, seq FROM messages WHERE rowid = ?1".into()
            )
        );
    }

    #[test]
    fn an_update_returning_what_it_sets_returns_the_binds() {
        let (sql, returning) = without_returning(
            "UPDATE t SET b = COALESCE($1, b), a = $3, c = $2 \
             WHERE id = $4 AND EXISTS (SELECT 1 FROM u WHERE a = $5) RETURNING c, a",
            &[("c", Returns::Int), ("a", Returns::Text)],
        )
        .expect("a form without RETURNING");
        assert_eq!(
            sql,
            "UPDATE t SET b = COALESCE($1, b), a = $3, c = $2 \
             WHERE id = $4 AND EXISTS (SELECT 1 FROM u WHERE a = $5)"
        );
        assert_eq!(returning, Returning::Set(vec![1, 2].into()));
    }

    #[test]
    fn other_statements_run_as_written() {
        let seq = [("seq", Returns::Int)];
        for sql in [
            // An upsert that may update leaves no rowid to read.
            "INSERT INTO messages (id, seq) VALUES ($1, 1) \
             ON CONFLICT (id) DO UPDATE SET seq = 2 RETURNING seq",
            "INSERT INTO messages (id, seq) VALUES ($1, 1) \
             ON CONFLICT (id) do  update SET seq = 2 RETURNING seq",
            // An update that sets the column to an expression, or not at all.
            "UPDATE messages SET seq = seq + 1 WHERE id = $1 RETURNING seq",
            "UPDATE messages SET other = $2 WHERE id = $1 RETURNING seq",
            "UPDATE messages SET other = (SELECT 1 WHERE seq = $2) WHERE id = $1 RETURNING seq",
            // A literal the scanners would misread.
            "UPDATE messages SET note = 'x, seq = $2, y' WHERE id = $1 RETURNING seq",
            // An expression, or columns other than those the statement declares.
            "INSERT INTO messages (id, seq) VALUES ($1, 1) RETURNING seq + 1",
            "INSERT INTO messages (id, seq) VALUES ($1, 1) RETURNING id",
            "INSERT INTO messages (id, seq) VALUES ($1, 1)",
            "WITH s AS (SELECT 1) INSERT INTO messages (id, seq) SELECT $1, 1 RETURNING seq",
            "DELETE FROM messages WHERE id = $1 RETURNING seq",
        ] {
            assert_eq!(without_returning(sql, &seq), None, "{sql}");
        }
        assert_eq!(
            without_returning("INSERT INTO messages (id) VALUES ($1) RETURNING seq", &[]),
            None
        );
    }
}
