//! Incremental re-ingestion end to end: two of Mark Twain's books through an OpenAI-compatible
//! stand-in into the embedded store; re-run unchanged, with a paragraph appended, with a book
//! deleted, and with other chunking settings. Calls are counted at the stand-in, writes at the
//! writer, and every row is checked against the store.

use persona_ingest::actors::store_writer::WriterCounters;
use persona_ingest::pipeline::Engine;
use persona_ingest::{testkit, Kind};

use crate::common::*;
use crate::servers::{Profile, StandIn};

const TOM: &str = "data/mark-twain/works/the-adventures-of-tom-sawyer_pg74.txt";
const PRINCE: &str = "data/mark-twain/works/the-prince-and-the-pauper_pg1837.txt";

async fn engine_on(world: &World, stand_in: &StandIn, extra: &[(&str, &str)]) -> Engine {
    let mut settings: Vec<(&str, String)> = stand_in.settings();
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    world.engine(&pairs).await
}

/// Ingests the works; answers their job row, the embedding calls and the upserts it took.
async fn run(engine: &Engine, stand_in: &StandIn) -> (entities::ingestion_job::Model, usize, u64) {
    let calls = stand_in.embedding_requests().await.len();
    let upserts = testkit::observe::<_, WriterCounters>(&engine.writer)
        .await
        .upserts;
    let outcome = engine
        .ingest(persona("mark-twain"), &[Kind::Works])
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    assert_store_matches_rows(engine, "mark-twain").await;
    let row = job_of(&latest_jobs(&engine.db, "mark-twain").await, Kind::Works).clone();
    let after: WriterCounters = testkit::observe(&engine.writer).await;
    (
        row,
        stand_in.embedding_requests().await.len() - calls,
        after.upserts - upserts,
    )
}

#[actix::test]
async fn only_what_changed_is_embedded_and_written_again() {
    let world = World::new();
    world.copy_from_corpus(TOM, TOM);
    world.copy_from_corpus(PRINCE, PRINCE);
    let stand_in = Profile::OpenAi.start().await;
    let engine = engine_on(&world, &stand_in, &[]).await;

    let (first, calls, _) = run(&engine, &stand_in).await;
    assert!(calls > 0);
    assert_eq!((first.files_read, first.files_skipped), (2, 0));
    assert_eq!(first.chunks_embedded, first.total_vectors);
    assert!(first.total_vectors > 300, "{}", first.total_vectors);
    assert!(first.tokens_embedded > 200_000, "{}", first.tokens_embedded);
    // As the provider bills them (its `usage`), but for the start-up probe's few.
    let billed = persona_ingest::metrics::METRICS.provider_tokens.get();
    let counted = first.tokens_embedded as u64;
    assert!(
        billed >= counted && billed - counted < 10,
        "billed {billed}, counted {counted}"
    );

    // Nothing changed: nothing embedded, nothing written.
    let (same, calls, upserts) = run(&engine, &stand_in).await;
    assert_eq!((calls, upserts), (0, 0));
    assert_eq!((same.files_read, same.files_skipped), (0, 2));
    assert_eq!(
        (
            same.chunks_embedded,
            same.chunks_unchanged,
            same.chunks_deleted
        ),
        (0, first.total_vectors, 0)
    );
    assert_eq!(same.total_vectors, first.total_vectors);

    // A paragraph appended to one book (at the end of its text, before Project Gutenberg's
    // closing matter, which is not ingested): its last chunks only.
    let added = "A raft drifted past the lamps of the ferry landing while the watchman slept.";
    let tom = world.data_root.join(TOM);
    let text = std::fs::read_to_string(&tom).unwrap();
    let end = text
        .find("End of the Project Gutenberg")
        .expect("a Gutenberg text");
    let text = format!("{}{added}\r\n\r\n{}", &text[..end], &text[end..]);
    std::fs::write(&tom, text).unwrap();
    let (appended, calls, _) = run(&engine, &stand_in).await;
    assert_eq!((appended.files_read, appended.files_skipped), (1, 1));
    assert!(
        (1..=3).contains(&appended.chunks_embedded),
        "{} chunks embedded for one paragraph",
        appended.chunks_embedded
    );
    assert!((1..=3).contains(&calls), "{calls} calls");
    let holding = records_of(&engine)
        .await
        .into_iter()
        .filter(|r| r.document.contains(added))
        .count();
    assert!(holding >= 1, "the paragraph is stored");

    // A book deleted: exactly its records gone, no call.
    let prince_records = store_records_of(&engine, PRINCE).await;
    assert!(prince_records > 100);
    std::fs::remove_file(world.data_root.join(PRINCE)).unwrap();
    let (deleted, calls, _) = run(&engine, &stand_in).await;
    assert_eq!(calls, 0);
    assert_eq!(deleted.chunks_deleted, prince_records);
    assert_eq!(
        deleted.total_vectors,
        appended.total_vectors - prince_records
    );
    assert_eq!(store_records_of(&engine, PRINCE).await, 0);
    drop(engine);

    // Other chunking settings: every chunk made again; embedded again but where a chunk of the
    // same number holds the same text as before (a short chapter fits either size).
    let engine = engine_on(&world, &stand_in, &[("chunking.target_tokens", "300")]).await;
    let (rechunked, calls, _) = run(&engine, &stand_in).await;
    assert!(calls > 0);
    assert_eq!((rechunked.files_read, rechunked.files_skipped), (1, 0));
    assert_eq!(
        rechunked.chunks_embedded + rechunked.chunks_unchanged,
        rechunked.total_vectors
    );
    assert!(
        rechunked.chunks_embedded > rechunked.total_vectors * 3 / 4,
        "{rechunked:?}"
    );
}

