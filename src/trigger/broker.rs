//! The Redis side of the trigger, where no message may be lost or taken twice: a message moves
//! atomically from its queue into this worker's in-flight list and leaves it only when it is
//! acknowledged (its result recorded), dead-lettered with a reason, or requeued. A worker holds
//! a lease it renews while it lives; the in-flight messages of a worker whose lease lapsed are
//! put back where they came from, at the head of the line.
//!
//! Queues are read as Celery's Redis transport writes them: `LPUSH` to a list per queue and
//! priority step (`celery`, `celery\x06\x163`, `...6`, `...9`), served oldest first, highest
//! priority (lowest number) first.
//!
//! Messages are bytes: a message that is not UTF-8 (or not JSON) is taken, dead-lettered and
//! requeued like any other. The Lua scripts are in `lua/`, each with its KEYS and ARGV.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use serde_json::{json, Value};

use super::celery::priority_queue;
pub use super::ports::Delivery;
use super::ports::{BrokerError, Queue};

/// The longest a fetch blocks on an empty queue.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

/// Celery's priority steps on Redis, served in this order.
pub(super) const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

pub struct Broker {
    con: ConnectionManager,
    /// A connection of its own for BLMOVE: a blocking command holds up every other command
    /// multiplexed on its connection.
    blocking: ConnectionManager,
    /// Prefix of the engine's own keys (in-flight lists, leases, dead letters).
    prefix: String,
    /// The lists to serve, in order: every queue's priority 0 list first, and so on.
    lists: Vec<String>,
    default_queue: String,
    fetch: Script,
    move_back: Script,
    dead_letter: Script,
    republish: Script,
}

impl Broker {
    pub async fn connect(url: &str, prefix: &str, queues: &[String]) -> Result<Self, RedisError> {
        let client = crate::urls::redis::client(url).map_err(|e| {
            RedisError::from((redis::ErrorKind::InvalidClientConfig, "redis.url", e))
        })?;
        let con = ConnectionManager::new(client.clone()).await?;
        let blocking = ConnectionManager::new_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_response_timeout(Some(MAX_BLOCK + Duration::from_secs(5))),
        )
        .await?;
        let lists = PRIORITY_STEPS
            .iter()
            .flat_map(|step| queues.iter().map(move |q| priority_queue(q, *step)))
            .collect();
        Ok(Self {
            con,
            blocking,
            prefix: prefix.to_owned(),
            lists,
            default_queue: queues.first().cloned().unwrap_or_else(|| "celery".into()),
            fetch: Script::new(include_str!("lua/fetch.lua")),
            move_back: Script::new(include_str!("lua/move_back.lua")),
            dead_letter: Script::new(include_str!("lua/dead_letter.lua")),
            republish: Script::new(include_str!("lua/republish.lua")),
        })
    }

    pub fn inflight_key(&self, worker: &str) -> String {
        format!("{}:inflight:{worker}", self.prefix)
    }

    pub(super) fn lease_key(&self, worker: &str) -> String {
        format!("{}{worker}", self.lease_key_prefix())
    }

    /// What every lease key starts with, the worker id following.
    pub fn lease_key_prefix(&self) -> String {
        format!("{}:lease:", self.prefix)
    }

    /// The key of a persona's lock (see `persona_lock`).
    pub fn persona_lock_key(&self, persona: &str) -> String {
        format!("{}:persona-lock:{persona}", self.prefix)
    }

    /// A sorted set: revoked task ids, scored by when they are forgotten (epoch seconds).
    pub(super) fn revoked_key(&self) -> String {
        format!("{}:revoked", self.prefix)
    }

    pub(super) fn workers_key(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    pub fn dead_letters_key(&self) -> String {
        format!("{}:dead-letters", self.prefix)
    }

    /// A connection to the broker's Redis, for sending messages.
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut con = self.con.clone();
        redis::cmd("PING").query_async::<()>(&mut con).await
    }

    /// How many messages are dead-lettered, and the newest `limit` of their entries (JSON
    /// objects, read as text whatever bytes another writer may have put there).
    pub async fn dead_letters(&self, limit: usize) -> Result<(u64, Vec<String>), RedisError> {
        let (total, newest) = self.newest_dead_letters(limit).await?;
        let newest = newest
            .into_iter()
            .map(|entry| String::from_utf8_lossy(&entry).into_owned())
            .collect();
        Ok((total, newest))
    }

    /// How many messages are dead-lettered, and the newest `limit` entries as stored.
    async fn newest_dead_letters(&self, limit: usize) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
        let mut con = self.con.clone();
        let key = self.dead_letters_key();
        redis::pipe()
            .cmd("LLEN")
            .arg(&key)
            .cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut con)
            .await
    }

    /// Requeues one worker's in-flight messages (see `Queue::requeue`).
    async fn requeue_worker(&self, worker: &str) -> Result<usize, RedisError> {
        let mut con = self.con.clone();
        let inflight = self.inflight_key(worker);
        let messages: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&inflight)
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await?;
        let mut moved = 0;
        // The in-flight list holds the newest first: the oldest goes back last, to the very end.
        for raw in messages {
            let queue = self.queue_of(&raw);
            let done: i64 = self
                .move_back
                .key(&inflight)
                .key(queue)
                .arg(&raw)
                .invoke_async(&mut con)
                .await?;
            moved += done as usize;
        }
        Ok(moved)
    }

    /// The list a message goes back to: its routing key and priority, or the default queue for
    /// a message too broken to say.
    pub(super) fn queue_of(&self, raw: &[u8]) -> String {
        let envelope: Option<Value> = serde_json::from_slice(raw).ok();
        let properties = envelope.as_ref().and_then(|e| e.get("properties"));
        let queue = properties
            .and_then(|p| p.pointer("/delivery_info/routing_key"))
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
            .unwrap_or(&self.default_queue);
        let priority = properties
            .and_then(|p| p.get("priority"))
            .and_then(Value::as_u64)
            .map_or(0, |p| p.min(9) as u8);
        priority_queue(queue, priority)
    }
}

