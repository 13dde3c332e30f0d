//! The Ingestor against a manifest: what it skips, embeds and deletes, and when it trusts the
//! manifest at all. Probes as in `tests`; the "previous" manifest is what a first job left.

use std::collections::HashMap;

use super::tests::{peers, start_job, updates, Peers};
use super::*;
use crate::actors::store_writer::Stale;
use crate::testkit::{StaticSource, STATIC_FILE};

/// What a first job over `chunks` chunks leaves: its manifest, and the store's record hashes.
async fn first_run(chunks: usize) -> (KindManifest, HashMap<String, u64>) {
    let peers = peers();
    start_job(
        StaticSource::new(Kind::Works, chunks, 100),
        &peers,
        |job| job,
        HashMap::new(),
    );
    peers.report.expect_message().await.result.unwrap();
    let Some(StatusUpdate::JobCompleted {
        manifest: Some(ManifestChange::Replace { entries, .. }),
        ..
    }) = updates(&peers.recorder).pop()
    else {
        panic!("the job's end replaces its manifest")
    };
    let stored = peers
        .written
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|r| (r.id.clone(), crate::manifest::hash_of(r)))
        .collect();
    let manifest = KindManifest {
        files: entries
            .iter()
            .map(|e| (e.source.clone(), e.clone()))
            .collect(),
        settled: true,
    };
    (manifest, stored)
}

/// Runs `chunks` chunks against `previous`, the store holding `stored`.
async fn again(
    chunks: usize,
    previous: KindManifest,
    stored: HashMap<String, u64>,
    force: bool,
) -> (Peers, JobStats) {
    let peers = peers();
    start_job(
        StaticSource::new(Kind::Works, chunks, 100),
        &peers,
        |job| IngestJob {
            previous: Some(Arc::new(previous)),
            force,
            ..job
        },
        stored,
    );
    let stats = peers.report.expect_message().await.result.unwrap();
    (peers, stats)
}

fn embedded(peers: &Peers) -> usize {
    peers.embedded.load(std::sync::atomic::Ordering::SeqCst) as usize
}

fn deleted(peers: &Peers) -> Stale {
    let prunes = peers.prune.received();
    assert_eq!(prunes.len(), 1, "stale records looked for once");
    prunes[0].stale.clone()
}

#[actix::test]
async fn an_unchanged_file_is_neither_read_nor_embedded_nor_written() {
    let (previous, stored) = first_run(50).await;
    let (peers, stats) = again(50, previous, stored, false).await;
    assert_eq!((embedded(&peers), peers.write.count()), (0, 0));
    assert_eq!(
        (
            stats.vectors,
            stats.counts.files_skipped,
            stats.counts.files_read
        ),
        (50, 1, 0)
    );
    assert_eq!(stats.counts.chunks_unchanged, 50);
    assert!(matches!(deleted(&peers), Stale::These(ids) if ids.is_empty()));
}

#[actix::test]
async fn a_file_grown_by_two_chunks_embeds_those_two() {
    let (previous, stored) = first_run(50).await;
    let (peers, stats) = again(52, previous, stored, false).await;
    assert_eq!(embedded(&peers), 2);
    assert_eq!(
        (
            stats.counts.files_read,
            stats.counts.chunks_embedded,
            stats.counts.chunks_unchanged
        ),
        (1, 2, 50)
    );
    assert_eq!(stats.vectors, 52);
    assert!(stats.counts.tokens_embedded > 0);
}

#[actix::test]
async fn a_file_shrunk_deletes_exactly_the_chunks_that_are_gone() {
    let (previous, stored) = first_run(50).await;
    let (peers, stats) = again(45, previous, stored, false).await;
    assert_eq!(embedded(&peers), 0);
    let Stale::These(ids) = deleted(&peers) else {
        panic!("deleted by id")
    };
    let mut expected: Vec<String> = (45..50)
        .map(|i| crate::ids::record_id(Kind::Works, STATIC_FILE, i))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(stats.counts.chunks_deleted, 0, "the prune probe answers 0");
}

#[actix::test]
async fn a_store_that_lost_a_record_gets_that_record_again() {
    let (previous, mut stored) = first_run(50).await;
    stored.remove(&crate::ids::record_id(Kind::Works, STATIC_FILE, 7));
    let (peers, stats) = again(50, previous, stored, false).await;
    assert_eq!(embedded(&peers), 1, "only the record the store lost");
    assert_eq!(stats.counts.chunks_unchanged, 49);
    assert!(matches!(deleted(&peers), Stale::These(ids) if ids.is_empty()));
}

