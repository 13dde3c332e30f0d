//! The whole engine wired, on stand-ins (static sources, scripted provider, memory store,
//! in-memory SQLite): supervision across actors.

use super::*;
use crate::config::ConfigInputs;
use crate::testkit::{MemoryStore, ScriptedProvider, StaticSources};
use crate::{JobStatus, PersonaStatus};

async fn engine(sources: StaticSources) -> Engine {
    let settings = Settings::load(
        &ConfigInputs::default()
            .with_override("database.url", "sqlite::memory:")
            .with_override("database.max_connections", "1"),
    )
    .unwrap();
    let db = db::connect(&settings.database).await.unwrap();
    Engine::start_with(
        settings,
        db,
        Arc::new(MemoryStore::new(100)),
        Arc::new(ScriptedProvider::new(4)),
        Arc::new(sources),
        None,
    )
}

#[actix::test]
async fn a_panicking_ingestor_fails_its_job_and_persona_and_the_engine_serves_on() {
    let mut sources =
        StaticSources::with(&[(Kind::Works, 50), (Kind::Quotes, 5), (Kind::Profile, 2)]);
    sources.panics.insert(Kind::Works, 3);
    let engine = engine(sources).await;
    let p = PersonaId::parse("p").unwrap();
    let outcome = engine.ingest(p.clone(), &Kind::ALL).await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("failed: works (reader panicked: scripted panic at chunk 3; 3 record(s) written before the failure, 3 in p_works now)")
    );
    let jobs = crate::jobs::jobs_of_persona(&engine.db, "p").await.unwrap();
    for job in &jobs {
        let expected = if job.kind == Kind::Works {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        };
        assert_eq!(job.status, expected, "{job:?}");
    }
    let works = jobs.iter().find(|j| j.kind == Kind::Works).unwrap();
    assert_eq!(
        works.error_message.as_deref(),
        Some("reader panicked: scripted panic at chunk 3; 3 record(s) written before the failure, 3 in p_works now")
    );
    let persona = crate::jobs::persona(&engine.db, "p")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(persona.status, PersonaStatus::Failed);

    let outcome = engine
        .ingest(p, &[Kind::Quotes, Kind::Profile])
        .await
        .unwrap();
    assert_eq!(
        outcome.status,
        PersonaStatus::Active,
        "the engine serves the next request"
    );
}
