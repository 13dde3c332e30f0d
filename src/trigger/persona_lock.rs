//! One run per persona at a time across every worker, not only within one: before a task runs a
//! persona, its worker takes the persona's lock in Redis. A lock is held by a worker id and is
//! good while that worker's lease lives, so the lock of a worker that died frees itself when its
//! lease lapses (and its messages are requeued). Within a process the Supervisor already keeps
//! runs of a persona in line, so tasks of one worker share its lock, counted here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::{RedisError, Script};

use super::broker::Broker;

/// Takes the lock unless another worker whose lease lives holds it.
/// KEYS: the lock. ARGV: this worker, the prefix of lease keys.
const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. holder) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// Frees the lock if this worker holds it. KEYS: the lock. ARGV: this worker.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct PersonaLocks {
    broker: Arc<Broker>,
    worker: String,
    /// Tasks of this worker holding each persona's lock.
    held: Mutex<HashMap<String, usize>>,
    acquire: Script,
    release: Script,
}

impl PersonaLocks {
    /// Locks taken by `worker`, in the broker's Redis, next to its leases.
    pub fn new(broker: Arc<Broker>, worker: &str) -> Self {
        Self {
            broker,
            worker: worker.to_owned(),
            held: Mutex::default(),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
        }
    }

    /// Takes the persona's lock for one task; false while another live worker holds it.
    pub async fn try_acquire(&self, persona: &str) -> Result<bool, RedisError> {
        let mut con = self.broker.connection();
        let taken: i64 = self
            .acquire
            .key(self.broker.persona_lock_key(persona))
            .arg(&self.worker)
            .arg(self.broker.lease_key_prefix())
            .invoke_async(&mut con)
            .await?;
        if taken == 1 {
            *self.counts().entry(persona.to_owned()).or_default() += 1;
        }
        Ok(taken == 1)
    }

    /// One task is done with the persona; the lock goes when the last one is.
    pub async fn release(&self, persona: &str) -> Result<(), RedisError> {
        let last = {
            let mut held = self.counts();
            let count = held.entry(persona.to_owned()).or_default();
            *count = count.saturating_sub(1);
            let last = *count == 0;
            if last {
                held.remove(persona);
            }
            last
        };
        if !last {
            return Ok(());
        }
        let mut con = self.broker.connection();
        self.release
            .key(self.broker.persona_lock_key(persona))
            .arg(&self.worker)
            .invoke_async::<i64>(&mut con)
            .await
            .map(|_| ())
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
