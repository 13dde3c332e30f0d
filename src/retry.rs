//! Trying again, in one place. Two levels:
//!
//! - **Calls** (`retry`): one operation (an upsert, a database update, opening a SQLite file, the
//!   provider's start-up probe) tried again with jittered exponential backoff while its error
//!   says so (`Verdict`), within a `Backoff`'s budget (a number of retries or a deadline), with a
//!   server's `Retry-After` honoured. Each retry is counted in `persona_ingest_retries_total{of}`
//!   and the error that ends it says once how many attempts were made (`GaveUp`).
//! - **Tasks** (`RetryPolicy`): how many times a task whose jobs failed transiently (the provider
//!   or the store still away after their calls' retries) is run again, and after how long. The
//!   trigger re-publishes such a task with a countdown, as Celery's `retry` does; `persona-ingest
//!   ingest --retries N` waits in process. Both ask this policy, so they agree.
//!
//! The embedding batcher's calls keep a loop of their own (a failing batch is split to find the
//! input at fault, within a per-caller search budget) but wait by the same `jittered_backoff`.

use std::future::Future;
use std::time::Duration;

/// How long to keep trying a call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// At most this many retries after the first attempt.
    Retries(u32),
    /// Retries while less than this has passed since the first attempt began.
    For(Duration),
    /// Until it succeeds: for writes that must land, bounded by the caller (a shutdown grace).
    Forever,
}

/// Jittered exponential backoff (`jittered_backoff`) within a budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry, doubled for each one after.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    pub budget: Budget,
}

/// What a failure says about trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may pass: try again, after at least `after` if the server asked (`Retry-After`).
    Retry { after: Option<Duration> },
    /// It will not pass by waiting.
    Abort,
}

/// A call's last error, and how many attempts were made.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: u32,
}

impl<E> GaveUp<E> {
    /// Whether retries were made and spent (not an error that aborted at once).
    pub fn retried(&self) -> bool {
        self.attempts > 1
    }

    /// `message`, with how many attempts were made when there were several.
    pub fn context(&self, message: impl std::fmt::Display) -> String {
        match self.attempts {
            0 | 1 => message.to_string(),
            n => format!("{message} (gave up after {n} attempts)"),
        }
    }
}

/// Runs `op` until it succeeds, `verdict` says its error will not pass, or `backoff`'s budget is
/// spent; `on_retry(error, retry number, wait)` is told of each retry before its wait (for a
/// log line or a counter of the caller's). `of` labels the retries in the metrics.
pub async fn retry<T, E, F, Fut>(
    backoff: &Backoff,
    of: &str,
    verdict: impl Fn(&E) -> Verdict,
    mut on_retry: impl FnMut(&E, u32, Duration),
    mut op: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let within = match backoff.budget {
            Budget::Retries(n) => attempts <= n,
            Budget::For(limit) => started.elapsed() < limit,
            Budget::Forever => true,
        };
        let after = match verdict(&error) {
            Verdict::Retry { after } if within => after,
            _ => return Err(GaveUp { error, attempts }),
        };
        let wait = jittered_backoff(backoff.base, attempts, backoff.cap)
            .max(after.unwrap_or_default().min(backoff.cap));
        crate::metrics::METRICS
            .retries
            .with_label_values(&[of])
            .inc();
        on_retry(&error, attempts, wait);
        tokio::time::sleep(wait).await;
    }
}

/// When to run a transiently failing task again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Runs after the first one, at most (`worker.max_retries`).
    pub max_retries: u32,
    /// The wait before the first retry, doubled for each one after (`worker.retry_delay`).
    pub base: Duration,
    /// The longest wait (Celery's `retry_backoff_max`).
    pub cap: Duration,
}

/// The longest wait between two runs of a task (Celery's default `retry_backoff_max`).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

