//! One run per persona at a time across every worker, not only within one: before a task runs a
//! persona, its worker takes the persona's lock in Redis. A lock is held by a worker id and is
//! good while that worker's lease lives, so the lock of a worker that died frees itself when its
//! lease lapses (and its messages are requeued). Within a process the Supervisor already keeps
//! runs of a persona in line, so tasks of one worker share its lock, counted here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redis::Script;

use super::broker::Broker;
use super::ports::{BrokerError, Locks};

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
            acquire: Script::new(include_str!("lua/lock_acquire.lua")),
            release: Script::new(include_str!("lua/lock_release.lua")),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Locks for PersonaLocks {
    async fn try_acquire(&self, persona: &str) -> Result<bool, BrokerError> {
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

    /// The lock goes when the last task of this worker holding it is done.
    async fn release(&self, persona: &str) -> Result<(), BrokerError> {
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
            .await?;
        Ok(())
    }
}
