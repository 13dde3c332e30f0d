//! What the broker holds, read for `persona-ingest status`, `/metrics` and the dashboard: queue
//! lengths, workers with their leases and in-flight messages (any bytes), dead letters.

use redis::RedisError;
use serde::Serialize;
use serde_json::Value;

use super::{Broker, PRIORITY_STEPS};
use crate::trigger::celery::priority_queue;

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
    /// `[priority step, waiting]` for each of Celery's steps (0, 3, 6, 9), served in this order.
    pub by_priority: Vec<(u8, u64)>,
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
    /// When it is due, if it is held for a countdown.
    pub eta: Option<String>,
    /// Its size; what cannot be read is shown by size alone.
    pub bytes: usize,
}

impl Broker {
    /// Queue lengths, workers with their leases and in-flight messages, dead letters.
    pub async fn overview(&self, queues: &[String]) -> Result<BrokerOverview, RedisError> {
        let mut con = self.con.clone();
        let mut overview = BrokerOverview::default();
        let lists: Vec<String> = queues
            .iter()
            .flat_map(|q| PRIORITY_STEPS.map(|step| priority_queue(q, step)))
            .collect();
        let lengths = self.list_lengths(&lists).await?;
        for (queue, lengths) in queues.iter().zip(lengths.chunks(PRIORITY_STEPS.len())) {
            let by_priority: Vec<(u8, u64)> = PRIORITY_STEPS
                .iter()
                .copied()
                .zip(lengths.iter().copied())
                .collect();
            overview.queues.push(QueueLength {
                queue: queue.clone(),
                waiting: lengths.iter().sum(),
                by_priority,
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
            let messages: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(self.inflight_key(&worker))
                .arg(0)
                .arg(-1)
                .query_async(&mut con)
                .await?;
            let in_flight = messages
                .iter()
                .map(|raw| {
                    let headers = serde_json::from_slice::<Value>(raw)
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
                        eta: header("eta"),
                        bytes: raw.len(),
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
}

impl Broker {
    /// The lengths of `lists`, in one round trip.
    async fn list_lengths(&self, lists: &[String]) -> Result<Vec<u64>, RedisError> {
        if lists.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        for list in lists {
            pipe.cmd("LLEN").arg(list);
        }
        pipe.query_async(&mut con).await
    }

    /// Messages waiting in every served list.
    pub async fn waiting(&self) -> Result<u64, RedisError> {
        Ok(self.list_lengths(&self.lists).await?.iter().sum())
    }
}
