//! The StatusRecorder's connection to the jobs database: a SQLite file is written in place
//! through [`InlineSqlite`] (see there for why); PostgreSQL, and SQLite in memory (which only
//! the pool's connections share), through the sea-orm pool. Both are a [`ConnectionTrait`], so
//! `jobs` and `manifest` run the same statements on either.

use std::path::PathBuf;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};

use super::inline::{InlineSqlite, InlineTxn};

/// A connection that runs [`crate::jobs::Writes`], saying whether they go joined as one string.
pub trait RunsWrites: ConnectionTrait {
    /// Whether each statement alone is a hand-off to a driver's thread that one string saves:
    /// sqlx's SQLite.
    fn joins_writes(&self) -> bool {
        self.get_database_backend() == DbBackend::Sqlite
    }
}

impl RunsWrites for DatabaseConnection {}
impl RunsWrites for DatabaseTransaction {}

/// Where the StatusRecorder writes.
#[derive(Clone)]
pub enum JobsWriter {
    Pool(DatabaseConnection),
    Inline(InlineSqlite),
}

impl JobsWriter {
    /// `db`'s own file through [`InlineSqlite`] when `db` is a SQLite file, else `db`. A file
    /// that cannot be opened a second time is written through `db`, and the log says why.
    pub fn for_db(db: &DatabaseConnection) -> Self {
        let Some(path) = sqlite_file(db) else {
            return Self::Pool(db.clone());
        };
        match InlineSqlite::open(&path) {
            Ok(inline) => Self::Inline(inline),
            Err(e) => {
                tracing::warn!(
                    "{}: writing through the pool, not in place: {e}",
                    path.display()
                );
                Self::Pool(db.clone())
            }
        }
    }

    pub async fn begin(&self) -> Result<WriterTxn, DbErr> {
        Ok(match self {
            Self::Pool(db) => WriterTxn::Pool(db.begin().await?),
            Self::Inline(db) => WriterTxn::Inline(db.begin().await?),
        })
    }
}

/// The file of a SQLite pool; `None` for another database or SQLite in memory (whose name is
/// not a file: sqlx names it `file:sqlx-in-memory-N`).
fn sqlite_file(db: &DatabaseConnection) -> Option<PathBuf> {
    let DatabaseConnection::SqlxSqlitePoolConnection(_) = db else {
        return None;
    };
    let path = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_owned();
    path.is_file().then_some(path)
}

/// A transaction of a [`JobsWriter`]: rolled back when dropped uncommitted.
pub enum WriterTxn {
    Pool(DatabaseTransaction),
    Inline(InlineTxn),
}

impl WriterTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Self::Pool(txn) => txn.commit().await,
            Self::Inline(txn) => txn.commit().await,
        }
    }
}

/// One body for both enums: each call goes to the connection inside.
macro_rules! delegate {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl ConnectionTrait for $ty {
            fn get_database_backend(&self) -> DbBackend {
                match self {
                    Self::Pool(db) => db.get_database_backend(),
                    Self::Inline(db) => db.get_database_backend(),
                }
            }

            async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
                match self {
                    Self::Pool(db) => db.execute(stmt).await,
                    Self::Inline(db) => db.execute(stmt).await,
                }
            }

            async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
                match self {
                    Self::Pool(db) => db.execute_unprepared(sql).await,
                    Self::Inline(db) => db.execute_unprepared(sql).await,
                }
            }

            async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
                match self {
                    Self::Pool(db) => db.query_one(stmt).await,
                    Self::Inline(db) => db.query_one(stmt).await,
                }
            }

            async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
                match self {
                    Self::Pool(db) => db.query_all(stmt).await,
                    Self::Inline(db) => db.query_all(stmt).await,
                }
            }
        }
    };
}

delegate!(JobsWriter);
delegate!(WriterTxn);

impl RunsWrites for JobsWriter {
    fn joins_writes(&self) -> bool {
        matches!(self, Self::Pool(db) if db.joins_writes())
    }
}

impl RunsWrites for WriterTxn {
    fn joins_writes(&self) -> bool {
        matches!(self, Self::Pool(txn) if txn.joins_writes())
    }
}
