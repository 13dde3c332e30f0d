//! The EmbeddingBatcher alone against a scripted provider that fails as real servers do: batches
//! too large, inputs always refused, calls failing over a size, vectors of NaN.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::tests::{call_sizes, embed, limits, start, texts};
use super::*;
use crate::embed::Failure;
use crate::testkit::{self, ScriptedProvider, ScriptedReply};

fn failure(failure: Failure, message: &str) -> EmbedError {
    EmbedError::new(failure, message)
}

#[actix::test]
async fn a_batch_the_server_calls_too_large_is_halved_and_the_size_kept() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    provider.fail_when(|texts| {
        (texts.len() > 32).then(|| failure(Failure::BatchTooLarge, "413 Payload Too Large"))
    });
    let answer = embed(&batcher, texts("a", 100)).await;
    assert_eq!(answer.await.unwrap().unwrap().len(), 100);
    // 100 refused, 50 refused, then halves of 25 until done: nothing lost, nothing retried.
    assert_eq!(call_sizes(&provider), [100, 50, 25, 25, 50, 25, 25]);
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!((counters.batch_cap, counters.retries), (25, 0));
    let answer = embed(&batcher, texts("b", 60)).await;
    testkit::advance(Duration::from_millis(11)).await;
    answer.await.unwrap().unwrap();
    assert_eq!(
        call_sizes(&provider)[7..],
        [25, 25, 10],
        "the smaller size is kept"
    );
}

#[actix::test]
async fn a_provider_that_states_its_largest_batch_is_never_sent_more() {
    testkit::pause();
    let provider = Arc::new(ScriptedProvider::new(4).with_max_batch_inputs(32));
    let batcher = EmbeddingBatcher::new(provider.clone(), limits()).start();
    let answer = embed(&batcher, texts("a", 70)).await;
    answer.await.unwrap().unwrap();
    assert_eq!(call_sizes(&provider), [32, 32, 6]);
}

/// A text the server always fails on, shared in one call with another caller's texts: only its
/// caller fails, naming its position; the search costs about log2 of the batch in calls; the text
/// fails at once when it comes again.
#[actix::test]
async fn an_input_the_provider_always_fails_on_fails_only_its_caller() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_retries: 2,
        ..limits()
    });
    provider.fail_when(|texts| {
        texts
            .iter()
            .any(|t| t.contains("poison"))
            .then(|| failure(Failure::ServerFailed, "500: unsupported value: NaN"))
    });
    let mut a = texts("a", 20);
    a[13] = "a poison text".into();
    let a = embed(&batcher, a).await;
    let b = embed(&batcher, texts("b", 12)).await;
    testkit::advance(Duration::from_millis(11)).await;
    for _ in 0..10 {
        testkit::advance(Duration::from_secs(30)).await;
    }
    let error = a.await.unwrap().unwrap_err();
    assert_eq!(error.input, Some(13));
    assert!(!error.is_transient(), "not worth running the job again");
    // Alone, it was tried three times before it was blamed.
    assert_eq!(
        error.message,
        "500: unsupported value: NaN (gave up after 3 attempts)"
    );
    assert_eq!(
        b.await.unwrap().unwrap().len(),
        12,
        "the other caller goes on"
    );
    let calls = provider.calls();
    assert_eq!(calls[0].len(), 32, "one call for both");
    let search = calls.len() - 3;
    assert!(
        search <= 2 * 5 + 2,
        "{search} calls to find one input in 32"
    );
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!((counters.bad_inputs, counters.retries), (1, 2 + 2));
    assert!(
        calls[3..].iter().all(|c| c.len() < 32),
        "the search does not retry the whole call"
    );

    let again = embed(&batcher, vec!["fine".into(), "a poison text".into()]).await;
    let error = again.await.unwrap().unwrap_err();
    assert_eq!(error.input, Some(1));
    assert_eq!(provider.calls().len(), calls.len(), "known bad: no call");
}

