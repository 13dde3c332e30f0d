//! The Ingestor alone: probes in place of the batcher, the writer and the recorder, and an
//! in-memory source. Real time (its reader is a real blocking thread), in milliseconds.

use crate::actors::status_recorder::Recorded;
use std::time::Duration;

use super::*;
use crate::actors::window::{WindowFailed, WriteWindow};
use crate::embed::EmbedError;
use crate::record::Record;
use crate::store::StoreError;
use crate::testkit::{self, probe, sink, ProbeHandle, SinkHandle, StaticSource};

pub(super) struct Peers {
    /// Stands in for the batcher: fills each window's vectors with [1, 0] and sends it on.
    pub embedder: SinkHandle<EmbedWindow>,
    /// Stands in for the writer: keeps each window's records and tells the job.
    pub write: SinkHandle<WriteWindow>,
    /// The records written, by window.
    pub written: Arc<Mutex<Vec<Vec<Record>>>>,
    /// Texts embedded.
    pub embedded: Arc<AtomicU64>,
    pub prune: ProbeHandle<PruneCollection>,
    pub recorder: ProbeHandle<RecordStatus>,
    pub report: ProbeHandle<IngestFinished>,
    pub records: ProbeHandle<ReadRecords>,
}

pub(super) fn peers() -> Peers {
    let written: Arc<Mutex<Vec<Vec<Record>>>> = Arc::default();
    let embedded: Arc<AtomicU64> = Arc::default();
    let (kept, counted) = (written.clone(), embedded.clone());
    Peers {
        embedder: sink(move |EmbedWindow(mut window)| {
            counted.fetch_add(window.to_embed.len() as u64, Ordering::SeqCst);
            for &(at, _) in &window.to_embed {
                window.records[at].embedding = vec![1.0, 0.0];
            }
            window.write_to.clone().do_send(WriteWindow(window));
        }),
        write: sink(move |WriteWindow(window)| {
            let records = window.records.len();
            kept.lock().unwrap().push(window.records.clone());
            window.written(records);
        }),
        written,
        embedded,
        prune: probe(|_: &PruneCollection| Ok::<_, StoreError>(0)),
        recorder: probe(|_: &RecordStatus| Ok(Recorded::default())),
        report: probe(|_: &IngestFinished| ()),
        records: probe(|_: &ReadRecords| Ok(Vec::new())),
    }
}

const LIMITS: IngestorLimits = IngestorLimits {
    window_chunks: 8,
    windows_in_flight: 2,
};

fn start(source: StaticSource, peers: &Peers) -> Addr<Ingestor> {
    start_job(source, peers, |job| job, std::collections::HashMap::new())
}

/// Starts the job `change` makes of the default one, the store holding `stored` (record hashes
/// by id).
pub(super) fn start_job(
    source: StaticSource,
    peers: &Peers,
    change: impl FnOnce(IngestJob) -> IngestJob,
    stored: std::collections::HashMap<String, u64>,
) -> Addr<Ingestor> {
    let held = stored.len() as u64;
    let job = IngestJob {
        job_id: Uuid::nil(),
        persona: PersonaId::parse("p").unwrap(),
        kind: Kind::Works,
        collection: CollectionSpec {
            name: "p_works".into(),
            embedding_model: "m".into(),
            dimension: 2,
        },
        plan: source.plan(),
        source: Arc::new(source),
        rerun: false,
        previous: None,
        force: false,
        fingerprint: "f".into(),
        tokens: Default::default(),
    };
    let job = change(job);
    let ingestor_peers = IngestorPeers {
        embedder: peers.embedder.recipient(),
        write: peers.write.recipient(),
        prune: peers.prune.recipient(),
        counter: probe(move |_: &CountRecords| Ok(held)).recipient(),
        hashes: probe(move |_: &ReadHashes| Ok(stored.clone())).recipient(),
        records: peers.records.recipient(),
        recorder: peers.recorder.recipient(),
    };
    Ingestor::new(job, ingestor_peers, LIMITS, peers.report.recipient()).start()
}

pub(super) fn updates(recorder: &ProbeHandle<RecordStatus>) -> Vec<StatusUpdate> {
    recorder
        .received()
        .into_iter()
        .map(|RecordStatus(u)| u)
        .collect()
}

/// Waits (real time, a few seconds at most) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the condition never held");
}

#[actix::test]
async fn a_withheld_embedder_stops_reading_at_the_window_bound() {
    let peers = peers();
    peers.embedder.hold();
    let ingestor = start(StaticSource::new(Kind::Works, 1_000, 100), &peers);
    eventually(|| peers.embedder.count() == LIMITS.windows_in_flight).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let counters: IngestorCounters = testkit::observe(&ingestor).await;
    // In flight: two windows at the embedder, a full channel, one chunk in the reader's hand.
    let bound = (LIMITS.window_chunks * LIMITS.windows_in_flight * 2 + 1) as u64;
    assert!(
        counters.chunks_read <= bound,
        "{} chunks read, bound {bound}",
        counters.chunks_read
    );
    assert_eq!(
        peers.embedder.count(),
        LIMITS.windows_in_flight,
        "no third window"
    );
    assert_eq!(counters.chunks_written, 0);

    peers.embedder.release();
    let finished = peers.report.expect_message().await;
    assert_eq!(finished.result.unwrap().vectors, 1_000);
}