/// A dead letter's entry: why, where from, and the message itself, as text when it is UTF-8 and
/// always as base64 of its raw bytes (`raw`), so that nothing of it is lost.
pub fn dead_letter_entry(worker: &str, delivery: &Delivery, reason: &str) -> String {
    json!({
        "reason": reason,
        "queue": delivery.queue,
        "worker": worker,
        "at": chrono::Utc::now().to_rfc3339(),
        "message": std::str::from_utf8(&delivery.raw).ok(),
        "raw": BASE64.encode(&delivery.raw),
    })
    .to_string()
}

#[async_trait]
impl Queue for Broker {
    async fn fetch(&self, worker: &str, block: Duration) -> Result<Option<Delivery>, BrokerError> {
        let mut con = self.con.clone();
        let inflight = self.inflight_key(worker);
        let mut invocation = self.fetch.prepare_invoke();
        for list in &self.lists {
            invocation.key(list);
        }
        invocation.key(&inflight);
        let taken: Option<(String, Vec<u8>)> = invocation.invoke_async(&mut con).await?;
        if let Some((queue, raw)) = taken {
            return Ok(Some(Delivery { queue, raw }));
        }
        // Nothing anywhere: block on the default queue's own list for a while.
        let mut blocking = self.blocking.clone();
        let raw: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(&self.default_queue)
            .arg(&inflight)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(block.min(MAX_BLOCK).as_secs_f64())
            .query_async(&mut blocking)
            .await?;
        Ok(raw.map(|raw| Delivery {
            queue: self.default_queue.clone(),
            raw,
        }))
    }

    async fn ack(&self, worker: &str, delivery: &Delivery) -> Result<(), BrokerError> {
        let mut con = self.con.clone();
        redis::cmd("LREM")
            .arg(self.inflight_key(worker))
            .arg(1)
            .arg(&delivery.raw)
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        worker: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let entry = dead_letter_entry(worker, delivery, reason);
        let mut con = self.con.clone();
        self.dead_letter
            .key(self.inflight_key(worker))
            .key(self.dead_letters_key())
            .arg(&delivery.raw)
            .arg(entry)
            .invoke_async::<i64>(&mut con)
            .await?;
        Ok(())
    }

    async fn republish(
        &self,
        worker: &str,
        delivery: &Delivery,
        again: &[u8],
    ) -> Result<(), BrokerError> {
        let mut con = self.con.clone();
        self.republish
            .key(self.inflight_key(worker))
            .key(&delivery.queue)
            .arg(&delivery.raw)
            .arg(again)
            .invoke_async::<i64>(&mut con)
            .await?;
        Ok(())
    }

    async fn publish(&self, list: &str, raw: &[u8]) -> Result<(), BrokerError> {
        let mut con = self.con.clone();
        redis::cmd("LPUSH")
            .arg(list)
            .arg(raw)
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    async fn requeue(&self, worker: &str) -> Result<usize, BrokerError> {
        Ok(self.requeue_worker(worker).await?)
    }

    /// One worker whose messages cannot be moved (Redis refusing a command on its list) does
    /// not keep the others' from going back: each is tried, the first error reported after.
    async fn requeue_orphans(&self) -> Result<usize, BrokerError> {
        let mut con = self.con.clone();
        let workers: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(self.workers_key())
            .query_async(&mut con)
            .await?;
        let mut moved = 0;
        let mut first_error = None;
        for worker in workers {
            let name = String::from_utf8_lossy(&worker).into_owned();
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.lease_key(&name))
                .query_async(&mut con)
                .await?;
            if alive {
                continue;
            }
            match self.requeue_worker(&name).await {
                Ok(n) => {
                    moved += n;
                    redis::cmd("SREM")
                        .arg(self.workers_key())
                        .arg(&worker)
                        .query_async::<()>(&mut con)
                        .await?;
                }
                Err(e) => {
                    tracing::warn!(worker = %name, "requeueing a dead worker's messages failed: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if moved == 0 => Err(e.into()),
            _ => Ok(moved),
        }
    }

    async fn renew_lease(&self, worker: &str, lease: Duration) -> Result<(), BrokerError> {
        let mut con = self.con.clone();
        redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(self.workers_key())
            .arg(worker)
            .ignore()
            .cmd("SET")
            .arg(self.lease_key(worker))
            .arg(1)
            .arg("PX")
            .arg(lease.as_millis() as u64)
            .ignore()
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    async fn retire(&self, worker: &str) -> Result<(), BrokerError> {
        let mut con = self.con.clone();
        redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.lease_key(worker))
            .ignore()
            .cmd("SREM")
            .arg(self.workers_key())
            .arg(worker)
            .ignore()
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }
}

mod control;
mod dead_letters;
mod overview;

pub use dead_letters::{DeadLetter, Settle};
pub use overview::{BrokerOverview, InFlight, QueueLength, WorkerState};
