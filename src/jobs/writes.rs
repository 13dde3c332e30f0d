//! Write statements run as one. On SQLite they go as one string with all their values: one
//! hand-off to the driver's thread for all of them, where each statement alone is one. That
//! hand-off, not SQLite's work, is what a status update cost (about 0.1 ms under load, against
//! a few microseconds a statement within one string), and the StatusRecorder, which writes
//! every status of every run through one connection, was the daemon's bottleneck.
//!
//! PostgreSQL takes one statement at a time with values (its extended protocol), so there they
//! run one after another: same result, one round trip each, as before. So do they on a SQLite
//! file written in place ([`crate::db::InlineSqlite`]), where a statement is a call and each
//! one alone is parsed once and cached; joined, the string was parsed again every time (a
//! quarter of the daemon's main thread in `trigger_overhead`).

use sea_orm::{DbBackend, DbErr, Statement, Values};

pub use crate::db::RunsWrites;

/// Statements to run together, in order; `run` answers the rows they changed in all.
#[derive(Debug, Default)]
pub struct Writes {
    statements: Vec<Statement>,
}

impl Writes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, statement: Statement) {
        self.statements.push(statement);
    }

    /// Adds `later`'s statements after these.
    pub fn append(&mut self, mut later: Writes) {
        self.statements.append(&mut later.statements);
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs the statements in order on `db` (a transaction, for them to stand or fall
    /// together); answers the rows they changed, summed. The statements must be INSERT, UPDATE
    /// or DELETE: SQLite counts changes per data-changing statement, and any other kind would
    /// be counted with the previous one's.
    pub async fn run<C: RunsWrites>(self, db: &C) -> Result<u64, DbErr> {
        if self.statements.is_empty() {
            return Ok(0);
        }
        if !db.joins_writes() || self.statements.len() == 1 {
            let mut changed = 0;
            for statement in self.statements {
                changed += db.execute(statement).await?.rows_affected();
            }
            return Ok(changed);
        }
        let mut sql = String::new();
        let mut values = Vec::new();
        for statement in self.statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&statement.sql);
            // SQLite's placeholders are `?`, bound in order across the statements of a string.
            values.extend(statement.values.map(|v| v.0).unwrap_or_default());
        }
        let all = Statement::from_sql_and_values(DbBackend::Sqlite, sql, Values(values));
        Ok(db.execute(all).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use entities::persona;
    use sea_orm::sea_query::Expr;
    use sea_orm::{
        ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryTrait,
    };

    use super::*;
    use crate::{PersonaId, PersonaStatus};

    /// An update of one persona's status, as the transitions write it.
    fn set_status(backend: DbBackend, id: &str, to: PersonaStatus) -> Statement {
        persona::Entity::update_many()
            .col_expr(persona::Column::Status, Expr::value(to))
            .filter(persona::Column::Id.eq(id))
            .build(backend)
    }

    async fn three_personas(db: &DatabaseConnection) {
        let now = chrono::Utc::now();
        for id in ["a", "b", "c"] {
            let persona = PersonaId::parse(id).unwrap();
            crate::jobs::create::new_persona(&persona, PersonaStatus::Draft, now)
                .insert(db)
                .await
                .unwrap();
        }
    }

    /// Three updates of [`three_personas`] run as one by `writer` (two change a row), then
    /// `done` (a commit), then the rows read through `db`.
    async fn three_updates<C: RunsWrites>(
        db: &DatabaseConnection,
        writer: C,
        done: impl AsyncFnOnce(C),
    ) {
        let backend = writer.get_database_backend();
        let mut writes = Writes::new();
        writes.push(set_status(backend, "a", PersonaStatus::Active));
        writes.push(set_status(backend, "nobody", PersonaStatus::Active));
        writes.push(set_status(backend, "c", PersonaStatus::Failed));
        assert_eq!(writes.run(&writer).await.unwrap(), 2);
        done(writer).await;

        let status = |id: &'static str| async move {
            persona::Entity::find_by_id(id)
                .one(db)
                .await
                .unwrap()
                .unwrap()
                .status
        };
        assert_eq!(status("a").await, PersonaStatus::Active);
        assert_eq!(status("b").await, PersonaStatus::Draft);
        assert_eq!(status("c").await, PersonaStatus::Failed);
    }

    #[tokio::test]
    async fn statements_run_as_one_count_every_row_they_change_and_bind_their_own_values() {
        let settings = crate::config::DatabaseSettings {
            url: "sqlite::memory:".into(),
            max_connections: 1,
        };
        let db = crate::db::connect(&settings).await.unwrap();
        assert!(db.joins_writes());
        three_personas(&db).await;
        three_updates(&db, db.clone(), async |_| {}).await;
    }

    #[tokio::test]
    async fn statements_written_in_place_run_one_by_one_in_the_writers_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::DatabaseSettings {
            url: format!("sqlite://{}/jobs.db?mode=rwc", dir.path().display()),
            max_connections: 1,
        };
        let db = crate::db::connect(&settings).await.unwrap();
        let writer = crate::db::JobsWriter::for_db(&db);
        assert!(matches!(writer, crate::db::JobsWriter::Inline(_)));
        assert!(!writer.joins_writes());
        three_personas(&db).await;
        let txn = writer.begin().await.unwrap();
        assert!(!txn.joins_writes());
        three_updates(&db, txn, async |txn| txn.commit().await.unwrap()).await;
    }
}
