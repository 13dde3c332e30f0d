//! One batch's way through the provider, off the batcher's thread: the call, tried again while the
//! provider is away or failing (backoff with jitter, honouring `Retry-After`); cut to the size the
//! server states (else halved) when it says the batch is too large, or halved when it keeps timing
//! out, the smaller size kept in the shared cap for the process;
//! and, when the call keeps failing in a way an input may cause (Ollama's 500 "unsupported value:
//! NaN", a 400 for one overlong text), its inputs tried in halves until the one at fault stands
//! alone. Only that input's result is an error; the others get their vectors.
//!
//! A server failure (500) is blamed on an input only if some call succeeded meanwhile, anywhere in
//! the process; else the server is failing, and the batch's callers get its error, to be retried
//! as transient. Halving spends about log2(n) calls: when the first half of a failing range embeds, the second
//! is known to hold the fault and is split without being called whole. Calls made while looking
//! for the input are tried once (the provider is retried only while it is unavailable), and are
//! bounded, so a provider that fails everything cannot cost a call an input.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::BatchLimits;
use crate::actors::panic_message;
use crate::embed::rate_limit::RateLimiter;
use crate::embed::{EmbedError, EmbeddingProvider, Failure};

/// Each text's vector or the error that stands for it; an error with `input` set was proven to
/// be that text's own (its position in the call).
pub type Results = Vec<Result<Vec<f32>, EmbedError>>;

/// What a batch cost.
#[derive(Debug, Default)]
pub struct Spent {
    /// Calls made, each counted once however often it was retried.
    pub calls: u64,
    pub retries: u64,
    /// Calls made after the server said the batch was too large.
    pub split_calls: u64,
    /// Calls made looking for the input at fault.
    pub isolation_calls: u64,
}

/// The provider with the batcher's limits and the process-wide cap on inputs a call.
#[derive(Clone)]
pub struct Caller {
    pub provider: Arc<dyn EmbeddingProvider>,
    pub limits: BatchLimits,
    /// The most inputs a call may carry: lowered, never raised, when the server says "too large".
    pub cap: Arc<AtomicUsize>,
    /// Calls that succeeded, in the whole process: a server failure is blamed on an input only
    /// if some call succeeded meanwhile (else the server is failing, not the input).
    pub successes: Arc<AtomicU64>,
    /// The provider's rate limits, taken from before every call.
    pub limiter: Option<Arc<dyn RateLimiter>>,
}

struct Run<'a> {
    texts: &'a [String],
    out: Vec<Option<Result<Vec<f32>, EmbedError>>>,
    spent: Spent,
    /// Calls in a row that failed while looking for inputs at fault: past `give_up_after`, the
    /// provider is failing, not the inputs, and what is left fails with `searched_for`.
    failures_in_a_row: u64,
    give_up_after: u64,
    /// The failure that started the search.
    searched_for: Option<EmbedError>,
}

/// How a call is tried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The batch as the batcher made it (or cut to the server's size): retried while the
    /// provider is unavailable or failing, up to `max_retries`.
    Full,
    /// Part of a batch, while looking for the input at fault: a server failure is not retried.
    Search,
    /// One input alone, before it is blamed: a server failure is retried up to
    /// [`SOLO_RETRIES`] times, so that a server failing for a while blames no one.
    Solo,
}

/// Retries of one input alone before a server failure is blamed on it.
const SOLO_RETRIES: u32 = 2;

impl Caller {
    /// Embeds `texts` (at most the cap), as well as the provider allows: see the module.
    pub async fn embed(&self, texts: &[String]) -> (Results, Spent) {
        let n = texts.len();
        let mut run = Run {
            texts,
            out: vec![None; n],
            spent: Spent::default(),
            failures_in_a_row: 0,
            give_up_after: 2 * u64::from(usize::BITS - n.leading_zeros()) + 2,
            searched_for: None,
        };
        let successes_before = self.successes.load(Ordering::SeqCst);
        self.solve(&mut run, 0, n, None, true).await;
        let server_failing = self.successes.load(Ordering::SeqCst) == successes_before;
        let results = run
            .out
            .into_iter()
            .map(|r| match r.expect("every input answered") {
                // No call succeeded anywhere meanwhile: the server fails, not these inputs.
                Err(e) if server_failing && e.failure == Failure::ServerFailed => Err(EmbedError {
                    input: None,
                    ..run.searched_for.clone().unwrap_or(e)
                }),
                other => other,
            })
            .collect();
        (results, run.spent)
    }

