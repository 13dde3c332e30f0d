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
