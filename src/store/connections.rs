//! PostgreSQL: the connections that run scripts, in a pool of their own.
//!
//! sqlx's pool pings every connection as it goes back to the pool (to flush what a cancelled
//! statement may have left; no option turns it off): a round trip to the server after every
//! script, a wake-up of a backend and of a tokio worker each time, for a script that is one
//! statement in an implicit transaction and leaves nothing to flush. Scripts take their
//! connections from a pool of [`deadpool`] instead (a small, well-kept pool that leaves the
//! checks to its manager), with sqlx's checks done where they are needed:
//!
//! - a connection whose statement was cut off (the script's future dropped mid-way) or failed
//!   in the connection itself (not with the database's answer) is closed, never reused;
//! - one that sat idle for [`PING_AFTER_IDLE`] or more is pinged before it is used, and
//!   replaced if the ping fails (the server may have restarted meanwhile).

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection};

use super::{ACQUIRE_TIMEOUT, PING_AFTER_IDLE, StoreError, StoreResult};

/// A connection for scripts.
#[derive(Debug)]
pub(super) struct ScriptConnection {
    pub raw: AnyConnection,
    /// Set while a statement runs: still set when the pool gets the connection back, the
    /// statement was cut off, or broke the connection.
    in_doubt: bool,
}

impl ScriptConnection {
    /// Run `statement` on this connection. Only an answer from the server (rows, or the
    /// database's error) leaves the connection fit for the next script.
    pub async fn run<T>(
        &mut self,
        statement: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        self.in_doubt = true;
        let result = statement(&mut self.raw).await;
        self.in_doubt = !matches!(result, Ok(_) | Err(sqlx::Error::Database(_)));
        result
    }
}

#[derive(Debug)]
pub(super) struct Manager {
    options: AnyConnectOptions,
}

impl managed::Manager for Manager {
    type Type = ScriptConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<ScriptConnection, sqlx::Error> {
        Ok(ScriptConnection {
            raw: self.options.connect().await?,
            in_doubt: false,
        })
    }

    async fn recycle(
        &self,
        connection: &mut ScriptConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if connection.in_doubt {
            return Err(RecycleError::message("its last statement did not finish"));
        }
        if metrics.last_used() >= PING_AFTER_IDLE {
            connection.raw.ping().await?;
        }
        Ok(())
    }
}

/// The pool of connections for scripts.
pub(super) type ScriptConnections = managed::Pool<Manager>;

/// A pool of at most `size` connections made with `options`, opened as scripts need them. A
/// script waits for one as long as for any other statement's ([`ACQUIRE_TIMEOUT`]).
pub(super) fn script_connections(
    options: AnyConnectOptions,
    size: usize,
) -> StoreResult<ScriptConnections> {
    managed::Pool::builder(Manager { options })
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(ACQUIRE_TIMEOUT))
        .create_timeout(Some(ACQUIRE_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Database(sqlx::Error::Configuration(error.into())))
}

/// Close `pool`: its idle connections say goodbye to the server (as sqlx's pool does on
/// close), those in use are closed as they come back, and any wait for one ends.
pub(super) async fn close(pool: &ScriptConnections) {
    let idle = pool.retain(|_, _| false).removed;
    pool.close();
    for connection in idle {
        // The server ends the session either way.
        let _ = connection.raw.close().await;
    }
}

/// A connection from `pool`, or its refusal as the store's error, as sqlx's pool would have
/// said it: the connection could not be made, none came free in time, or the pool is closed.
pub(super) async fn get(pool: &ScriptConnections) -> StoreResult<managed::Object<Manager>> {
    pool.get().await.map_err(|error| {
        StoreError::Database(match error {
            managed::PoolError::Backend(error) => error,
            managed::PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
            managed::PoolError::Closed => sqlx::Error::PoolClosed,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::any::AnyConnectOptions;

    use super::{ScriptConnections, script_connections};

    /// The PostgreSQL server of the integration tests (tests/it/helpers.rs).
    fn postgres_url() -> String {
        std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        })
    }

    /// The server process behind the pool's one connection.
    async fn backend_pid(pool: &ScriptConnections) -> Result<i32, sqlx::Error> {
        let mut connection = super::get(pool).await.expect("a connection");
        connection
            .run(async |raw| {
                sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                    .fetch_one(raw)
                    .await
            })
            .await
    }

    /// A connection whose statement was cut off (its future dropped, as when a request is
    /// cancelled) is closed and replaced, never handed to the next script, which would wait
    /// for the abandoned statement or read its answer. One that got the database's error back
    /// stays in use.
    #[tokio::test]
    async fn a_connection_whose_statement_was_cut_off_is_not_reused() {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(&postgres_url()).unwrap();
        let pool = script_connections(options, 1).unwrap();
        let first = backend_pid(&pool).await.unwrap();
        assert_eq!(backend_pid(&pool).await.unwrap(), first, "reused when fine");

        let failed = {
            let mut connection = super::get(&pool).await.unwrap();
            connection
                .run(async |raw| sqlx::query("SELECT 1 / 0").execute(raw).await)
                .await
        };
        assert!(
            matches!(failed, Err(sqlx::Error::Database(_))),
            "{failed:?}"
        );
        assert_eq!(
            backend_pid(&pool).await.unwrap(),
            first,
            "the database's error leaves the connection fit"
        );

        let cut_off = tokio::time::timeout(Duration::from_millis(200), async {
            let mut connection = super::get(&pool).await.unwrap();
            connection
                .run(async |raw| sqlx::query("SELECT pg_sleep(5)").execute(raw).await)
                .await
        })
        .await;
        assert!(cut_off.is_err(), "the statement was cut off");
        let next = tokio::time::timeout(Duration::from_secs(10), backend_pid(&pool))
            .await
            .expect("the next script does not wait for the abandoned statement")
            .unwrap();
        assert_ne!(next, first, "a new connection");
        super::close(&pool).await;
    }
}