    /// Answers `run.texts[start..end]`. `known` is the error this range was already proven to
    /// fail with, so it is split without a call (an input alone is always called before it is
    /// blamed); `full` marks the batch as made, retried in full.
    fn solve<'a>(
        &'a self,
        run: &'a mut Run<'_>,
        start: usize,
        end: usize,
        known: Option<EmbedError>,
        full: bool,
    ) -> BoxFuture<'a, ()> {
        async move {
            let alone = end - start == 1;
            let error = match known {
                Some(error) if !alone => error,
                _ => {
                    if let (false, true, Some(error)) = (
                        full,
                        run.failures_in_a_row >= run.give_up_after,
                        run.searched_for.clone(),
                    ) {
                        fill(run, start, end, error, false);
                        return;
                    }
                    let mode = match (full, alone) {
                        (true, _) => Mode::Full,
                        (false, true) => Mode::Solo,
                        (false, false) => Mode::Search,
                    };
                    match self.call(run, start, end, mode).await {
                        Ok(()) => return,
                        Err(e)
                            if matches!(e.failure, Failure::BatchTooLarge | Failure::TimedOut)
                                && !alone =>
                        {
                            // The size the server states (text-embeddings-inference does), else half.
                            let size = crate::embed::stated_batch_limit(&e.message)
                                .unwrap_or((end - start).div_ceil(2))
                                .clamp(1, end - start - 1);
                            let before = self.cap.fetch_min(size, Ordering::SeqCst);
                            if size < before {
                                tracing::warn!(
                                    cap = size,
                                    "the embedding server takes fewer inputs a call (or answers \
                                     fewer within embedding.timeout_secs): {}",
                                    e.message
                                );
                            }
                            for piece in (start..end).step_by(size) {
                                run.spent.split_calls += 1;
                                self.solve(run, piece, (piece + size).min(end), None, full)
                                    .await;
                            }
                            return;
                        }
                        Err(e) if e.failure == Failure::BatchTooLarge => {
                            let message = format!("too large for the server even alone: {e}");
                            fill(
                                run,
                                start,
                                end,
                                EmbedError::new(Failure::Refused, message),
                                true,
                            );
                            return;
                        }
                        Err(e) if e.may_be_an_input() && alone => {
                            fill(run, start, end, e, true);
                            return;
                        }
                        Err(e) if e.may_be_an_input() => {
                            run.searched_for.get_or_insert_with(|| e.clone());
                            e
                        }
                        Err(e) => {
                            fill(run, start, end, e, false);
                            return;
                        }
                    }
                }
            };
            let mid = start + (end - start) / 2;
            self.solve(run, start, mid, None, false).await;
            let first_half_embedded = run.out[start..mid].iter().all(|r| matches!(r, Some(Ok(_))));
            let second = first_half_embedded.then_some(error);
            self.solve(run, mid, end, second, false).await;
        }
        .boxed()
    }

    /// One call for `run.texts[start..end]`, tried again while the provider is unavailable (and,
    /// if `full`, while it fails); its vectors checked and put in `run.out`. A vector of NaN or
    /// infinity is that input's error alone.
    async fn call(
        &self,
        run: &mut Run<'_>,
        start: usize,
        end: usize,
        mode: Mode,
    ) -> Result<(), EmbedError> {
        let texts = run.texts[start..end].to_vec();
        let expected = texts.len();
        let dimension = self.provider.dimension();
        let metrics = &crate::metrics::METRICS;
        metrics.embedding_batch_size.observe(expected as f64);
        let timer = metrics.embedding_latency.start_timer();
        let mut retries: u32 = 0;
        run.spent.calls += 1;
        if mode != Mode::Full {
            run.spent.isolation_calls += 1;
        }
        let tokens: u64 = match &self.limiter {
            Some(_) => {
                let counter = self.provider.token_counter();
                texts.iter().map(|t| counter.count(t) as u64).sum()
            }
            None => 0,
        };
        let outcome = loop {
            if let Some(limiter) = &self.limiter {
                if let Err(e) = limiter.acquire(tokens).await {
                    tracing::warn!("sending without the rate limit: {e}");
                }
            }
            let attempt = std::panic::AssertUnwindSafe(self.provider.embed(texts.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(EmbedError::permanent(format!(
                        "embedding provider panicked: {}",
                        panic_message(&*panic)
                    )))
                })
                .and_then(|vectors| check(vectors, expected, dimension));
            let budget = match (&attempt, mode) {
                (Err(e), _) if matches!(e.failure, Failure::Unavailable | Failure::TimedOut) => {
                    self.limits.max_retries
                }
                (Err(e), Mode::Full) if e.failure == Failure::ServerFailed => {
                    self.limits.max_retries
                }
                (Err(e), Mode::Solo) if e.failure == Failure::ServerFailed => {
                    SOLO_RETRIES.min(self.limits.max_retries)
                }
                _ => 0,
            };
            let retry = budget > 0;
            match attempt {
                Err(e) if retry && retries < budget => {
                    retries += 1;
                    run.spent.retries += 1;
                    metrics.retries.with_label_values(&["embedding"]).inc();
                    tokio::time::sleep(self.limits.backoff(retries, e.retry_after)).await;
                }
                Err(e) if retry => {
                    let message = format!("{} (gave up after {} attempts)", e.message, retries + 1);
                    break Err(EmbedError { message, ..e });
                }
                other => break other,
            }
        };
        timer.observe_duration();
        match outcome {
            Ok(vectors) => {
                self.successes.fetch_add(1, Ordering::SeqCst);
                run.failures_in_a_row = 0;
                metrics.embedding_calls.with_label_values(&["ok"]).inc();
                metrics.chunks_embedded.inc_by(expected as u64);
                for (slot, vector) in run.out[start..end].iter_mut().zip(vectors) {
                    *slot = Some(if vector.len() != dimension {
                        Err(EmbedError::new(
                            Failure::Refused,
                            format!(
                                "the provider answered a vector of dimension {} for this input, \
                                 not {dimension}",
                                vector.len()
                            ),
                        ))
                    } else if vector.iter().all(|x| x.is_finite()) {
                        Ok(vector)
                    } else {
                        Err(EmbedError::new(
                            Failure::Refused,
                            "the provider answered a vector holding NaN or infinity",
                        ))
                    });
                }
                for (i, slot) in run.out[start..end].iter_mut().enumerate() {
                    if let Some(Err(e)) = slot {
                        e.input = Some(start + i);
                    }
                }
                Ok(())
            }
            Err(e) => {
                if mode != Mode::Full {
                    run.failures_in_a_row += 1;
                }
                metrics.embedding_calls.with_label_values(&["error"]).inc();
                Err(e)
            }
        }
    }
}

/// The answer fits the call: one vector a text, not all of another size than the provider's.
fn check(
    vectors: Vec<Vec<f32>>,
    expected: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if vectors.len() != expected {
        return Err(EmbedError::permanent(format!(
            "embedding provider returned {} vectors for {expected} texts",
            vectors.len()
        )));
    }
    // Every vector of another size is the configuration's fault; some only, those inputs'.
    if let Some(bad) = vectors
        .iter()
        .find(|v| v.len() != dimension)
        .filter(|_| vectors.iter().all(|v| v.len() != dimension))
    {
        return Err(EmbedError::permanent(format!(
            "embedding provider returned a vector of dimension {}, expected {dimension}",
            bad.len()
        )));
    }
    Ok(vectors)
}

/// Answers every input of the range with `error`; `isolated` when the range is one input proven
/// to be the cause.
fn fill(run: &mut Run<'_>, start: usize, end: usize, error: EmbedError, isolated: bool) {
    for (i, slot) in run.out[start..end].iter_mut().enumerate() {
        let mut error = error.clone();
        if isolated {
            error.input = Some(start + i);
        }
        *slot = Some(Err(error));
    }
}
