//! The jobs database's SQLite file, written on the caller's thread: the StatusRecorder's
//! connection when the jobs database is a SQLite file (see [`super::JobsWriter`]).
//!
//! Why: through sqlx every statement is a hand-off to the connection's own thread and back,
//! about 0.1 ms under load where SQLite's own work is a few microseconds. The StatusRecorder
//! writes every status of every run, one batch at a time, so those hand-offs were the longest
//! wait of a message in `trigger_overhead` (a batch took 0.44 ms at the median, the recorder
//! was busy two thirds of the time, and sqlx's threads were a third of the daemon's CPU). Here a
//! statement runs in place, through rusqlite, on the same file and the same SQLite library.
//!
//! The statements are sea-orm's, so `jobs` and `manifest` keep one code path: this is a
//! [`ConnectionTrait`] that binds sea-query's values as sqlx binds them (the file reads the same
//! whoever wrote it) and answers rows as sea-orm's proxy rows, typed by each column's declared
//! type (see `values`).
//!
//! Never blocking the caller's thread on another process: statements run with no busy timeout,
//! and one that finds the file locked (SQLITE_BUSY, another daemon writing) runs again on
//! Tokio's blocking pool, where it waits for the lock as sqlx's connections do. Transactions
//! begin IMMEDIATE, taking the write lock first, so within one nothing waits for a lock: a
//! statement that finds one anyway fails, and the recorder applies its updates again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, ProxyExecResult, QueryResult, RuntimeErr,
    Statement,
};
use tokio::sync::OwnedMutexGuard;

mod values;

/// How long a statement that found the file locked waits for it on the blocking pool: as
/// long as the pool's connections wait (`db::connect_only`).
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// Prepared statements kept for reuse.
const STATEMENTS_CACHED: usize = 256;

/// A connection to a SQLite file that runs statements on the caller's thread. Clones share it.
#[derive(Clone)]
pub struct InlineSqlite {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// Held by a transaction for its life, and by a statement outside one while it runs: a
    /// statement waiting for the blocking pool must not let another in, nor one run inside
    /// somebody else's transaction.
    turn: Arc<tokio::sync::Mutex<()>>,
    path: PathBuf,
}

impl Inner {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Only a panic within a statement poisons it; SQLite's state is its own to keep.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` here; where it found the file locked and `may_wait`, again on the blocking
    /// pool with a busy timeout (a statement that met SQLITE_BUSY changed nothing).
    async fn call<T, F>(self: &Arc<Self>, may_wait: bool, work: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let first = work(&self.conn());
        match first {
            Err(e) if may_wait && is_busy(&e) => {
                let inner = self.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = inner.conn();
                    let waiting = Waiting::on(&conn)?;
                    work(waiting.0)
                })
                .await
                .unwrap_or_else(not_run)
            }
            other => other,
        }
    }

    async fn take_turn(&self) -> OwnedMutexGuard<()> {
        match self.turn.clone().try_lock_owned() {
            Ok(turn) => turn,
            Err(_) => self.turn.clone().lock_owned().await,
        }
    }

    /// Runs `stmt` (one statement, or several separated by `;` with their values in order);
    /// answers the rows changed. Several outside a transaction go in one of their own, so that
    /// they stand or fall together and can be run again whole.
    async fn execute(self: &Arc<Self>, stmt: Statement, in_txn: bool) -> Result<ExecResult, DbErr> {
        let path = self.path.clone();
        self.call(!in_txn, move |conn| values::execute(conn, &stmt))
            .await
            .map(|(changed, last)| ProxyExecResult::new(last, changed).into())
            .map_err(|e| db_err(&path, e, DbErr::Exec))
    }

    async fn query_all(
        self: &Arc<Self>,
        stmt: Statement,
        in_txn: bool,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let path = self.path.clone();
        self.call(!in_txn, move |conn| values::query(conn, &stmt))
            .await
            .map_err(|e| db_err(&path, e, DbErr::Query))?
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(|e| DbErr::Type(format!("{}: {e}", path.display())))
    }
}

