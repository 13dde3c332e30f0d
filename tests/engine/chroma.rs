//! The Chroma store against a real Chroma server (a server of each test's own).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use persona_ingest::actors::store_writer::{StoreWriter, WriterLimits};
use persona_ingest::actors::window::{Window, WriteWindow};
use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::record::Metadata;
use persona_ingest::record::Record;
use persona_ingest::store::{ChromaStore, CollectionSpec, VectorStore};
use persona_ingest::{JobStatus, Kind};

use crate::chroma_server::ChromaServer;

pub const PERSONA: &str = "twain-sampler";

/// Writes `records` through `writer` as the data path does (one window); answers how many it
/// wrote, or why not.
pub async fn write(
    writer: &Addr<StoreWriter>,
    collection: CollectionSpec,
    records: Vec<Record>,
) -> Result<usize, String> {
    let (window, mut written) = Window::of_records(collection, records, writer.clone().recipient());
    writer.do_send(WriteWindow(window));
    let settled = written.recv().await.expect("every window is settled");
    settled
        .result
        .map(|r| r.records)
        .map_err(|e| format!("{e:?}"))
}
use crate::common::*;

pub async fn engine_on(
    world: &World,
    server: &ChromaServer,
    extra: &[(&str, &str)],
) -> persona_ingest::pipeline::Engine {
    let url = server.url();
    let mut overrides = vec![("store.kind", "chroma"), ("store.url", url.as_str())];
    overrides.extend_from_slice(extra);
    world.engine(&overrides).await
}

pub fn store(url: &str) -> ChromaStore {
    let settings = Settings::load(
        &ConfigInputs::default()
            .with_override("store.kind", "chroma")
            .with_override("store.url", url),
    )
    .unwrap();
    ChromaStore::new(&settings.store).unwrap()
}

#[actix::test]
async fn a_persona_ingested_into_chroma_holds_total_vectors_and_a_rerun_changes_nothing() {
    let server = ChromaServer::start().await;
    let world = World::reading(examples_root());
    let engine = engine_on(&world, &server, &[]).await;
    assert!(engine
        .ingest(persona("twain-sampler"), &Kind::ALL)
        .await
        .unwrap()
        .succeeded());
    assert_store_matches_rows(&engine, "twain-sampler").await;
    let counts = |rows: &[entities::ingestion_job::Model]| {
        rows.iter().map(|r| r.total_vectors).collect::<Vec<_>>()
    };
    let first = counts(&latest_jobs(&engine.db, "twain-sampler").await);
    assert_eq!(first, [20, 12, 4]);

    assert!(engine
        .ingest(persona("twain-sampler"), &Kind::ALL)
        .await
        .unwrap()
        .succeeded());
    assert_eq!(
        counts(&latest_jobs(&engine.db, "twain-sampler").await),
        first
    );
    assert_store_matches_rows(&engine, "twain-sampler").await;

    // Records keep their metadata (quote tags flattened) and are found by cosine similarity.
    let hits = nearest(
        &engine,
        "twain-sampler_quotes",
        "When in doubt, tell the truth.",
        1,
    )
    .await;
    assert_eq!(hits[0].document, "When in doubt, tell the truth.");
    assert!(hits[0].score > 0.99, "{}", hits[0].score);
    assert_eq!(hits[0].metadata["tags"].to_string(), "Famous Quotes");
}

#[actix::test]
async fn a_batch_over_the_servers_max_batch_size_is_split() {
    let server = ChromaServer::start().await;
    let store: Arc<dyn VectorStore> = Arc::new(store(&server.url()));
    let max = store.max_batch_size().await.unwrap();
    assert_eq!(
        max, 5461,
        "the default server's limit, as the server reports it"
    );
    let writer = StoreWriter::new(store.clone(), WriterLimits::default()).start();
    let spec = CollectionSpec {
        name: "big_works".into(),
        embedding_model: "m".into(),
        dimension: 4,
    };
    let records: Vec<Record> = (0..max + 600)
        .map(|i| Record {
            id: format!("works:x:{i}"),
            document: format!("document {i}"),
            metadata: Metadata::new(),
            embedding: vec![1.0, i as f32, 0.0, 0.5],
        })
        .collect();
    let written = write(&writer, spec.clone(), records).await.unwrap();
    assert_eq!(written, max + 600);
    let info = store.collection("big_works").await.unwrap().unwrap();
    assert_eq!(store.count(&info).await.unwrap(), (max + 600) as u64);
}

#[actix::test]
async fn another_dimension_or_model_is_refused_naming_both() {
    let server = ChromaServer::start().await;
    let store = store(&server.url());
    let spec = |model: &str, dimension| CollectionSpec {
        name: "p_works".into(),
        embedding_model: model.into(),
        dimension,
    };
    store
        .ensure_collection(&spec("local-hash-v1", 384))
        .await
        .unwrap();
    let error = store
        .ensure_collection(&spec("text-embedding-3-small", 1536))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "collection p_works holds local-hash-v1 vectors of dimension 384; refusing to write text-embedding-3-small vectors of dimension 1536 into it"
    );
}