#[actix::test]
async fn force_embeds_everything_again() {
    let world = World::new();
    world.copy_from_corpus(TOM, TOM);
    let stand_in = Profile::OpenAi.start().await;
    let engine = engine_on(&world, &stand_in, &[]).await;
    let (first, _, _) = run(&engine, &stand_in).await;
    let calls = stand_in.embedding_requests().await.len();
    let mut forced = persona_ingest::actors::orchestrator::RunRequest::new(
        persona("mark-twain"),
        &[Kind::Works],
    );
    forced.force = true;
    assert!(engine.run(forced).await.unwrap().succeeded());
    let row = job_of(&latest_jobs(&engine.db, "mark-twain").await, Kind::Works).clone();
    assert_eq!(row.chunks_embedded, first.total_vectors);
    assert!(stand_in.embedding_requests().await.len() > calls);
}

/// How many records of the works collection came from `source`.
async fn store_records_of(engine: &Engine, source: &str) -> i64 {
    let prefix = format!("works:{source}:");
    records_of(engine)
        .await
        .iter()
        .filter(|r| r.id.starts_with(&prefix))
        .count() as i64
}

/// Every record of the works collection.
async fn records_of(engine: &Engine) -> Vec<persona_ingest::record::Record> {
    let info = engine
        .store
        .collection("mark-twain_works")
        .await
        .unwrap()
        .unwrap();
    let mut records = Vec::new();
    loop {
        let page = engine
            .store
            .records(&info, records.len(), 1000)
            .await
            .unwrap();
        let last = page.len() < 1000;
        records.extend(page);
        if last {
            return records;
        }
    }
}

/// `ingest --dry-run` through the command line: the plan of a first run, priced, with no call
/// and no job row; the run itself does what the plan said; then the plan of an unchanged re-run.
#[actix::test]
async fn a_dry_run_plans_what_the_run_then_does_without_calling_or_writing() {
    let world = World::new();
    world.copy_from_corpus(TOM, TOM);
    let stand_in = Profile::OpenAi.start().await;
    let db = world.db_url();
    let store = world.store_path().display().to_string();
    let env: Vec<(String, String)> = vec![
        ("ENGINE__EMBEDDING__PROVIDER".into(), "openai".into()),
        (
            "ENGINE__EMBEDDING__BASE_URL".into(),
            stand_in.base_url.clone(),
        ),
        (
            "ENGINE__EMBEDDING__MODEL".into(),
            Profile::OpenAi.model().into(),
        ),
        (
            "ENGINE__EMBEDDING__PRICE_PER_MILLION_TOKENS".into(),
            "0.02".into(),
        ),
        ("DATABASE_URL".into(), db),
        ("ENGINE__STORE__PATH".into(), store),
    ];
    let root = world.data_root.display().to_string();
    let cli = |extra: &'static [&'static str]| {
        let (dir, env, root) = (world.dir.path().to_owned(), env.clone(), root.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec!["ingest", "mark-twain", "--only", "works", "--json"];
                args.extend(["--data-root", &root]);
                args.extend(extra);
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let out = crate::cli::persona_ingest(&dir, &args, &env);
                assert!(out.status.success(), "{}", crate::cli::text(&out.stderr));
                serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
            })
            .await
            .unwrap()
        }
    };

    let plan = cli(&["--dry-run"]).await;
    let planned = &plan["jobs"][0];
    assert_eq!(
        (&planned["files_read"], &planned["files_skipped"]),
        (&1.into(), &0.into())
    );
    let chunks = planned["chunks_embedded"].as_u64().unwrap();
    let tokens = planned["tokens_embedded"].as_u64().unwrap();
    assert!(chunks > 100 && tokens > 100_000, "{plan}");
    let cost = plan["cost"].as_f64().unwrap();
    assert!((cost - tokens as f64 * 0.02 / 1e6).abs() < 1e-9, "{plan}");
    assert_eq!(
        stand_in.embedding_requests().await.len(),
        0,
        "no provider call"
    );
    let engine = world.engine(&[]).await;
    assert!(
        latest_jobs(&engine.db, "mark-twain").await.is_empty(),
        "no job row"
    );

    let ran = cli(&[]).await;
    let job = &ran["personas"][0]["jobs"][0];
    assert_eq!(job["chunks_embedded"].as_u64(), Some(chunks), "as planned");
    assert_eq!(job["tokens_embedded"].as_u64(), Some(tokens), "as planned");

    let plan = cli(&["--dry-run"]).await;
    let planned = &plan["jobs"][0];
    assert_eq!(
        (
            &planned["files_skipped"],
            &planned["chunks_embedded"],
            &planned["chunks_unchanged"]
        ),
        (&1.into(), &0.into(), &chunks.into())
    );
    assert_eq!(plan["cost"].as_f64(), Some(0.0));
}

