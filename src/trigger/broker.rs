//! The Redis side of the trigger, where no message may be lost or taken twice: a message moves
//! atomically from its queue into this worker's in-flight list and leaves it only when it is
//! acknowledged (its result recorded), dead-lettered with a reason, or requeued. A worker holds
//! a lease it renews while it lives; the in-flight messages of a worker whose lease lapsed are
//! put back where they came from, at the head of the line.
//!
//! Queues are read as Celery's Redis transport writes them: `LPUSH` to a list per queue and
//! priority step (`celery`, `celery\x06\x163`, `...6`, `...9`), served oldest first, highest
//! priority (lowest number) first.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use serde::Serialize;
use serde_json::{json, Value};

use super::celery::priority_queue;

/// The longest a fetch blocks on an empty queue.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

/// Celery's priority steps on Redis, served in this order.
const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// Takes the oldest message of the first non-empty list into the in-flight list.
/// KEYS: the lists in the order to serve them, then the in-flight list.
const FETCH: &str = r#"
for i = 1, #KEYS - 1 do
  local message = redis.call('LMOVE', KEYS[i], KEYS[#KEYS], 'RIGHT', 'LEFT')
  if message then return {KEYS[i], message} end
end
return false
"#;

/// Moves one message from a list to the head of the line of another, if it is still there.
/// KEYS: from, to. ARGV: the message.
const MOVE_BACK: &str = r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

/// Dead-letters a message that is in flight. KEYS: in-flight, dead letters. ARGV: message, entry.
const DEAD_LETTER: &str = r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"#;

/// What the broker holds, for `status` and the HTTP API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BrokerOverview {
    /// Messages waiting in each served queue (its priority lists together).
    pub queues: Vec<QueueLength>,
    pub workers: Vec<WorkerState>,
    pub dead_letters: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueLength {
    pub queue: String,
    pub waiting: u64,
}

/// A worker known to the broker: whether its lease holds, and the messages it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerState {
    pub worker: String,
    /// Milliseconds left on its lease; `None` when it lapsed (its messages will be requeued).
    pub lease_left_ms: Option<u64>,
    pub in_flight: Vec<InFlight>,
}

/// One in-flight message, as far as it can be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub task_id: Option<String>,
    pub task: Option<String>,
    pub queue: String,
}

/// A message taken from a queue, now in this worker's in-flight list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The list it came from.
    pub queue: String,
    pub raw: String,
}

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
}

