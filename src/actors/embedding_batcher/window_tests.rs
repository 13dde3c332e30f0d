//! Windows of the data path through the EmbeddingBatcher alone: texts lent to the calls and put
//! back, vectors put in place, the window sent on to its writer (a sink here), and a window
//! whose job has gone neither embedded nor sent on.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::tests::{limits, start};
use super::*;
use crate::actors::window::{Ack, WindowWritten};
use crate::embed::Failure;
use crate::record::{Metadata, Record};
use crate::store::CollectionSpec;
use crate::testkit::{self, sink, SinkHandle};

/// A window of `texts` for which the records at `keep` already carry a vector ([9, 9, 9, 9]).
fn window(
    texts: &[&str],
    keep: &[usize],
    writer: &SinkHandle<WriteWindow>,
) -> (Window, mpsc::UnboundedReceiver<WindowWritten>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let records = texts
        .iter()
        .enumerate()
        .map(|(at, text)| Record {
            id: format!("works:a.txt:{at}"),
            document: (*text).to_owned(),
            metadata: Metadata::new(),
            embedding: if keep.contains(&at) {
                vec![9.0; 4]
            } else {
                Vec::new()
            },
        })
        .collect();
    let window = Window {
        collection: CollectionSpec {
            name: "p_works".into(),
            embedding_model: "m".into(),
            dimension: 4,
        },
        records,
        to_embed: (0..texts.len())
            .filter(|at| !keep.contains(at))
            .map(|at| (at, 1))
            .collect(),
        bytes: 10,
        tokens: 3,
        write_to: writer.recipient(),
        ack: Ack::new(tx),
    };
    (window, rx)
}

/// A writer that keeps what it is sent.
fn writer() -> (SinkHandle<WriteWindow>, Arc<Mutex<Vec<Window>>>) {
    let sent: Arc<Mutex<Vec<Window>>> = Arc::default();
    let kept = sent.clone();
    (
        sink(move |WriteWindow(w)| kept.lock().unwrap().push(w)),
        sent,
    )
}

#[actix::test]
async fn a_windows_vectors_are_put_in_place_and_it_goes_on_to_its_writer() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    let (writer, sent) = writer();
    let (w, _rx) = window(&["a", "bb", "ccc", "dddd", "eeeee"], &[0, 2], &writer);
    batcher.do_send(EmbedWindow(w));
    let _: BatcherCounters = testkit::observe(&batcher).await;
    testkit::advance(Duration::from_millis(11)).await;
    testkit::settle().await;
    assert_eq!(
        provider.calls(),
        [["bb", "dddd", "eeeee"]],
        "only the missing"
    );
    let sent = sent.lock().unwrap();
    let [w] = &sent[..] else {
        panic!("one window sent on, not {}", sent.len())
    };
    let documents: Vec<&str> = w.records.iter().map(|r| r.document.as_str()).collect();
    assert_eq!(
        documents,
        ["a", "bb", "ccc", "dddd", "eeeee"],
        "every text back in its record"
    );
    for r in &w.records {
        let expected = match r.document.as_str() {
            "a" | "ccc" => vec![9.0; 4],
            text => provider.vector_for(text),
        };
        assert_eq!(r.embedding, expected, "{}", r.document);
    }
}

#[actix::test]
async fn a_window_whose_job_has_gone_is_not_sent_on_even_once_its_vectors_come() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    let (writer, _) = writer();
    provider.close_gate();
    let (w, rx) = window(&["a", "bb"], &[], &writer);
    batcher.do_send(EmbedWindow(w));
    let _: BatcherCounters = testkit::observe(&batcher).await;
    testkit::advance(Duration::from_millis(11)).await;
    testkit::settle().await;
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!(counters.in_flight, 1, "its call is out");
    drop(rx);
    provider.open_gate();
    testkit::settle().await;
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!(counters.abandoned, 1);
    assert_eq!(writer.count(), 0);
    // And one whose job has gone before it is taken costs no call.
    let (w, rx) = window(&["ccc"], &[], &writer);
    drop(rx);
    batcher.do_send(EmbedWindow(w));
    let _: BatcherCounters = testkit::observe(&batcher).await;
    testkit::advance(Duration::from_millis(11)).await;
    testkit::settle().await;
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!((counters.abandoned, provider.calls().len()), (2, 1));
    assert_eq!(writer.count(), 0);
}

#[actix::test]
async fn an_input_refused_alone_fails_its_window_naming_its_record() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    let (writer, _) = writer();
    provider.fail_when(|texts| {
        texts
            .iter()
            .any(|t| t == "bad")
            .then(|| EmbedError::new(Failure::Refused, "400: input too long"))
    });
    let (w, mut rx) = window(&["a", "bb", "bad", "dddd"], &[1], &writer);
    batcher.do_send(EmbedWindow(w));
    let _: BatcherCounters = testkit::observe(&batcher).await;
    for _ in 0..5 {
        testkit::advance(Duration::from_secs(1)).await;
    }
    let Some(WindowWritten {
        result: Err(WindowFailed::Embedding { error, window }),
    }) = rx.recv().await
    else {
        panic!("the window fails with the provider's error");
    };
    assert_eq!(error.input, Some(2), "the position of its record");
    assert_eq!(window.records[2].id, "works:a.txt:2");
    assert_eq!(writer.count(), 0);
}

#[actix::test]
async fn a_window_whose_every_record_keeps_its_vector_goes_on_without_a_call() {
    let (batcher, provider) = start(limits());
    let (writer, sent) = writer();
    let (w, _rx) = window(&["a", "bb"], &[0, 1], &writer);
    batcher.do_send(EmbedWindow(w));
    let _: BatcherCounters = testkit::observe(&batcher).await;
    testkit::settle().await;
    assert_eq!(writer.count(), 1);
    assert_eq!(sent.lock().unwrap()[0].records[1].embedding, vec![9.0; 4]);
    assert!(provider.calls().is_empty());
}
