//! The EmbeddingBatcher alone, against a scripted provider, in virtual time.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::*;
use crate::testkit::{self, ScriptedProvider, ScriptedReply};

pub(super) fn limits() -> BatchLimits {
    BatchLimits {
        max_inputs: 100,
        max_tokens: 10_000,
        linger: Duration::from_millis(10),
        max_in_flight: 4,
        max_retries: 3,
        backoff_base: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
    }
}

pub(super) fn start(limits: BatchLimits) -> (Addr<EmbeddingBatcher>, Arc<ScriptedProvider>) {
    let provider = Arc::new(ScriptedProvider::new(4));
    let batcher = EmbeddingBatcher::new(provider.clone(), limits).start();
    (batcher, provider)
}

pub(super) fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{}", "x".repeat(i)))
        .collect()
}

/// Sends, and lets the batcher take the request, without waiting for the answer.
pub(super) async fn embed(
    batcher: &Addr<EmbeddingBatcher>,
    texts: Vec<String>,
) -> tokio::task::JoinHandle<Result<Vec<Vec<f32>>, EmbedError>> {
    let request = batcher.send(EmbedTexts { texts });
    let answer = actix::spawn(async move { request.await.expect("batcher running") });
    testkit::settle().await;
    answer
}

pub(super) fn call_sizes(provider: &ScriptedProvider) -> Vec<usize> {
    provider.calls().iter().map(Vec::len).collect()
}

#[actix::test]
async fn a_partial_batch_waits_for_the_linger_time_then_goes() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    let answer = embed(&batcher, texts("a", 3)).await;
    // The texts have been handled, and whatever they started has had its turn.
    let _: BatcherCounters = testkit::observe(&batcher).await;
    testkit::settle().await;
    assert!(provider.calls().is_empty(), "still lingering");
    testkit::advance(Duration::from_millis(11)).await;
    let vectors = answer.await.unwrap().unwrap();
    assert_eq!(call_sizes(&provider), [3]);
    assert_eq!(
        vectors.iter().map(|v| v[0]).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0],
        "in order"
    );
}

#[actix::test]
async fn full_batches_go_at_once_and_hold_at_most_max_inputs() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_inputs: 4,
        linger: Duration::from_secs(1),
        ..limits()
    });
    let answer = embed(&batcher, texts("a", 10)).await;
    testkit::settle().await;
    assert_eq!(
        call_sizes(&provider),
        [4, 4],
        "the full ones, without lingering"
    );
    testkit::advance(Duration::from_secs(1)).await;
    assert_eq!(answer.await.unwrap().unwrap().len(), 10);
    assert_eq!(call_sizes(&provider), [4, 4, 2]);
}

#[actix::test]
async fn batches_hold_at_most_max_tokens() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_tokens: 25,
        ..limits()
    });
    // 40 bytes, 10 estimated tokens each: two fit in 25 tokens, three do not.
    let answer = embed(&batcher, vec!["t".repeat(40); 5]).await;
    testkit::advance(Duration::from_millis(11)).await;
    answer.await.unwrap().unwrap();
    assert_eq!(call_sizes(&provider), [2, 2, 1]);
}

#[actix::test]
async fn requests_of_several_jobs_share_one_call_and_each_gets_its_own_vectors() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_inputs: 30,
        ..limits()
    });
    let mut answers = Vec::new();
    for job in ["works", "quotes", "profile"] {
        answers.push(embed(&batcher, texts(job, 10)).await);
    }
    testkit::advance(Duration::from_millis(11)).await;
    for (answer, job) in answers.into_iter().zip(["works", "quotes", "profile"]) {
        let vectors = answer.await.unwrap().unwrap();
        let expected: Vec<f32> = texts(job, 10).iter().map(|t| t.len() as f32).collect();
        assert_eq!(
            vectors.iter().map(|v| v[0]).collect::<Vec<_>>(),
            expected,
            "{job}"
        );
    }
    assert_eq!(
        call_sizes(&provider),
        [30],
        "one provider call for three jobs"
    );
}

#[actix::test]
async fn transient_failures_are_retried_after_the_providers_retry_after() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    provider.then([ScriptedReply::Fail(EmbedError::transient(
        "429 Too Many Requests",
        Some(Duration::from_secs(2)),
    ))]);
    let answer = embed(&batcher, texts("a", 2)).await;
    testkit::advance(Duration::from_millis(11)).await;
    testkit::settle().await;
    assert_eq!(provider.calls().len(), 1);
    testkit::advance(Duration::from_millis(1_900)).await;
    let _: BatcherCounters = testkit::observe(&batcher).await;
    testkit::settle().await;
    assert_eq!(provider.calls().len(), 1, "Retry-After is honoured");
    testkit::advance(Duration::from_millis(200)).await;
    assert_eq!(answer.await.unwrap().unwrap().len(), 2);
    assert_eq!(provider.calls().len(), 2);
    assert_eq!(
        testkit::observe::<_, BatcherCounters>(&batcher)
            .await
            .retries,
        1
    );
}

#[actix::test]
async fn the_retry_budget_runs_out_with_a_message_that_says_so() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    let unavailable = EmbedError::transient("503 Service Unavailable", None);
    provider.then(vec![ScriptedReply::Fail(unavailable); 4]);
    let started = tokio::time::Instant::now();
    let error = embed(&batcher, texts("a", 2))
        .await
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.message,
        "503 Service Unavailable (gave up after 4 attempts)"
    );
    assert_eq!(provider.calls().len(), 4);
    // Three backoffs of at least 250 ms, 500 ms and 1 s (half of 0.5 s, 1 s, 2 s at worst).
    assert!(
        started.elapsed() >= Duration::from_millis(1_750),
        "{:?}",
        started.elapsed()
    );
}

#[actix::test]
async fn permanent_failures_and_short_answers_fail_at_once() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    provider.then([
        ScriptedReply::Fail(EmbedError::permanent("401 Unauthorized")),
        ScriptedReply::Short,
    ]);
    let error = embed(&batcher, texts("a", 3))
        .await
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.message, "401 Unauthorized");
    let error = embed(&batcher, texts("b", 3))
        .await
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.message,
        "embedding provider returned 2 vectors for 3 texts"
    );
    assert_eq!(provider.calls().len(), 2, "no retry");
}

#[actix::test]
async fn a_panicking_provider_fails_the_request_and_the_batcher_serves_on() {
    testkit::pause();
    let (batcher, provider) = start(limits());
    provider.then([ScriptedReply::Panic("model exploded".into())]);
    let error = embed(&batcher, texts("a", 1))
        .await
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.message, "embedding provider panicked: model exploded");
    assert_eq!(
        embed(&batcher, texts("b", 1))
            .await
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

#[actix::test]
async fn never_more_calls_in_flight_than_allowed() {
    testkit::pause();
    let (batcher, provider) = start(BatchLimits {
        max_inputs: 1,
        max_in_flight: 2,
        ..limits()
    });
    provider.close_gate();
    let answer = embed(&batcher, texts("a", 5)).await;
    testkit::advance(Duration::from_millis(11)).await;
    testkit::settle().await;
    assert_eq!(provider.in_flight(), 2);
    let counters: BatcherCounters = testkit::observe(&batcher).await;
    assert_eq!((counters.in_flight, counters.queued_texts), (2, 3));
    provider.open_gate();
    assert_eq!(answer.await.unwrap().unwrap().len(), 5);
    assert_eq!(provider.max_in_flight_seen(), 2);
}
