//! The jobs database: connecting (SQLite in WAL mode with a busy timeout, or PostgreSQL) and
//! applying pending migrations.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::DatabaseSettings;
use crate::retry::{retry, Backoff, Budget, Verdict};
use crate::urls::redact;

pub(crate) use self::inline::not_run;
pub use self::inline::{InlineSqlite, InlineTxn};
pub use self::writer::{JobsWriter, RunsWrites, WriterTxn};

mod inline;
mod writer;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url}: {source}")]
    Connect { url: String, source: DbErr },
    #[error("database {url}: applying migrations: {source}")]
    Migrate { url: String, source: DbErr },
}

/// Connects and applies pending migrations. Several processes may start at once on one
/// database: on a new SQLite file they meet "database is locked" while one of them turns WAL
/// on, and they race to apply the same migration. Such an attempt is tried again, and after a
/// failed one what counts is whether anything is still pending, seen through a new connection
/// (the failed attempt's connections may hold a snapshot from before the winner's commit).
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbError> {
    // Enough for a handful of processes starting together on a new file to take turns (each
    // turn is a connection setting WAL on, or a migration), with jitter so they do not collide
    // again in step.
    const RETRIES: u32 = 11;
    let backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        budget: Budget::Retries(RETRIES),
    };
    let migration_failed = std::cell::Cell::new(false);
    let attempt = || async {
        if migration_failed.get() {
            if let Ok(db) = connect_only(settings).await {
                if Migrator::get_pending_migrations(&db).await.map(|p| p.len()) == Ok(0) {
                    return Ok(db);
                }
                let _ = db.close().await;
            }
        }
        let db = connect_only(settings).await?;
        match Migrator::up(&db, None).await {
            Ok(()) => Ok(db),
            Err(source) => {
                let _ = db.close().await;
                migration_failed.set(true);
                Err(DbError::Migrate {
                    url: redact(&settings.url),
                    source,
                })
            }
        }
    };
    let always = |_: &DbError| Verdict::Retry { after: None };
    retry(&backoff, "database", always, |_, _, _| {}, attempt)
        .await
        .map_err(|gave_up| gave_up.error)
}

/// Connects without touching the schema.
pub async fn connect_only(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbError> {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .connect_timeout(Duration::from_secs(10))
        // A database that went away shows as unavailable within seconds; the StatusRecorder
        // then rides it out (DATABASE_RIDE_OUT), telling so in the log.
        .acquire_timeout(Duration::from_secs(3))
        .sqlx_logging(false)
        // A SQLite file needs no ping before each statement (each is a hand-off to the
        // connection's thread, so it doubled the cost of every job transition); a PostgreSQL
        // connection is checked, so that one a restart broke is replaced, not used.
        .test_before_acquire(!settings.url.starts_with("sqlite:"))
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
        });
    // Several processes opening a new SQLite file at once meet "database is locked" while one
    // of them turns WAL on, which no busy timeout waits out: such an open is tried again.
    let backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(500),
        budget: Budget::Retries(BUSY_RETRIES),
    };
    let busy = |e: &DbErr| {
        if is_sqlite_busy(e) {
            Verdict::Retry { after: None }
        } else {
            Verdict::Abort
        }
    };
    retry(
        &backoff,
        "database",
        busy,
        |_, _, _| {},
        || Database::connect(options.clone()),
    )
    .await
    .map_err(|gave_up| DbError::Connect {
        url: redact(&settings.url),
        source: gave_up.error,
    })
}

/// Opens of a busy SQLite file tried again before giving up (a few seconds in all).
const BUSY_RETRIES: u32 = 12;

/// SQLite's primary result codes for a file held by another connection.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// Whether an error is SQLite's "database is locked" (SQLITE_BUSY or SQLITE_LOCKED, with their
/// extended codes such as 517): another process is writing the file.
pub fn is_sqlite_busy(e: &DbErr) -> bool {
    use sea_orm::{sqlx, RuntimeErr};
    let (DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::Database(db)))
    | DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(db)))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(db)))) = e
    else {
        return false;
    };
    let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() else {
        return false;
    };
    let primary = sqlx::error::DatabaseError::code(sqlite)
        .and_then(|code| code.parse::<i32>().ok())
        .map(|code| code & 0xff);
    matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED))
}

/// The names of the migrations applied and pending, for `persona-ingest migrate`.
pub async fn migration_status(
    db: &DatabaseConnection,
) -> Result<(Vec<String>, Vec<String>), DbErr> {
    let applied = Migrator::get_applied_migrations(db).await?;
    let pending = Migrator::get_pending_migrations(db).await?;
    Ok((
        applied.iter().map(|m| m.name().to_owned()).collect(),
        pending.iter().map(|m| m.name().to_owned()).collect(),
    ))
}
