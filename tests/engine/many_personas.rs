//! Many personas at once on SQLite: the StatusRecorder being the one writer, no run sees
//! "database is locked" and every row ends right.

use persona_ingest::actors::orchestrator::RunRequest;
use persona_ingest::{JobStatus, Kind, PersonaStatus};

use crate::common::*;

#[actix::test]
async fn twenty_personas_at_once_on_sqlite() {
    let world = World::new();
    let novel =
        std::fs::read_to_string(corpus_root().join("data/jane-austen/works/persuasion_pg105.txt"))
            .unwrap();
    let quotes =
        std::fs::read_to_string(corpus_root().join("data/mark-twain/quotes/all_quotes.jsonl"))
            .unwrap();
    let profile =
        std::fs::read_to_string(corpus_root().join("personas/mark-twain/profile.md")).unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("persona-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        // Each persona its own slice of the novel, so the personas differ in size.
        let start = novel.char_indices().nth(i * 9_000).unwrap().0;
        let end = novel
            .char_indices()
            .nth(i * 9_000 + 40_000 + i * 1_000)
            .unwrap()
            .0;
        world.write(&format!("data/{id}/works/slice.txt"), &novel[start..end]);
        world.write(&format!("data/{id}/quotes/all_quotes.jsonl"), &quotes);
        world.write(&format!("personas/{id}/profile.md"), &profile);
    }
    let engine = world
        .engine(&[
            ("worker.concurrency", "20"),
            ("database.max_connections", "4"),
        ])
        .await;
    let runs = ids
        .iter()
        .map(|id| engine.run(RunRequest::new(persona(id), &Kind::ALL)));
    let outcomes = futures::future::join_all(runs).await;
    for outcome in outcomes {
        let outcome = outcome.unwrap();
        assert!(outcome.succeeded(), "{outcome:#?}");
    }
    for id in &ids {
        let persona_row = persona_row(&engine.db, id).await;
        assert_eq!(persona_row.status, PersonaStatus::Active);
        let rows = latest_jobs(&engine.db, id).await;
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(
                (row.status, row.progress),
                (JobStatus::Completed, 100),
                "{row:#?}"
            );
            assert!(row.error_message.is_none());
        }
        assert_eq!(job_of(&rows, Kind::Quotes).total_vectors, 23);
        assert_store_matches_rows(&engine, id).await;
    }
    assert_nothing_processing(&engine.db).await;
}
