//! The StoreWriter alone, against an in-memory store with scripted faults, in virtual time.

use std::sync::Arc;

use super::*;
use tokio::sync::mpsc;

use crate::actors::window::WindowWritten;
use crate::ids::WrittenIds;
use crate::record::Metadata;
use crate::testkit::{self, MemoryStore, StoreFault};
use crate::Kind;

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        embedding_model: "m".into(),
        dimension: 2,
    }
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            id: format!("works:data/p/a.txt:{i}"),
            document: format!("text {i}"),
            metadata: Metadata::new(),
            embedding: vec![1.0, 0.0],
        })
        .collect()
}

fn start(store: &Arc<MemoryStore>) -> Addr<StoreWriter> {
    let limits = WriterLimits {
        max_in_flight: 2,
        max_retries: 2,
        backoff_base: Duration::from_millis(100),
    };
    StoreWriter::new(store.clone(), limits).start()
}

/// A window of `n` records for `collection`, and the channel its job hears on.
fn window(
    writer: &Addr<StoreWriter>,
    collection: &str,
    n: usize,
) -> (Window, mpsc::UnboundedReceiver<WindowWritten>) {
    Window::of_records(spec(collection), records(n), writer.clone().recipient())
}

/// What became of a window sent to the writer: the records written or the store's error.
async fn written(mut rx: mpsc::UnboundedReceiver<WindowWritten>) -> Result<usize, StoreError> {
    match rx.recv().await.expect("every window is settled").result {
        Ok(report) => Ok(report.records),
        Err(WindowFailed::Store(e)) => Err(e),
        Err(other) => panic!("{other:?}"),
    }
}

async fn write(
    writer: &Addr<StoreWriter>,
    collection: &str,
    n: usize,
) -> Result<usize, StoreError> {
    let (window, rx) = window(writer, collection, n);
    writer.do_send(WriteWindow(window));
    written(rx).await
}

#[actix::test]
async fn upserts_are_split_at_the_stores_batch_limit() {
    let store = Arc::new(MemoryStore::new(10));
    let writer = start(&store);
    assert_eq!(write(&writer, "p_works", 25).await.unwrap(), 25);
    assert_eq!(store.upsert_sizes(), [10, 10, 5]);
    assert_eq!(store.ids_in("p_works").len(), 25);
}

#[actix::test]
async fn collections_are_got_or_created_once() {
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    for _ in 0..3 {
        write(&writer, "p_works", 5).await.unwrap();
    }
    write(&writer, "p_quotes", 5).await.unwrap();
    assert_eq!(store.ensure_calls(), 2);
    let counters: WriterCounters = testkit::observe(&writer).await;
    assert_eq!((counters.upserts, counters.records), (4, 20));
}

#[actix::test]
async fn transient_errors_are_retried_within_the_budget() {
    testkit::pause();
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    store.fail_next([
        StoreFault::Transient("connection reset".into()),
        StoreFault::Transient("503".into()),
    ]);
    assert_eq!(write(&writer, "p_works", 3).await.unwrap(), 3);
    let counters: WriterCounters = testkit::observe(&writer).await;
    assert_eq!(counters.retries, 2);

    store.fail_next(vec![StoreFault::Transient("503".into()); 3]);
    let error = write(&writer, "p_works", 3).await.unwrap_err();
    assert_eq!(error.to_string(), "503 (gave up after 3 attempts)");
}

#[actix::test]
async fn permanent_errors_fail_at_once() {
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    store.fail_next([StoreFault::Permanent("400 bad metadata".into())]);
    assert_eq!(
        write(&writer, "p_works", 3).await.unwrap_err().to_string(),
        "400 bad metadata"
    );
    let counters: WriterCounters = testkit::observe(&writer).await;
    assert_eq!(counters.retries, 0);
}

#[actix::test]
async fn pruning_removes_what_the_job_did_not_write() {
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    write(&writer, "p_works", 5).await.unwrap();
    let mut keep = WrittenIds::new(Kind::Works);
    for i in [0, 2] {
        keep.insert("data/p/a.txt", i);
    }
    keep.seal();
    let pruned = writer
        .send(PruneCollection {
            collection: spec("p_works"),
            stale: Stale::NotIn(Arc::new(keep)),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(
        store.ids_in("p_works"),
        ["works:data/p/a.txt:0", "works:data/p/a.txt:2"]
    );
}

#[actix::test]
async fn pruning_nothing_asks_the_store_nothing() {
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    write(&writer, "p_works", 2).await.unwrap();
    let asked = store.lookups();
    let pruned = writer
        .send(PruneCollection {
            collection: spec("p_works"),
            stale: Stale::These(Vec::new()),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((pruned, store.lookups() - asked), (0, 0));
}

#[actix::test]
async fn writes_waiting_for_a_collection_go_together_in_one_upsert() {
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    write(&writer, "p_works", 1).await.unwrap();
    store.close_gate();
    let sends: Vec<_> = (0..5)
        .map(|_| {
            let (w, rx) = window(&writer, "p_works", 3);
            writer.do_send(WriteWindow(w));
            rx
        })
        .collect();
    let _: WriterCounters = testkit::observe(&writer).await;
    store.open_gate();
    for sent in sends {
        assert_eq!(written(sent).await.unwrap(), 3);
    }
    // Two of the five took the two call slots at once; the three that waited went as one.
    assert_eq!(store.upsert_sizes(), [1, 3, 3, 9]);
    let counters: WriterCounters = testkit::observe(&writer).await;
    assert_eq!(counters.coalesced_writes, 2);
}

#[actix::test]
async fn a_window_whose_job_has_gone_is_not_written() {
    let store = Arc::new(MemoryStore::new(100));
    let writer = start(&store);
    write(&writer, "p_works", 1).await.unwrap();
    // One arrives after its job has gone; one's job goes while it waits for a call slot (both
    // slots held by upserts the store keeps waiting).
    let (gone, rx) = window(&writer, "p_works", 3);
    drop(rx);
    writer.do_send(WriteWindow(gone));
    store.close_gate();
    let (a, a_rx) = window(&writer, "p_works", 2);
    let (b, b_rx) = window(&writer, "p_works", 2);
    let (waiting, waiting_rx) = window(&writer, "p_works", 2);
    for w in [a, b, waiting] {
        writer.do_send(WriteWindow(w));
    }
    let _: WriterCounters = testkit::observe(&writer).await;
    drop(waiting_rx);
    store.open_gate();
    assert_eq!(written(a_rx).await.unwrap(), 2);
    assert_eq!(written(b_rx).await.unwrap(), 2);
    let counters: WriterCounters = testkit::observe(&writer).await;
    assert_eq!(
        counters.abandoned_windows,
        2,
        "{counters:?} {:?}",
        store.upsert_sizes()
    );
    assert_eq!(counters.records, 1 + 2 + 2);
    assert_eq!(store.upsert_sizes(), [1, 2, 2]);
}