impl InlineSqlite {
    /// Opens the SQLite file at `path`, which `db::connect` created and migrated (so it is in
    /// WAL mode), with the pool's settings: synchronous NORMAL, foreign keys on.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(Duration::ZERO)?;
        // The recorder's statements are a few dozen shapes (a transition each, the reads with
        // their lists of ids); rusqlite keeps 16 by default.
        conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                turn: Arc::new(tokio::sync::Mutex::new(())),
                path: path.to_owned(),
            }),
        })
    }

    async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        Some(self.inner.take_turn().await)
    }

    /// Begins a transaction that holds the write lock (BEGIN IMMEDIATE): waited for on the
    /// blocking pool when another process has it.
    pub async fn begin(&self) -> Result<InlineTxn, DbErr> {
        let turn = self.inner.take_turn().await;
        let path = self.inner.path.clone();
        self.inner
            .call(true, |conn| conn.execute_batch("BEGIN IMMEDIATE"))
            .await
            .map_err(|e| db_err(&path, e, DbErr::Exec))?;
        Ok(InlineTxn {
            inner: self.inner.clone(),
            _turn: turn,
            open: true,
        })
    }
}

/// The connection's statements take their turn (see `Inner::turn`); a transaction's hold it.
macro_rules! connection {
    ($ty:ty, $in_txn:expr) => {
        #[async_trait::async_trait]
        impl ConnectionTrait for $ty {
            fn get_database_backend(&self) -> DbBackend {
                DbBackend::Sqlite
            }

            async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
                let _turn = self.turn().await;
                self.inner.execute(stmt, $in_txn).await
            }

            async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
                self.execute(Statement::from_string(DbBackend::Sqlite, sql))
                    .await
            }

            async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
                Ok(self.query_all(stmt).await?.into_iter().next())
            }

            async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
                let _turn = self.turn().await;
                self.inner.query_all(stmt, $in_txn).await
            }
        }
    };
}

connection!(InlineSqlite, false);
connection!(InlineTxn, true);

/// One statement at a time: each is a call here, and parsed once (the statement cache).
impl super::RunsWrites for InlineSqlite {
    fn joins_writes(&self) -> bool {
        false
    }
}

impl super::RunsWrites for InlineTxn {
    fn joins_writes(&self) -> bool {
        false
    }
}

/// A transaction on an [`InlineSqlite`]: rolled back when dropped uncommitted.
pub struct InlineTxn {
    inner: Arc<Inner>,
    _turn: OwnedMutexGuard<()>,
    open: bool,
}

impl InlineTxn {
    /// A transaction's statements run in the turn it holds.
    async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        None
    }

    pub async fn commit(mut self) -> Result<(), DbErr> {
        let path = self.inner.path.clone();
        self.inner
            .call(false, |conn| conn.execute_batch("COMMIT"))
            .await
            .map_err(|e| db_err(&path, e, DbErr::Exec))?;
        self.open = false;
        Ok(())
    }
}

impl Drop for InlineTxn {
    fn drop(&mut self) {
        if self.open {
            let conn = self.inner.conn();
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::warn!("{}: rolling back: {e}", self.inner.path.display());
                }
            }
        }
    }
}

/// The connection waiting for a locked file ([`BUSY_WAIT`]) while this lives: back to not
/// waiting when dropped, even by a panic, lest a later statement wait on the caller's thread.
struct Waiting<'a>(&'a Connection);

impl<'a> Waiting<'a> {
    fn on(conn: &'a Connection) -> rusqlite::Result<Self> {
        conn.busy_timeout(BUSY_WAIT)?;
        Ok(Self(conn))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.busy_timeout(Duration::ZERO) {
            tracing::warn!("SQLite busy timeout not reset: {e}");
        }
    }
}

/// What a statement sent to the blocking pool answers when it did not come back: its panic,
/// resumed here, or (the runtime stopped before it ran) SQLITE_INTERRUPT, nothing done.
pub(crate) fn not_run<T>(e: tokio::task::JoinError) -> rusqlite::Result<T> {
    match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
            Some("the runtime stopped before the statement ran".into()),
        )),
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED, with their extended codes: another connection holds the file.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A file still locked after [`BUSY_WAIT`] is an unavailable database (`DbErr::Conn`, which the
/// recorder rides out); any other error is the statement's (`kind`), naming the file.
fn db_err(path: &Path, e: rusqlite::Error, kind: fn(RuntimeErr) -> DbErr) -> DbErr {
    let said = RuntimeErr::Internal(format!("{}: {e}", path.display()));
    if is_busy(&e) {
        DbErr::Conn(said)
    } else {
        kind(said)
    }
}

#[cfg(test)]
mod tests;