#[actix::test]
async fn a_record_added_behind_the_engines_back_is_deleted_and_nothing_embedded() {
    let (previous, mut stored) = first_run(50).await;
    stored.insert("works:intruder.txt:0".into(), 1);
    let (peers, _) = again(50, previous, stored, false).await;
    assert_eq!(embedded(&peers), 0);
    assert!(
        matches!(deleted(&peers), Stale::These(ids) if ids == ["works:intruder.txt:0"]),
        "what the store holds and the job did not make"
    );
}

#[actix::test]
async fn after_a_run_that_did_not_end_the_store_is_compared_record_by_record() {
    let (previous, stored) = first_run(50).await;
    let previous = KindManifest {
        settled: false,
        ..previous
    };
    // The dead run had rewritten chunk 3 with other text.
    let mut stored = stored;
    stored.insert(crate::ids::record_id(Kind::Works, STATIC_FILE, 3), 42);
    let (peers, stats) = again(50, previous, stored, false).await;
    assert_eq!(
        embedded(&peers),
        1,
        "only the chunk the store holds otherwise"
    );
    assert_eq!(stats.counts.files_read, 1, "the file is read, not skipped");
}

#[actix::test]
async fn with_nothing_stored_everything_is_embedded() {
    let (previous, _) = first_run(50).await;
    let (peers, _) = again(50, previous, HashMap::new(), false).await;
    assert_eq!(embedded(&peers), 50);
}

#[actix::test]
async fn other_settings_make_every_chunk_again_and_force_too() {
    let (mut previous, stored) = first_run(50).await;
    for entry in previous.files.values_mut() {
        entry.fingerprint = "other settings".into();
    }
    let (peers, stats) = again(50, previous, stored, false).await;
    assert_eq!(stats.counts.files_read, 1);
    assert_eq!(embedded(&peers), 50, "rows of other settings are set aside");

    let (previous, stored) = first_run(50).await;
    let (peers, stats) = again(48, previous, stored, true).await;
    assert_eq!(embedded(&peers), 48, "forced");
    assert_eq!(stats.counts.files_skipped, 0);
    assert!(
        matches!(deleted(&peers), Stale::These(ids) if ids.len() == 2),
        "deletions still by the manifest"
    );
}

#[actix::test]
async fn a_failed_job_forgets_the_files_it_started_reading() {
    let (previous, stored) = first_run(50).await;
    let peers = peers();
    start_job(
        StaticSource::new(Kind::Works, 60, 100).failing_after(55),
        &peers,
        |job| IngestJob {
            previous: Some(Arc::new(previous)),
            ..job
        },
        stored,
    );
    peers.report.expect_message().await.result.unwrap_err();
    let Some(StatusUpdate::JobFailed {
        manifest: Some(ManifestChange::Forget { sources, .. }),
        ..
    }) = updates(&peers.recorder).pop()
    else {
        panic!("a failed job's end forgets what it touched")
    };
    assert_eq!(sources, [STATIC_FILE]);
}

#[actix::test]
async fn a_chunk_whose_text_the_store_holds_keeps_its_vector() {
    // The first run's records, as the store holds them.
    let peers_first = peers();
    start_job(
        StaticSource::new(Kind::Works, 20, 100),
        &peers_first,
        |job| job,
        HashMap::new(),
    );
    peers_first.report.expect_message().await.result.unwrap();
    let written: Vec<crate::record::Record> = peers_first.written.lock().unwrap().concat();
    let stored: HashMap<String, u64> = written
        .iter()
        .map(|r| (r.id.clone(), crate::manifest::hash_of(r)))
        .collect();
    // Every record's metadata moved (here its persona's name: the hashes differ), not their
    // texts: no chunk is embedded, every record is written again with its vector.
    let peers = peers();
    peers.records.reply_with(move |m: &ReadRecords| {
        Ok(written
            .iter()
            .filter(|r| m.ids.contains(&r.id))
            .cloned()
            .collect())
    });
    start_job(
        StaticSource::new(Kind::Works, 20, 100),
        &peers,
        |job| IngestJob {
            persona: crate::PersonaId::parse("q").unwrap(),
            ..job
        },
        stored,
    );
    let stats = peers.report.expect_message().await.result.unwrap();
    assert_eq!(embedded(&peers), 0);
    let rewritten: usize = peers.written.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(rewritten, 20);
    assert_eq!(
        (
            stats.counts.chunks_embedded,
            stats.counts.chunks_unchanged,
            stats.counts.tokens_embedded
        ),
        (0, 20, 0)
    );
}
