//! Why a transition was not applied, and which of those reasons a later try may mend.

use sea_orm::DbErr;
use uuid::Uuid;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransitionError {
    #[error("database: {0}")]
    Db(String),
    /// The database could not be reached (down, restarting, failing over): worth trying again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("job {0} does not exist")]
    NoJob(Uuid),
    #[error("persona {0} does not exist")]
    NoPersona(String),
    #[error("refused: {0}")]
    Refused(String),
}

impl From<DbErr> for TransitionError {
    fn from(e: DbErr) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Db(e.to_string())
        }
    }
}

/// Whether an error says the database was out of reach rather than that the statement failed:
/// no connection, a broken one, PostgreSQL shutting down or starting (SQLSTATE classes 08
/// and 57P), or an SQLite file another process is writing (SQLITE_BUSY and SQLITE_LOCKED with
/// their extended codes, such as 517, BUSY_SNAPSHOT: a read transaction that wants to write
/// after another process wrote, which no busy timeout waits out; only trying the whole
/// statement again does).
fn is_unavailable(e: &DbErr) -> bool {
    use sea_orm::sqlx;
    use sea_orm::RuntimeErr;
    let sqlx_error = match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx_error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(_) if crate::db::is_sqlite_busy(e) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