#[actix::test]
async fn a_provider_failing_every_call_is_not_searched_input_by_input() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_retries: 0,
        ..limits()
    });
    provider.fail_when(|_| Some(failure(Failure::Refused, "400: bad request")));
    let answer = embed(&batcher, texts("a", 64)).await;
    testkit::advance(Duration::from_millis(11)).await;
    let error = answer.await.unwrap().unwrap_err();
    assert!(
        provider.calls().len() <= 1 + 2 * 7 + 2,
        "{} calls",
        provider.calls().len()
    );
    assert_eq!(error.message, "400: bad request");
}

#[actix::test]
async fn a_vector_of_nan_fails_only_its_input() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    provider.then([ScriptedReply::NanAt(4)]);
    let a = embed(&batcher, texts("a", 3)).await;
    let b = embed(&batcher, texts("b", 3)).await;
    testkit::advance(Duration::from_millis(11)).await;
    assert_eq!(a.await.unwrap().unwrap().len(), 3);
    let error = b.await.unwrap().unwrap_err();
    assert_eq!(error.input, Some(1));
    assert_eq!(provider.calls().len(), 1);
}

/// A server failing on calls over a size (a GPU out of memory), not on any input: the search
/// ends with every input embedded, and no one blamed.
#[actix::test]
async fn a_failure_about_the_calls_size_blames_no_input() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_retries: 1,
        ..limits()
    });
    provider.fail_when(|texts| {
        (texts.iter().map(String::len).sum::<usize>() > 200)
            .then(|| failure(Failure::ServerFailed, "500: CUDA out of memory"))
    });
    let texts: Vec<String> = (0..40)
        .map(|i| format!("alice says thing {i:03}"))
        .collect();
    let answer = embed(&batcher, texts).await;
    testkit::advance(Duration::from_millis(11)).await;
    for _ in 0..10 {
        testkit::advance(Duration::from_secs(30)).await;
    }
    assert_eq!(answer.await.unwrap().unwrap().len(), 40);
}

/// Several inputs of one caller refused: each found, and the other caller's texts, which
/// shared their calls, all embedded.
#[actix::test]
async fn many_bad_inputs_of_one_caller_fail_no_other() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    provider.fail_when(|texts| {
        texts.iter().any(|t| t.len() > 50).then(|| {
            failure(
                Failure::Refused,
                "400: inputs must have less than 50 tokens",
            )
        })
    });
    let mut alice: Vec<String> = (0..40).map(|i| format!("alice {i}")).collect();
    for bad in [3, 9, 17, 22, 30, 38] {
        alice[bad] = "long ".repeat(20);
    }
    let alice = embed(&batcher, alice).await;
    let bob = embed(&batcher, (0..40).map(|i| format!("bob {i}")).collect()).await;
    testkit::advance(Duration::from_millis(11)).await;
    assert_eq!(bob.await.unwrap().unwrap().len(), 40);
    let error = alice.await.unwrap().unwrap_err();
    assert!(error.input.is_some() && !error.is_transient(), "{error:?}");
}

/// A server too slow for a full batch within the timeout (a CPU serving a large model): once the
/// retries are spent, the batch is halved until calls answer in time, and that size is kept.
#[actix::test]
async fn a_batch_that_keeps_timing_out_is_halved() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_retries: 1,
        ..limits()
    });
    provider.fail_when(|texts| {
        (texts.len() > 8).then(|| {
            failure(
                Failure::TimedOut,
                "request timed out (embedding.timeout_secs)",
            )
        })
    });
    let answer = embed(&batcher, texts("a", 20)).await;
    testkit::advance(Duration::from_millis(11)).await;
    for _ in 0..10 {
        testkit::advance(Duration::from_secs(30)).await;
    }
    assert_eq!(answer.await.unwrap().unwrap().len(), 20);
    assert_eq!(call_sizes(&provider), [20, 20, 10, 10, 5, 5, 10, 10, 5, 5]);
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!(counters.batch_cap, 5);
}