#[actix::test]
async fn progress_rises_and_reaches_100_exactly_once() {
    let peers = peers();
    start(StaticSource::new(Kind::Works, 200, 100), &peers);
    let finished = peers.report.expect_message().await;
    assert_eq!(finished.result.as_ref().unwrap().vectors, 200);
    let updates = updates(&peers.recorder);
    assert!(matches!(
        updates[0],
        StatusUpdate::JobStarted { rerun: false, .. }
    ));
    let progress: Vec<u8> = updates
        .iter()
        .filter_map(|u| match u {
            StatusUpdate::JobProgress { progress, .. } => Some(*progress),
            _ => None,
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert!(progress.iter().all(|p| *p < 100), "{progress:?}");
    let completions: Vec<&StatusUpdate> = updates
        .iter()
        .filter(|u| matches!(u, StatusUpdate::JobCompleted { .. }))
        .collect();
    assert_eq!(completions.len(), 1);
    assert!(matches!(
        updates.last(),
        Some(StatusUpdate::JobCompleted {
            total_vectors: 200,
            ..
        })
    ));
    let written: usize = peers.written.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(written, 200);
    assert_eq!(
        peers.prune.count(),
        1,
        "stale records are looked for once, at the end"
    );
}

/// From now on the stand-in batcher fails each window with `error()`.
fn fail_embedding(peers: &Peers, error: impl Fn() -> EmbedError + Send + 'static) {
    peers.embedder.handle_with(move |EmbedWindow(window)| {
        let error = error();
        window.failed(|window| WindowFailed::Embedding { error, window });
    });
}

async fn failure_of(peers: &Peers) -> String {
    let error = job_error_of(peers).await;
    assert!(!error.retryable(), "{error:?}");
    error.to_string()
}

async fn job_error_of(peers: &Peers) -> JobError {
    let finished = peers.report.expect_message().await;
    let error = finished.result.unwrap_err();
    let recorded = updates(&peers.recorder);
    assert!(
        matches!(recorded.last(), Some(StatusUpdate::JobFailed { error: e, .. }) if *e == error.to_string()),
        "{recorded:?}"
    );
    assert_eq!(peers.prune.count(), 0, "a failed job prunes nothing");
    error
}

#[actix::test]
async fn a_reader_error_fails_the_job_with_it() {
    let peers = peers();
    start(
        StaticSource::new(Kind::Works, 100, 100).failing_after(20),
        &peers,
    );
    assert_eq!(
        failure_of(&peers).await,
        // The counter probe says the store holds none: the row will say so.
        "data/p/static.txt:21: scripted failure; 20 record(s) written before the failure, 0 in p_works now"
    );
}

#[actix::test]
async fn a_reader_panic_fails_the_job_with_the_panic_message() {
    let peers = peers();
    start(
        StaticSource::new(Kind::Works, 100, 100).panicking_after(5),
        &peers,
    );
    assert_eq!(
        failure_of(&peers).await,
        "reader panicked: scripted panic at chunk 5; 5 record(s) written before the failure, 0 in p_works now"
    );
}

#[actix::test]
async fn an_embedding_failure_fails_the_job_and_stops_the_reader() {
    let peers = peers();
    fail_embedding(&peers, || EmbedError::permanent("401 Unauthorized"));
    start(StaticSource::new(Kind::Works, 10_000, 100), &peers);
    assert_eq!(
        failure_of(&peers).await,
        "embedding failed: 401 Unauthorized"
    );
}

#[actix::test]
async fn a_provider_still_unavailable_after_its_retries_fails_the_job_as_retryable() {
    let peers = peers();
    fail_embedding(&peers, || {
        EmbedError::transient("503 Service Unavailable (gave up after 6 attempts)", None)
    });
    start(StaticSource::new(Kind::Works, 10_000, 100), &peers);
    let error = job_error_of(&peers).await;
    assert!(
        matches!(&error, JobError::Embedding { source, .. } if source.is_transient()),
        "{error:?}"
    );
    assert!(error.retryable());
    assert_eq!(
        error.to_string(),
        "embedding failed: 503 Service Unavailable (gave up after 6 attempts)"
    );
}

#[actix::test]
async fn a_soft_stop_lets_what_is_in_flight_finish_then_fails_the_job() {
    let peers = peers();
    peers.embedder.hold();
    let ingestor = start(StaticSource::new(Kind::Works, 10_000, 100), &peers);
    eventually(|| peers.embedder.count() == 2).await;
    ingestor.do_send(StopIngest {
        reason: "soft time limit of 1 s exceeded".into(),
    });
    peers.embedder.release();
    let error = failure_of(&peers).await;
    assert!(
        error.starts_with(
            "soft time limit of 1 s exceeded (stopped while reading data/p/static.txt)"
        ),
        "{error}"
    );
    assert!(
        peers.write.count() >= 2,
        "the windows in flight were written"
    );
}

#[actix::test]
async fn a_hard_abort_drops_the_work_at_once() {
    let peers = peers();
    peers.embedder.hold();
    let ingestor = start(StaticSource::new(Kind::Works, 10_000, 100), &peers);
    eventually(|| peers.embedder.count() == 2).await;
    ingestor.do_send(AbortIngest {
        reason: "hard time limit of 2 s exceeded".into(),
    });
    assert_eq!(failure_of(&peers).await, "hard time limit of 2 s exceeded");
    eventually(|| !ingestor.connected()).await;
    // The windows out when the job was aborted say so themselves: the batcher and the writer
    // drop an abandoned window (their own tests), so nothing of them is embedded or written.
    let out = peers.embedder.take_held();
    assert_eq!(out.len(), 2, "no window was sent after the abort");
    assert!(out.iter().all(|EmbedWindow(w)| w.abandoned()));
    assert_eq!(peers.write.count(), 0);
}