impl RetryPolicy {
    /// No retries at all.
    pub fn never() -> Self {
        Self {
            max_retries: 0,
            base: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// The policy of `worker.max_retries` and `worker.retry_delay` (seconds).
    pub fn from_settings(worker: &crate::config::WorkerSettings) -> Self {
        Self {
            max_retries: worker.max_retries,
            base: Duration::from_secs_f64(worker.retry_delay),
            cap: MAX_RETRY_DELAY,
        }
    }

    /// The wait before retry number `retry` (1 for the first), jittered; `None` once the
    /// retries are spent.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        (retry >= 1 && retry <= self.max_retries)
            .then(|| jittered_backoff(self.base, retry, self.cap))
    }
}

/// The wait before retry number `attempt` (1-based): `base` doubled each time, at most `cap`,
/// with jitter in [50%, 100%] so that callers failing together do not retry together.
pub fn jittered_backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let exponential = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exponential.min(cap).mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(budget: Budget) -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            budget,
        }
    }

    /// An operation failing with `errors` in turn, then answering how many calls it took.
    fn failing(
        errors: Vec<&'static str>,
    ) -> impl FnMut() -> std::future::Ready<Result<usize, &'static str>> {
        let mut calls = 0;
        move || {
            let n = calls;
            calls += 1;
            std::future::ready(errors.get(n).map_or(Ok(n), |e| Err(*e)))
        }
    }

    fn transient(e: &&str) -> Verdict {
        match *e {
            "busy" => Verdict::Retry { after: None },
            "slow down" => Verdict::Retry {
                after: Some(Duration::from_secs(5)),
            },
            _ => Verdict::Abort,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_tried_again_while_its_error_passes_and_the_budget_lasts() {
        let op = failing(vec!["busy", "busy"]);
        let mut told = Vec::new();
        let done = retry(
            &quick(Budget::Retries(2)),
            "test",
            transient,
            |e, n, _| told.push((e.to_string(), n)),
            op,
        )
        .await;
        assert_eq!(done.unwrap(), 2);
        assert_eq!(told, vec![("busy".into(), 1), ("busy".into(), 2)]);

        // One retry fewer: the last error, with the attempts made.
        let op = failing(vec!["busy", "busy"]);
        let gave_up = retry(
            &quick(Budget::Retries(1)),
            "test",
            transient,
            |_, _, _| {},
            op,
        )
        .await
        .unwrap_err();
        assert_eq!((gave_up.error, gave_up.attempts), ("busy", 2));
        assert_eq!(
            gave_up.context("store down"),
            "store down (gave up after 2 attempts)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_that_will_not_pass_ends_at_once_and_retry_after_is_honoured() {
        let gave_up = retry(
            &quick(Budget::Retries(5)),
            "test",
            transient,
            |_, _, _| panic!("no retry"),
            || async { Err::<(), _>("bad request") },
        )
        .await
        .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.retried()), (1, false));
        assert_eq!(gave_up.context("bad request"), "bad request");

        // Asked to wait 5 s: the wait is the server's, within the cap (1 s here).
        let mut waits = Vec::new();
        let calls = std::cell::Cell::new(0);
        let _ = retry(
            &quick(Budget::Retries(1)),
            "test",
            transient,
            |_, _, wait| waits.push(wait),
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>("slow down") }
            },
        )
        .await;
        assert_eq!(waits, vec![Duration::from_secs(1)]);
        assert_eq!(calls.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_budget_retries_until_it_has_passed() {
        let started = tokio::time::Instant::now();
        let calls = std::cell::Cell::new(0);
        let gave_up = retry(
            &quick(Budget::For(Duration::from_secs(3))),
            "test",
            transient,
            |_, _, _| {},
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>("busy") }
            },
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(gave_up.attempts as usize, calls.get());
        assert!(calls.get() > 3);
    }

    #[test]
    fn retries_double_up_to_the_cap_and_stop_when_spent() {
        let policy = RetryPolicy {
            max_retries: 3,
            base: Duration::from_secs(10),
            cap: Duration::from_secs(15),
        };
        assert_eq!(policy.delay(0), None);
        let first = policy.delay(1).unwrap();
        assert!(first >= Duration::from_secs(5) && first <= Duration::from_secs(10));
        let third = policy.delay(3).unwrap();
        assert!(third >= Duration::from_millis(7500) && third <= Duration::from_secs(15));
        assert_eq!(policy.delay(4), None);
        assert_eq!(RetryPolicy::never().delay(1), None);
    }
}
