//! Migrations applied at start, on SQLite and on the PostgreSQL server of this machine (a
//! database of its own per test, dropped afterwards), and a whole run on PostgreSQL.

use migration::{Migrator, MigratorTrait};
use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::pipeline::Engine;
use persona_ingest::{JobStatus, Kind};
use sea_orm::{ConnectionTrait, Database};

use crate::common::*;

/// The PostgreSQL server to create test databases on.
fn postgres_server() -> String {
    std::env::var("PERSONA_INGEST_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own, dropped when the guard goes.
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> Self {
        let name = format!("persona_ingest_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(format!("{}/postgres", postgres_server()))
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", postgres_server(), self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let url = format!("{}/postgres", postgres_server());
        // Drop runs outside async code: a runtime of its own, on a thread of its own.
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                if let Ok(admin) = Database::connect(url).await {
                    let _ = admin.execute_unprepared(&sql).await;
                }
            })
        })
        .join()
        .unwrap();
    }
}

#[actix::test]
async fn migrations_apply_once_on_sqlite() {
    let world = World::new();
    let settings = world.settings(&[]);
    let db = persona_ingest::db::connect(&settings.database)
        .await
        .unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        0
    );
    let applied = Migrator::get_applied_migrations(&db).await.unwrap().len();
    let db = persona_ingest::db::connect(&settings.database)
        .await
        .unwrap();
    assert_eq!(
        Migrator::get_applied_migrations(&db).await.unwrap().len(),
        applied,
        "idempotent"
    );
    Migrator::down(&db, None).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
}

#[actix::test]
async fn a_whole_run_on_postgresql() {
    let database = TestDatabase::create().await;
    let world = World::reading(examples_root());
    let settings = Settings::load(
        &ConfigInputs::default()
            .with_override("data_root", world.data_root.display().to_string())
            .with_override("database.url", database.url())
            .with_override("store.path", world.store_path().display().to_string()),
    )
    .unwrap();
    let engine = Engine::start(settings.clone()).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&engine.db)
            .await
            .unwrap()
            .len(),
        0
    );
    let outcome = engine
        .ingest(persona("twain-sampler"), &Kind::ALL)
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{outcome:#?}");
    let rows = latest_jobs(&engine.db, "twain-sampler").await;
    assert!(rows
        .iter()
        .all(|r| r.status == JobStatus::Completed && r.progress == 100));
    assert_store_matches_rows(&engine, "twain-sampler").await;

    // Applying again at the next start changes nothing.
    let again = persona_ingest::db::connect(&settings.database)
        .await
        .unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&again)
            .await
            .unwrap()
            .len(),
        0
    );
    Migrator::down(&again, None).await.unwrap();
    Migrator::up(&again, None).await.unwrap();
}

/// The web app's side (`enqueue`, `POST .../ingest`) making job rows on a SQLite file that
/// another process writes all the time, as a running daemon's StatusRecorder does: none is
/// refused with "database is locked".
#[tokio::test]
async fn job_rows_are_made_while_another_connection_writes_the_same_sqlite_file() {
    let world = World::new();
    let settings = world.settings(&[]);
    let db = persona_ingest::db::connect(&settings.database)
        .await
        .unwrap();
    let other = persona_ingest::db::connect_only(&settings.database)
        .await
        .unwrap();
    other
        .execute_unprepared("CREATE TABLE churn (n INTEGER)")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                other
                    .execute_unprepared("INSERT INTO churn VALUES (1)")
                    .await
                    .unwrap();
            }
        })
    };
    for i in 0..60 {
        let persona = persona(&format!("p{i}"));
        let jobs: Vec<persona_ingest::jobs::JobRef> = Kind::ALL
            .iter()
            .map(|kind| persona_ingest::jobs::JobRef {
                id: uuid::Uuid::new_v4(),
                kind: *kind,
                task_id: None,
            })
            .collect();
        persona_ingest::jobs::create_pending(&db, &persona, &jobs)
            .await
            .unwrap_or_else(|e| panic!("persona {i}: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let rows = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM ingestion_jobs",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.try_get::<i64>("", "n").unwrap(), 180);
}
