//! The two migration folders hold one schema in two dialects (`migrations/sqlite`,
//! `migrations/postgres`); these tests keep them from drifting apart. Every `.sql` file found
//! is checked, whatever its number:
//!
//! - the same file names in both folders;
//! - the same statements, once comments are stripped, whitespace collapsed and the known
//!   dialect differences in [`DIALECT_SUBSTITUTIONS`] applied;
//! - applied to a fresh SQLite and a fresh PostgreSQL database, the same tables, columns
//!   (type, nullability, primary key, default), foreign keys and indexes.
//!
//! The text check says which statement differs; the database check catches what the text
//! cannot see (a substitution that does not mean the same in both dialects).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sqlx::{Connection, PgConnection, Row, SqliteConnection};

use crate::helpers::{Backend, TestDatabase};

/// PostgreSQL text and the SQLite text that says the same. A new dialect difference is added
/// here, on purpose, or the folders fail the check.
const DIALECT_SUBSTITUTIONS: &[(&str, &str)] = &[
    // A 64-bit key that numbers itself. SQLite's INTEGER is 64-bit; AUTOINCREMENT keeps it
    // from reusing the ids of deleted rows, as a PostgreSQL sequence never does.
    ("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT"),
];

/// Column types as each database reports them, and what they store. Types outside this table
/// fail the check until someone says what they correspond to.
const SQLITE_TYPES: &[(&str, &str)] =
    &[("TEXT", "text"), ("BIGINT", "int64"), ("INTEGER", "int64")];
const POSTGRES_TYPES: &[(&str, &str)] = &[("text", "text"), ("bigint", "int64")];

fn migrations_dir(dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect)
}

fn sql_files(dialect: &str) -> BTreeSet<String> {
    let dir = migrations_dir(dialect);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect()
}

/// Statements without comments, whitespace collapsed to one space. `--` inside a quoted
/// string is kept.
fn statements(sql: &str) -> Vec<String> {
    let mut text = String::with_capacity(sql.len());
    for line in sql.lines() {
        let mut in_string = false;
        let mut previous_dash = false;
        let mut kept = String::new();
        for character in line.chars() {
            if character == '\'' {
                in_string = !in_string;
            }
            if !in_string && character == '-' && previous_dash {
                kept.pop();
                break;
            }
            previous_dash = !in_string && character == '-';
            kept.push(character);
        }
        text.push_str(&kept);
        text.push('\n');
    }
    text.split(';')
        .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|statement| !statement.is_empty())
        .collect()
}

fn as_sqlite(postgres_statement: &str) -> String {
    DIALECT_SUBSTITUTIONS.iter().fold(
        postgres_statement.to_string(),
        |text, (postgres, sqlite)| text.replace(postgres, sqlite),
    )
}

#[test]
fn both_folders_have_the_same_files() {
    let sqlite = sql_files("sqlite");
    let postgres = sql_files("postgres");
    assert!(!sqlite.is_empty(), "no migrations found");
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres must hold the same files"
    );
}