/// Starts ingesting `persona`'s works and returns once its first records are in Chroma, with
/// the run's outcome to come.
async fn ingest_works_until_records_arrive(
    engine: &persona_ingest::pipeline::Engine,
    server: &ChromaServer,
    persona_id: &str,
) -> tokio::task::JoinHandle<persona_ingest::actors::orchestrator::RunOutcome> {
    let request =
        persona_ingest::actors::orchestrator::RunRequest::new(persona(persona_id), &[Kind::Works]);
    let sent = engine
        .supervisor
        .send(persona_ingest::actors::supervisor::IngestPersona(request));
    let run = actix::spawn(async move { sent.await.unwrap() });
    let watcher = store(&server.url());
    let collection = format!("{persona_id}_works");
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no record reached {collection} within a minute"
        );
        if let Ok(Some(info)) = watcher.collection(&collection).await {
            if watcher.count(&info).await.unwrap_or(0) > 0 {
                return run;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn chroma_dying_mid_run_fails_the_job_clearly_and_nothing_is_left_processing() {
    let mut server = ChromaServer::start().await;
    let world = World::reading(corpus_root());
    let engine = engine_on(&world, &server, &[("store.max_retries", "2")]).await;
    let run = ingest_works_until_records_arrive(&engine, &server, "jane-austen").await;
    server.stop();
    let outcome = run.await.unwrap();
    assert!(!outcome.succeeded());
    let works = job_of(&latest_jobs(&engine.db, "jane-austen").await, Kind::Works).clone();
    assert_eq!(works.status, JobStatus::Failed);
    let error = works.error_message.unwrap();
    assert!(
        error.starts_with("writing to jane-austen_works: chroma POST")
            && error.contains("gave up after"),
        "{error}"
    );
    assert_nothing_processing(&engine.db).await;
}

#[actix::test]
async fn chroma_back_within_the_retry_budget_lets_the_run_complete() {
    let mut server = ChromaServer::start().await;
    let world = World::reading(corpus_root());
    let engine = engine_on(&world, &server, &[]).await;
    let run = ingest_works_until_records_arrive(&engine, &server, "mihai-eminescu").await;
    server.stop();
    server.run().await;
    let outcome = run.await.unwrap();
    assert!(outcome.succeeded(), "{outcome:#?}");
    assert_store_matches_rows(&engine, "mihai-eminescu").await;
}

/// Quote fields Chroma refuses as metadata keys (empty, a leading `$` or `#`), a field named like
/// the engine's and a duplicated key: the job completes on the real server with every value
/// under a name it takes, and the duplicated key is a bad record named by its line.
#[actix::test]
async fn quote_fields_chroma_refuses_are_renamed_when_read_and_every_value_survives() {
    let server = ChromaServer::start().await;
    let world = World::new();
    world.write("personas/f/profile.md", "# F\n\nA writer.\n");
    world.write(
        "data/f/quotes/all_quotes.jsonl",
        concat!(
            r##"{"text": "Weighed.", "$weight": 2, "#topic": "scales", "": "blank", "source": "a book", "quote_source": "a letter", "id": 18446744073709551615}"##,
            "\n",
            r#"{"text": "Twice.", "year": 1901, "year": 1902}"#,
            "\n",
        ),
    );
    let engine = engine_on(&world, &server, &[("quotes.on_bad_record", "skip")]).await;
    let outcome = engine.ingest(persona("f"), &[Kind::Quotes]).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let quotes = outcome.jobs[0].result.as_ref().unwrap();
    assert_eq!(quotes.vectors, 1);
    let warning = quotes.warning.as_deref().unwrap();
    assert!(
        warning.contains("data/f/quotes/all_quotes.jsonl:2: malformed JSON: duplicated key `year`"),
        "{warning}"
    );
    let found = engine
        .store
        .query(
            &engine.store.collection("f_quotes").await.unwrap().unwrap(),
            &engine
                .provider
                .embed(vec!["Weighed.".to_owned()])
                .await
                .unwrap()[0],
            1,
        )
        .await
        .unwrap();
    let metadata = &found[0].metadata;
    for (key, value) in [
        ("quote_$weight", "2"),
        ("quote_#topic", "\"scales\""),
        ("quote_", "\"blank\""),
        ("quote_source", "\"a letter\""),
        ("quote_source_2", "\"a book\""),
        ("id", "\"18446744073709551615\""),
    ] {
        let got = metadata.get(key).map(|v| serde_json::to_string(v).unwrap());
        assert_eq!(got.as_deref(), Some(value), "{key} in {metadata:?}");
    }
}
