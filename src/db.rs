//! The jobs database: connecting (SQLite in WAL mode with a busy timeout, or PostgreSQL) and
//! applying pending migrations.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::DatabaseSettings;

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
    const ATTEMPTS: u64 = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match connect_only(settings).await {
            Err(e) => e,
            Ok(db) => match Migrator::up(&db, None).await {
                Ok(()) => return Ok(db),
                Err(source) => {
                    let _ = db.close().await;
                    DbError::Migrate {
                        url: redact(&settings.url),
                        source,
                    }
                }
            },
        };
        if attempt >= ATTEMPTS {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        if let (DbError::Migrate { .. }, Ok(db)) = (&error, connect_only(settings).await) {
            if Migrator::get_pending_migrations(&db).await.map(|p| p.len()) == Ok(0) {
                return Ok(db);
            }
            let _ = db.close().await;
        }
    }
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
    Database::connect(options)
        .await
        .map_err(|source| DbError::Connect {
            url: redact(&settings.url),
            source,
        })
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

/// A URL fit for messages: any password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }
}
