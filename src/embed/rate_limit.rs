//! One rate limit for every process that shares a provider key: `embedding.requests_per_minute`
//! and `embedding.tokens_per_minute`, as token buckets that refill continuously (a minute's
//! allowance a minute, holding at most that), the way providers count. A second's allowance is
//! held back ([`HEADROOM`]): the provider counts a call when it arrives, later than it was taken
//! here, and may have wasted refill meanwhile on a full bucket (measured: 50 ms behind after the
//! first call, enough for a 429 where the buckets run dry). The daemons on one Redis
//! share buckets there (`lua/rate_limit.lua`, keyed by the provider's address, key and model),
//! so ten daemons on one OpenAI key meet no 429 storm; the embedded and CLI runs use the same
//! buckets in process. The batcher takes from them before every provider call.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::EmbeddingSettings;

/// The allowance held back, in seconds of refill: what a call's way to the provider may cost.
pub const HEADROOM: f64 = 1.0;

/// How much may be sent a minute; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

impl RateLimits {
    pub fn from_settings(settings: &EmbeddingSettings) -> Self {
        Self {
            requests_per_minute: settings.requests_per_minute,
            tokens_per_minute: settings.tokens_per_minute,
        }
    }

    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Waits until one call of `tokens` tokens may be sent, and takes them.
    ///
    /// Errors: the shared buckets unreachable (Redis down): the caller sends anyway, as a
    /// rate limit is not worth failing work for, and says so.
    async fn acquire(&self, tokens: u64) -> Result<(), String>;
}

/// The buckets' arithmetic, in process: `level` of each at `at`.
#[derive(Debug)]
struct Buckets {
    requests: f64,
    tokens: f64,
    at: Instant,
}

impl Buckets {
    /// Takes a request and `cost` tokens if both buckets hold enough; else the wait. Mirrors
    /// `lua/rate_limit.lua`.
    fn take(&mut self, limits: RateLimits, cost: u64, now: Instant) -> Duration {
        let elapsed_ms = now.saturating_duration_since(self.at).as_secs_f64() * 1000.0;
        let refill = |level: f64, per_minute: u64| {
            (level + elapsed_ms * per_minute as f64 / 60_000.0).min(per_minute as f64)
        };
        let rpm = limits.requests_per_minute.unwrap_or(0);
        let tpm = limits.tokens_per_minute.unwrap_or(0);
        self.requests = refill(self.requests, rpm);
        self.tokens = refill(self.tokens, tpm);
        self.at = now;
        let mut wait_ms: f64 = 0.0;
        let headroom = |per_minute: u64| per_minute as f64 * HEADROOM / 60.0;
        let requests_needed = (1.0 + headroom(rpm)).min(rpm as f64);
        if rpm > 0 && self.requests < requests_needed {
            wait_ms = wait_ms.max((requests_needed - self.requests) * 60_000.0 / rpm as f64);
        }
        let needed = (cost as f64 + headroom(tpm)).min(tpm as f64);
        if tpm > 0 && self.tokens < needed {
            wait_ms = wait_ms.max((needed - self.tokens) * 60_000.0 / tpm as f64);
        }
        if wait_ms == 0.0 {
            self.requests -= 1.0;
            self.tokens -= cost as f64;
        }
        Duration::from_secs_f64(wait_ms.ceil() / 1000.0)
    }
}

/// The buckets of one process.
pub struct LocalLimiter {
    limits: RateLimits,
    buckets: Mutex<Buckets>,
}

impl LocalLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(Buckets {
                requests: limits.requests_per_minute.unwrap_or(0) as f64,
                tokens: limits.tokens_per_minute.unwrap_or(0) as f64,
                at: Instant::now(),
            }),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn acquire(&self, tokens: u64) -> Result<(), String> {
        loop {
            let wait = self.buckets.lock().expect("not poisoned").take(
                self.limits,
                tokens,
                Instant::now(),
            );
            if wait.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The buckets every daemon on one Redis shares.
pub struct RedisLimiter {
    limits: RateLimits,
    con: ConnectionManager,
    key: String,
    script: Script,
}

impl RedisLimiter {
    /// Buckets under `{prefix}:ratelimit:{fingerprint}`, the fingerprint that of the provider's
    /// address, key and model: daemons configured alike share them.
    pub fn new(con: ConnectionManager, prefix: &str, settings: &EmbeddingSettings) -> Self {
        let identity = format!(
            "{}\n{}\n{}",
            settings.base_url,
            settings.api_key.as_deref().unwrap_or_default(),
            settings.model
        );
        Self {
            limits: RateLimits::from_settings(settings),
            con,
            key: format!("{prefix}:ratelimit:{:016x}", xxh3_64(identity.as_bytes())),
            script: Script::new(include_str!("lua/rate_limit.lua")),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(&self, tokens: u64) -> Result<(), String> {
        loop {
            let wait_ms: u64 = self
                .script
                .key(&self.key)
                .arg(self.limits.requests_per_minute.unwrap_or(0))
                .arg(self.limits.tokens_per_minute.unwrap_or(0))
                .arg(tokens)
                .invoke_async(&mut self.con.clone())
                .await
                .map_err(|e| format!("the shared rate limit at {}: {e}", self.key))?;
            if wait_ms == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_minutes_rate_and_hold_at_most_a_minute() {
        let limits = RateLimits {
            requests_per_minute: None,
            tokens_per_minute: Some(6_000),
        };
        let start = Instant::now();
        let mut buckets = Buckets {
            requests: 0.0,
            tokens: 6_000.0,
            at: start,
        };
        // A second's allowance (100) is held back.
        assert_eq!(buckets.take(limits, 5_000, start), Duration::ZERO);
        // 1,000 left; 3,000 more and 100 held back need 2,100 at 100 a second: 21 s.
        assert_eq!(buckets.take(limits, 3_000, start), Duration::from_secs(21));
        assert_eq!(
            buckets.take(limits, 3_000, start + Duration::from_secs(21)),
            Duration::ZERO
        );
        // A call over a bucket's worth waits for a full bucket, then goes into debt.
        let later = start + Duration::from_secs(600);
        assert_eq!(buckets.take(limits, 9_000, later), Duration::ZERO);
        assert_eq!(
            buckets.take(limits, 1, later),
            Duration::from_millis(31_010)
        );
    }

    #[test]
    fn requests_are_counted_too() {
        let limits = RateLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
        };
        let start = Instant::now();
        let mut buckets = Buckets {
            requests: 3.0,
            tokens: 0.0,
            at: start,
        };
        assert_eq!(buckets.take(limits, 100, start), Duration::ZERO);
        assert_eq!(buckets.take(limits, 100, start), Duration::from_secs(0));
        // One left, and one a second held back: a second to wait.
        assert_eq!(buckets.take(limits, 100, start), Duration::from_secs(1));
    }
}