impl Broker {
    pub async fn connect(url: &str, prefix: &str, queues: &[String]) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
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
            fetch: Script::new(FETCH),
            move_back: Script::new(MOVE_BACK),
            dead_letter: Script::new(DEAD_LETTER),
        })
    }

    pub fn inflight_key(&self, worker: &str) -> String {
        format!("{}:inflight:{worker}", self.prefix)
    }

    fn lease_key(&self, worker: &str) -> String {
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

    fn workers_key(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    pub fn dead_letters_key(&self) -> String {
        format!("{}:dead-letters", self.prefix)
    }

    /// Takes (or renews) the worker's lease for `lease`; a worker that stops renewing it is
    /// taken for dead once it lapses.
    pub async fn renew_lease(&self, worker: &str, lease: Duration) -> Result<(), RedisError> {
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
            .await
    }

    /// A worker leaving with nothing in flight: its lease and its name go.
    pub async fn retire(&self, worker: &str) -> Result<(), RedisError> {
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
            .await
    }

    /// The next message, waiting up to `block` for one; it is in the worker's in-flight list.
    pub async fn fetch(
        &self,
        worker: &str,
        block: Duration,
    ) -> Result<Option<Delivery>, RedisError> {
        let mut con = self.con.clone();
        let inflight = self.inflight_key(worker);
        let mut invocation = self.fetch.prepare_invoke();
        for list in &self.lists {
            invocation.key(list);
        }
        invocation.key(&inflight);
        let taken: Option<(String, String)> = invocation.invoke_async(&mut con).await?;
        if let Some((queue, raw)) = taken {
            return Ok(Some(Delivery { queue, raw }));
        }
        // Nothing anywhere: block on the default queue's own list for a while.
        let mut blocking = self.blocking.clone();
        let raw: Option<String> = redis::cmd("BLMOVE")
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

    /// Done with: its result is recorded.
    pub async fn ack(&self, worker: &str, delivery: &Delivery) -> Result<(), RedisError> {
        let mut con = self.con.clone();
        redis::cmd("LREM")
            .arg(self.inflight_key(worker))
            .arg(1)
            .arg(&delivery.raw)
            .query_async::<()>(&mut con)
            .await
    }

    /// Never to be run: kept in the dead letters with the reason.
    pub async fn dead_letter(
        &self,
        worker: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), RedisError> {
        let entry = json!({
            "reason": reason,
            "queue": delivery.queue,
            "worker": worker,
            "at": chrono::Utc::now().to_rfc3339(),
            "message": delivery.raw,
        })
        .to_string();
        let mut con = self.con.clone();
        self.dead_letter
            .key(self.inflight_key(worker))
            .key(self.dead_letters_key())
            .arg(&delivery.raw)
            .arg(entry)
            .invoke_async::<i64>(&mut con)
            .await
            .map(|_| ())
    }

    /// Puts every message in the worker's in-flight list back at the head of its queue, oldest
    /// first, so it is served next; answers how many.
    pub async fn requeue(&self, worker: &str) -> Result<usize, RedisError> {
        let mut con = self.con.clone();
        let inflight = self.inflight_key(worker);
        let messages: Vec<String> = redis::cmd("LRANGE")
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

    /// Requeues the in-flight messages of every worker whose lease lapsed, and forgets them.
    pub async fn requeue_orphans(&self) -> Result<usize, RedisError> {
        let mut con = self.con.clone();
        let workers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.workers_key())
            .query_async(&mut con)
            .await?;
        let mut moved = 0;
        for worker in workers {
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.lease_key(&worker))
                .query_async(&mut con)
                .await?;
            if alive {
                continue;
            }
            moved += self.requeue(&worker).await?;
            redis::cmd("SREM")
                .arg(self.workers_key())
                .arg(&worker)
                .query_async::<()>(&mut con)
                .await?;
        }
        Ok(moved)
    }

    /// A connection to the broker's Redis, for sending messages.
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut con = self.con.clone();
        redis::cmd("PING").query_async::<()>(&mut con).await
    }

    /// How many messages are dead-lettered, and the newest `limit` of them.
    pub async fn dead_letters(&self, limit: usize) -> Result<(u64, Vec<String>), RedisError> {
        let mut con = self.con.clone();
        let key = self.dead_letters_key();
        let (total, newest): (u64, Vec<String>) = redis::pipe()
            .cmd("LLEN")
            .arg(&key)
            .cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut con)
            .await?;
        Ok((total, newest))
    }

    /// Queue lengths, workers with their leases and in-flight messages, dead letters.
    pub async fn overview(&self, queues: &[String]) -> Result<BrokerOverview, RedisError> {
        let mut con = self.con.clone();
        let mut overview = BrokerOverview::default();
        for queue in queues {
            let mut waiting = 0;
            for step in PRIORITY_STEPS {
                let n: u64 = redis::cmd("LLEN")
                    .arg(priority_queue(queue, step))
                    .query_async(&mut con)
                    .await?;
                waiting += n;
            }
            overview.queues.push(QueueLength {
                queue: queue.clone(),
                waiting,
            });
        }
        let mut workers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.workers_key())
            .query_async(&mut con)
            .await?;
        workers.sort();
        for worker in workers {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(self.lease_key(&worker))
                .query_async(&mut con)
                .await?;
            let messages: Vec<String> = redis::cmd("LRANGE")
                .arg(self.inflight_key(&worker))
                .arg(0)
                .arg(-1)
                .query_async(&mut con)
                .await?;
            let in_flight = messages
                .iter()
                .map(|raw| {
                    let headers = serde_json::from_str::<Value>(raw)
                        .ok()
                        .and_then(|v| v.get("headers").cloned());
                    let header = |name: &str| {
                        headers
                            .as_ref()
                            .and_then(|h| h.get(name))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    };
                    InFlight {
                        task_id: header("id"),
                        task: header("task"),
                        queue: self.queue_of(raw),
                    }
                })
                .collect();
            overview.workers.push(WorkerState {
                worker,
                lease_left_ms: u64::try_from(ttl).ok(),
                in_flight,
            });
        }
        overview.dead_letters = redis::cmd("LLEN")
            .arg(self.dead_letters_key())
            .query_async(&mut con)
            .await?;
        Ok(overview)
    }

    /// The list a message goes back to: its routing key and priority, or the default queue for
    /// a message too broken to say.
    fn queue_of(&self, raw: &str) -> String {
        let envelope: Option<Value> = serde_json::from_str(raw).ok();
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