/// A run that fails (here refused by the collection, for another vector size) after it started
/// reading: its files' rows are forgotten, and the next good run compares them with what the
/// store holds instead of embedding them again.
#[actix::test]
async fn after_a_failed_run_only_what_the_store_lacks_is_embedded() {
    let world = World::new();
    world.copy_from_corpus(TOM, TOM);
    world.copy_from_corpus(PRINCE, PRINCE);
    let engine = world.engine(&[]).await;
    let first = engine
        .ingest(persona("mark-twain"), &[Kind::Works])
        .await
        .unwrap();
    assert!(first.succeeded());
    let total = job_of(&latest_jobs(&engine.db, "mark-twain").await, Kind::Works).total_vectors;
    drop(engine);

    let refused = world.engine(&[("embedding.dimension", "64")]).await;
    let failed = refused
        .ingest(persona("mark-twain"), &[Kind::Works])
        .await
        .unwrap();
    assert!(!failed.succeeded());
    drop(refused);

    let engine = world.engine(&[]).await;
    let again = engine
        .ingest(persona("mark-twain"), &[Kind::Works])
        .await
        .unwrap();
    assert!(again.succeeded(), "{:?}", again.error);
    let row = job_of(&latest_jobs(&engine.db, "mark-twain").await, Kind::Works).clone();
    assert_eq!(
        (row.chunks_embedded, row.chunks_unchanged, row.total_vectors),
        (0, total, total),
        "{row:?}"
    );
    assert_store_matches_rows(&engine, "mark-twain").await;
}

/// An unchanged re-run needs no embedding server: one that is down (and whose vectors' size is
/// known) is no reason to fail a run with nothing to embed.
#[actix::test]
async fn an_unchanged_rerun_needs_no_embedding_server() {
    let world = World::new();
    world.copy_from_corpus(TOM, TOM);
    let stand_in = Profile::OpenAi.start().await;
    let engine = engine_on(&world, &stand_in, &[]).await;
    run(&engine, &stand_in).await;
    drop(engine);
    let nowhere = format!("http://127.0.0.1:{}/v1", free_port());
    let engine = world
        .engine(&[
            ("embedding.provider", "openai"),
            ("embedding.base_url", &nowhere),
            ("embedding.model", Profile::OpenAi.model()),
            ("embedding.max_retries", "1"),
        ])
        .await;
    let outcome = engine
        .ingest(persona("mark-twain"), &[Kind::Works])
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let row = job_of(&latest_jobs(&engine.db, "mark-twain").await, Kind::Works).clone();
    assert_eq!(row.chunks_embedded, 0);
}

/// A sentence inserted in the middle of a book moves the offsets of every chunk after it: those
/// records are written again with the vectors they had (their text did not change), and only
/// the chunk that holds the sentence is embedded. The dry run says so first.
#[actix::test]
async fn an_insertion_embeds_the_chunk_it_changed_and_keeps_the_vectors_of_those_it_moved() {
    let world = World::new();
    world.copy_from_corpus(TOM, TOM);
    let stand_in = Profile::OpenAi.start().await;
    let engine = engine_on(&world, &stand_in, &[]).await;
    let (first, _, _) = run(&engine, &stand_in).await;
    let tom = world.data_root.join(TOM);
    let text = std::fs::read_to_string(&tom).unwrap();
    let middle = text.len() / 3;
    let at = middle + text[middle..].find(". ").expect("a sentence") + 1;
    let text = format!("{} And the river ran on.{}", &text[..at], &text[at..]);
    std::fs::write(&tom, text).unwrap();
    let (inserted, calls, _) = run(&engine, &stand_in).await;
    // The chunks after the sentence realign at the next paragraph breaks: a few change text,
    // the hundred and more after them only their offsets.
    assert!(
        (1..=8).contains(&inserted.chunks_embedded),
        "{} embedded",
        inserted.chunks_embedded
    );
    assert!(inserted.chunks_unchanged > 100, "{inserted:?}");
    assert!((1..=8).contains(&calls), "{calls} calls");
    assert_eq!(
        inserted.chunks_embedded + inserted.chunks_unchanged,
        inserted.total_vectors,
        "every chunk embedded or kept"
    );
    assert!(inserted.total_vectors >= first.total_vectors);
    // What the store holds is what a run writes: the moved records' offsets are new.
    let expected = persona_ingest::audit::Expected {
        name_template: &engine.settings.collections.name_template,
        model: engine.provider.model(),
        dimension: engine.provider.dimension(),
    };
    let report = persona_ingest::audit::audit(&engine.db, engine.store.as_ref(), &expected, &[])
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:#?}");
}
