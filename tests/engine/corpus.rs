//! Real corpora from `shared/corpus`, end to end on the embedded defaults.

use persona_ingest::{JobStatus, Kind, PersonaStatus};

use crate::common::*;

#[actix::test]
async fn a_real_corpus_is_ingested_whole_and_a_rerun_changes_no_count() {
    let world = World::reading(corpus_root());
    let engine = world.engine(&[]).await;

    for persona_id in ["jane-austen", "many-voices"] {
        let outcome = engine
            .ingest(persona(persona_id), &Kind::ALL)
            .await
            .unwrap();
        assert!(outcome.succeeded(), "{outcome:#?}");
    }
    let persona_row = persona_row(&engine.db, "jane-austen").await;
    assert_eq!(persona_row.status, PersonaStatus::Active);
    assert_eq!(persona_row.error_message, None);

    let rows = latest_jobs(&engine.db, "jane-austen").await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.status, JobStatus::Completed, "{row:#?}");
        assert_eq!(row.progress, 100);
        assert_eq!(row.attempts, 1);
        assert!(row.total_vectors > 0, "{row:#?}");
        assert!(row.started_at.is_some() && row.completed_at.is_some());
        assert_eq!(row.error_message, None);
    }
    // 4.2 MB of novels in chunks of at most 1600 bytes.
    assert!(job_of(&rows, Kind::Works).total_vectors > 2600);
    assert_eq!(job_of(&rows, Kind::Quotes).total_vectors, 3);
    let many_voices = latest_jobs(&engine.db, "many-voices").await;
    assert_eq!(job_of(&many_voices, Kind::Quotes).total_vectors, 3782);
    assert_store_matches_rows(&engine, "jane-austen").await;
    assert_store_matches_rows(&engine, "many-voices").await;

    let before: Vec<u64> = collection_counts(&engine, "jane-austen").await;
    let outcome = engine
        .ingest(persona("jane-austen"), &Kind::ALL)
        .await
        .unwrap();
    assert!(outcome.succeeded());
    assert_eq!(
        collection_counts(&engine, "jane-austen").await,
        before,
        "ids are deterministic"
    );
    let rerun = latest_jobs(&engine.db, "jane-austen").await;
    for (first, second) in rows.iter().zip(&rerun) {
        assert_ne!(first.id, second.id, "a new run has new job rows");
        assert_eq!(first.total_vectors, second.total_vectors);
    }
    assert_store_matches_rows(&engine, "jane-austen").await;
    assert_nothing_processing(&engine.db).await;
}

async fn collection_counts(
    engine: &persona_ingest::pipeline::Engine,
    persona_id: &str,
) -> Vec<u64> {
    let mut counts = Vec::new();
    for kind in Kind::ALL {
        counts.push(store_count(engine, &engine.collection_name(&persona(persona_id), kind)).await);
    }
    counts
}

/// An engine on `world` that has ingested the example persona.
async fn ingested_example(world: &World) -> persona_ingest::pipeline::Engine {
    let engine = world.engine(&[]).await;
    let outcome = engine
        .ingest(persona("twain-sampler"), &Kind::ALL)
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{outcome:#?}");
    engine
}

#[actix::test]
async fn records_carry_their_provenance() {
    let world = World::reading(examples_root());
    let engine = ingested_example(&world).await;

    let hits = nearest(&engine, "twain-sampler_works", "steamboat a-comin", 1).await;
    let hit = &hits[0];
    assert!(hit.document.contains("S-t-e-a-m-boat a-comin"), "{hit:#?}");
    insta::assert_yaml_snapshot!(hit.metadata, { ".content_hash" => "[hash]" });

    // The Gutenberg header and footer of the Tom Sawyer chapter never reach the store.
    for hit in nearest(
        &engine,
        "twain-sampler_works",
        "Project Gutenberg License eBook",
        20,
    )
    .await
    {
        assert!(
            !hit.document.contains("Project Gutenberg"),
            "{}",
            hit.document
        );
    }
}

#[actix::test]
async fn job_rows_read_as_the_web_app_expects() {
    let world = World::reading(examples_root());
    let engine = ingested_example(&world).await;
    let rows = latest_jobs(&engine.db, "twain-sampler").await;
    insta::assert_yaml_snapshot!(rows, {
        "[].id" => "[uuid]",
        "[].created_at" => "[timestamp]",
        "[].started_at" => "[timestamp]",
        "[].completed_at" => "[timestamp]",
    });
}

#[actix::test]
async fn records_of_text_that_is_gone_are_removed_on_the_next_run() {
    let world = World::new();
    let long: String = (0..200)
        .map(|i| format!("Paragraph {i} of a long story.\n\n"))
        .collect();
    world.write("data/p/works/story.txt", &long);
    world.write("data/p/works/gone.txt", "A work that will be withdrawn.\n");
    let engine = world
        .engine(&[
            ("chunking.target_tokens", "64"),
            ("chunking.overlap_tokens", "8"),
        ])
        .await;
    assert!(engine
        .ingest(persona("p"), &[Kind::Works])
        .await
        .unwrap()
        .succeeded());
    let first = job_of(&latest_jobs(&engine.db, "p").await, Kind::Works).total_vectors;

    world.write(
        "data/p/works/story.txt",
        "Paragraph 0 of a short story now.\n",
    );
    std::fs::remove_file(world.data_root.join("data/p/works/gone.txt")).unwrap();
    assert!(engine
        .ingest(persona("p"), &[Kind::Works])
        .await
        .unwrap()
        .succeeded());
    let rows = latest_jobs(&engine.db, "p").await;
    assert!(first > 10);
    assert_eq!(job_of(&rows, Kind::Works).total_vectors, 1);
    assert_store_matches_rows(&engine, "p").await;
}
