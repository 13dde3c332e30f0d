//! The engine's policy for work that failed only for a while: how many times a task whose jobs
//! failed transiently (the embedding provider or the vector store still unavailable after their
//! own per-call retries) is run again, and how long to wait before each run. The trigger
//! re-publishes such a task with a countdown, as Celery's `retry` does; `persona-ingest ingest
//! --retries N` waits in process. Both ask this policy, so they agree.

use std::time::Duration;

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
