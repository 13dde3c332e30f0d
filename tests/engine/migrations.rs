//! Migrations applied at start, on SQLite and on the PostgreSQL server of this machine (a
//! database of its own per test, dropped afterwards), a whole run on PostgreSQL, and the
//! StatusRecorder's batches on both.

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

/// The StatusRecorder's batches (one transaction, its transitions as one string of statements
/// on SQLite, one by one on PostgreSQL) on both databases: updates sent back to back go
/// together, and a refused one among them fails alone, the others applied.
#[actix::test]
async fn status_updates_written_together_on_sqlite_and_postgresql() {
    let database = TestDatabase::create().await;
    let world = World::new();
    for url in [database.url(), world.db_url()] {
        let settings = persona_ingest::config::DatabaseSettings {
            url: url.clone(),
            max_connections: 4,
        };
        let db = persona_ingest::db::connect(&settings).await.unwrap();
        updates_together_and_a_refusal_alone(db)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

async fn updates_together_and_a_refusal_alone(
    db: sea_orm::DatabaseConnection,
) -> Result<(), String> {
    use actix::Actor;
    use persona_ingest::actors::status_recorder::{
        RecordStatus, RecorderCounters, StatusRecorder, StatusUpdate,
    };
    use persona_ingest::jobs::JobRef;
    use persona_ingest::PersonaId;

    let (events, _) = tokio::sync::broadcast::channel(64);
    let recorder = StatusRecorder::new(db.clone(), events).start();
    let job = |kind| JobRef {
        id: uuid::Uuid::new_v4(),
        kind,
        task_id: Some("t".into()),
    };
    let (works, quotes) = (job(Kind::Works), job(Kind::Quotes));
    let persona = PersonaId::parse("p").unwrap();
    let started = |job: &JobRef| StatusUpdate::JobStarted {
        job_id: job.id,
        rerun: false,
    };
    let completed = |job: &JobRef, total_vectors| StatusUpdate::JobCompleted {
        job_id: job.id,
        total_vectors,
        warning: None,
        counts: Default::default(),
        manifest: None,
    };
    // The first goes alone, the rest wait for it and go together; the quotes job completing
    // before it started is refused in the middle of the batch that holds the rest.
    let updates = [
        StatusUpdate::BeginRun {
            persona: persona.clone(),
            jobs: vec![works.clone(), quotes.clone()],
        },
        started(&works),
        completed(&quotes, 3),
        completed(&works, 7),
        started(&quotes),
    ];
    let answers: Vec<_> = updates
        .into_iter()
        .map(|u| recorder.send(RecordStatus(u)))
        .collect();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap());
    }
    let refused = results[2].as_ref().err().map(ToString::to_string);
    if !refused.is_some_and(|e| e.contains("only a processing job completes")) {
        return Err(format!("the early completion was not refused: {results:?}"));
    }
    if results
        .iter()
        .enumerate()
        .any(|(i, r)| i != 2 && r.is_err())
    {
        return Err(format!("{results:?}"));
    }
    // Then a batch without a refusal (behind another run's start, alone): one transaction.
    let ended = [
        StatusUpdate::BeginRun {
            persona: PersonaId::parse("q").unwrap(),
            jobs: vec![job(Kind::Profile)],
        },
        completed(&quotes, 3),
        StatusUpdate::FinishRun {
            persona: persona.clone(),
            error: None,
        },
    ];
    let answers: Vec<_> = ended
        .into_iter()
        .map(|u| recorder.send(RecordStatus(u)))
        .collect();
    for answer in answers {
        answer.await.unwrap().map_err(|e| e.to_string())?;
    }
    let again = recorder
        .send(RecordStatus(StatusUpdate::BeginRun {
            persona: persona.clone(),
            jobs: vec![works.clone(), quotes.clone()],
        }))
        .await
        .unwrap()
        .map_err(|e| e.to_string())?;
    let mut completed_before = again.completed_before.clone();
    completed_before.sort();
    let mut expected = vec![(works.id, 7), (quotes.id, 3)];
    expected.sort();
    if completed_before != expected {
        return Err(format!("completed before: {completed_before:?}"));
    }
    let counters: RecorderCounters = persona_ingest::testkit::observe(&recorder).await;
    // How the updates fall into batches depends on when the runs' early reads come back (the
    // updates answered by them wait for the next that somebody waits for): at least one batch
    // went together, and one update was refused.
    if counters.batches < 1 || counters.refused != 1 {
        return Err(format!("{counters:?}"));
    }
    let rows = latest_jobs(&db, "p").await;
    if !rows.iter().all(|r| r.status == JobStatus::Completed) {
        return Err(format!("{rows:?}"));
    }
    Ok(())
}