#[test]
fn both_folders_have_the_same_statements() {
    let mut problems = Vec::new();
    for file in sql_files("sqlite").intersection(&sql_files("postgres")) {
        let read = |dialect: &str| {
            let path = migrations_dir(dialect).join(file);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
        };
        let sqlite = statements(&read("sqlite"));
        let postgres: Vec<String> = statements(&read("postgres"))
            .iter()
            .map(|statement| as_sqlite(statement))
            .collect();
        if sqlite.len() != postgres.len() {
            problems.push(format!(
                "{file}: {} statements for SQLite, {} for PostgreSQL",
                sqlite.len(),
                postgres.len()
            ));
        }
        for (index, (sqlite, postgres)) in sqlite.iter().zip(&postgres).enumerate() {
            if sqlite != postgres {
                problems.push(format!(
                    "{file}, statement {}:\n  sqlite:   {sqlite}\n  postgres: {postgres} (after substitutions)",
                    index + 1
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the migration folders differ beyond DIALECT_SUBSTITUTIONS:\n{}",
        problems.join("\n")
    );
}

fn family(types: &[(&str, &'static str)], reported: &str, backend: &str) -> &'static str {
    types
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(reported))
        .map(|(_, family)| *family)
        .unwrap_or_else(|| {
            panic!("{backend} column type {reported:?} is not in the test's table of types")
        })
}

/// A default as written, without PostgreSQL's casts (`'{}'::text` is `'{}'`).
fn plain_default(default: Option<String>) -> String {
    let Some(default) = default else {
        return "none".into();
    };
    match default.rsplit_once("::") {
        Some((value, cast)) if cast.chars().all(|c| c.is_ascii_lowercase() || c == ' ') => {
            value.to_string()
        }
        _ => default,
    }
}

/// The schema as facts, one line each, comparable across the two databases.
async fn sqlite_schema(url: &str) -> BTreeSet<String> {
    let mut connection = SqliteConnection::connect(url).await.expect("sqlite");
    sqlx::migrate::Migrator::new(migrations_dir("sqlite"))
        .await
        .expect("sqlite migrations")
        .run(&mut connection)
        .await
        .expect("sqlite migrations apply");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut connection)
    .await
    .expect("tables");
    let mut facts = BTreeSet::new();
    for table in &tables {
        facts.insert(format!("table {table}"));
        let columns = sqlx::query(
            "SELECT name, type, \"notnull\", pk, dflt_value FROM pragma_table_info($1)",
        )
        .bind(table)
        .fetch_all(&mut connection)
        .await
        .expect("columns");
        for column in columns {
            let name: String = column.get("name");
            let kind: String = column.get("type");
            let primary: i64 = column.get("pk");
            // PostgreSQL makes a primary key NOT NULL; SQLite, by a legacy quirk, does not
            // for keys other than INTEGER (the store never writes a NULL key either way).
            let not_null = column.get::<i64, _>("notnull") == 1 || primary > 0;
            facts.insert(format!(
                "column {table}.{name}: {} {} primary={primary} default={}",
                family(SQLITE_TYPES, &kind, "SQLite"),
                if not_null { "not null" } else { "null" },
                plain_default(column.get("dflt_value")),
            ));
        }
        let foreign_keys =
            sqlx::query("SELECT \"from\", \"table\", \"to\" FROM pragma_foreign_key_list($1)")
                .bind(table)
                .fetch_all(&mut connection)
                .await
                .expect("foreign keys");
        for key in foreign_keys {
            facts.insert(format!(
                "foreign key {table}.{} -> {}.{}",
                key.get::<String, _>("from"),
                key.get::<String, _>("table"),
                key.get::<String, _>("to"),
            ));
        }
        let indexes = sqlx::query(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list($1) ORDER BY name",
        )
        .bind(table)
        .fetch_all(&mut connection)
        .await
        .expect("indexes");
        for index in indexes {
            let name: String = index.get("name");
            let origin: String = index.get("origin");
            // Primary keys are compared as columns: SQLite has no index for an INTEGER one.
            if origin == "pk" {
                continue;
            }
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(&mut connection)
                    .await
                    .expect("index columns");
            facts.insert(index_fact(
                table,
                // A UNIQUE constraint's index is named by each database its own way.
                (origin == "c").then_some(name.as_str()),
                index.get::<i64, _>("unique") == 1,
                &columns.join(", "),
                index.get::<i64, _>("partial") == 1,
            ));
        }
    }
    facts
}

fn index_fact(
    table: &str,
    name: Option<&str>,
    unique: bool,
    columns: &str,
    partial: bool,
) -> String {
    format!(
        "{}index {} on {table} ({columns}){}",
        if unique { "unique " } else { "" },
        name.unwrap_or("of a UNIQUE constraint"),
        if partial { " partial" } else { "" },
    )
}

async fn postgres_schema(url: &str) -> BTreeSet<String> {
    let mut connection = PgConnection::connect(url).await.expect("postgres");
    sqlx::migrate::Migrator::new(migrations_dir("postgres"))
        .await
        .expect("postgres migrations")
        .run(&mut connection)
        .await
        .expect("postgres migrations apply");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut connection)
    .await
    .expect("tables");
    let mut facts = BTreeSet::new();
    for table in &tables {
        facts.insert(format!("table {table}"));
        let columns = sqlx::query(
            "SELECT c.column_name::text AS name, c.data_type::text AS kind, \
                    c.is_nullable::text = 'NO' AS not_null, c.column_default::text AS dflt, \
                    COALESCE(array_position(x.indkey::int2[], c.ordinal_position::int2) \
                        - array_lower(x.indkey::int2[], 1) + 1, 0)::int8 AS pk \
             FROM information_schema.columns c \
             LEFT JOIN pg_index x ON x.indrelid = ('public.' || c.table_name)::regclass \
                 AND x.indisprimary \
             WHERE c.table_schema = 'public' AND c.table_name = $1",
        )
        .bind(table)
        .fetch_all(&mut connection)
        .await
        .expect("columns");
        for column in columns {
            let name: String = column.get("name");
            let kind: String = column.get("kind");
            let not_null: bool = column.get("not_null");
            let default: Option<String> = column.get("dflt");
            // A BIGSERIAL's default is its sequence; SQLite numbers the rowid itself.
            let default = default.filter(|value| !value.starts_with("nextval("));
            facts.insert(format!(
                "column {table}.{name}: {} {} primary={} default={}",
                family(POSTGRES_TYPES, &kind, "PostgreSQL"),
                if not_null { "not null" } else { "null" },
                column.get::<i64, _>("pk"),
                plain_default(default),
            ));
        }
        let foreign_keys = sqlx::query(
            "SELECT a.attname::text AS from_column, r.relname::text AS to_table, \
                    ra.attname::text AS to_column, cardinality(c.conkey)::int8 AS width \
             FROM pg_constraint c \
             JOIN pg_class t ON t.oid = c.conrelid \
             JOIN pg_class r ON r.oid = c.confrelid \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
             JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1] \
             WHERE c.contype = 'f' AND t.relname = $1 \
               AND t.relnamespace = 'public'::regnamespace",
        )
        .bind(table)
        .fetch_all(&mut connection)
        .await
        .expect("foreign keys");
        for key in foreign_keys {
            assert_eq!(
                key.get::<i64, _>("width"),
                1,
                "{table}: the test compares single-column foreign keys only; extend it"
            );
            facts.insert(format!(
                "foreign key {table}.{} -> {}.{}",
                key.get::<String, _>("from_column"),
                key.get::<String, _>("to_table"),
                key.get::<String, _>("to_column"),
            ));
        }
        let indexes = sqlx::query(
            "SELECT i.relname::text AS name, x.indisunique AS is_unique, \
                    x.indpred IS NOT NULL AS partial, \
                    EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) \
                        AS of_constraint, \
                    array_to_string(ARRAY( \
                        SELECT a.attname::text \
                        FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, position) \
                        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
                        ORDER BY k.position), ', ') AS columns \
             FROM pg_index x \
             JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid \
             WHERE t.relname = $1 AND t.relnamespace = 'public'::regnamespace \
               AND NOT x.indisprimary",
        )
        .bind(table)
        .fetch_all(&mut connection)
        .await
        .expect("indexes");
        for index in indexes {
            let name: String = index.get("name");
            let of_constraint: bool = index.get("of_constraint");
            facts.insert(index_fact(
                table,
                (!of_constraint).then_some(name.as_str()),
                index.get("is_unique"),
                &index.get::<String, _>("columns"),
                index.get("partial"),
            ));
        }
    }
    facts
}

#[tokio::test]
async fn both_folders_build_the_same_schema() {
    let sqlite_database = TestDatabase::new(Backend::Sqlite).await;
    let postgres_database = TestDatabase::new(Backend::Postgres).await;
    let sqlite = sqlite_schema(&sqlite_database.url).await;
    let postgres = postgres_schema(&postgres_database.url).await;
    assert!(
        sqlite.iter().any(|fact| fact.starts_with("column ")),
        "no columns read from SQLite: {sqlite:?}"
    );
    let only_sqlite: Vec<&String> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<&String> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migrations build different schemas\nonly in SQLite:\n  {}\nonly in PostgreSQL:\n  {}",
        only_sqlite
            .iter()
            .map(|fact| fact.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_postgres
            .iter()
            .map(|fact| fact.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}

#[test]
fn statements_ignore_comments_and_layout() {
    let sql = "-- header\nCREATE TABLE t (\n    a TEXT DEFAULT '--x', -- why\n    b BIGINT\n);\n\n";
    assert_eq!(
        statements(sql),
        vec!["CREATE TABLE t ( a TEXT DEFAULT '--x', b BIGINT )"]
    );
    assert_eq!(
        as_sqlite("CREATE TABLE t (id BIGSERIAL PRIMARY KEY)"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT)"
    );
}
