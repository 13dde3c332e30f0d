//! The trigger's Redis side, as small traits, so that the RedisTrigger actor can be tested alone
//! against the testkit's `MemoryBroker` (with virtual time) as the engine's actors are against
//! probes. The Redis implementations are `broker::Broker` (the queue and its in-flight lists),
//! `results::ResultBackend`, `persona_lock::PersonaLocks` and `events::EventPublisher`.
//!
//! Messages are bytes from end to end: whatever a producer pushed is taken, kept in flight,
//! dead-lettered or requeued as it is, UTF-8 or not.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::celery::{ResultMeta, TaskState};

/// A message taken from a queue, now in this worker's in-flight list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The list it came from (a queue, or one of its priority lists).
    pub queue: String,
    pub raw: Vec<u8>,
}

/// Why a call to the broker's side failed: always worth trying again (Redis restarting or out
/// of reach); the caller decides how long.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stand-in's scripted outage.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// The queues and this worker's in-flight list: at least once, nothing lost.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The next message, waiting up to `block` for one; it is in `worker`'s in-flight list.
    async fn fetch(&self, worker: &str, block: Duration) -> Result<Option<Delivery>, BrokerError>;
    /// Done with: its result is recorded.
    async fn ack(&self, worker: &str, delivery: &Delivery) -> Result<(), BrokerError>;
    /// Never to be run: into the dead letters with the reason and its raw bytes.
    async fn dead_letter(
        &self,
        worker: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError>;
    /// Acknowledges `delivery` and publishes `again` to the back of its queue, in one step.
    async fn republish(
        &self,
        worker: &str,
        delivery: &Delivery,
        again: &[u8],
    ) -> Result<(), BrokerError>;
    /// Publishes a new message to the back of `list` (a queue, or one of its priority lists).
    async fn publish(&self, list: &str, raw: &[u8]) -> Result<(), BrokerError>;
    /// Puts everything in `worker`'s in-flight list back at the head of its queue; answers
    /// how many.
    async fn requeue(&self, worker: &str) -> Result<usize, BrokerError>;
    /// Requeues the in-flight messages of every worker whose lease lapsed.
    async fn requeue_orphans(&self) -> Result<usize, BrokerError>;
    /// Takes or renews `worker`'s lease for `lease`.
    async fn renew_lease(&self, worker: &str, lease: Duration) -> Result<(), BrokerError>;
    /// A worker leaving with nothing in flight: its lease and its name go.
    async fn retire(&self, worker: &str) -> Result<(), BrokerError>;
}

/// Celery's result backend: where `AsyncResult(id)` reads a task's state.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Records a task's state; answers false when a SUCCESS was there already and stays.
    async fn store(
        &self,
        task_id: &str,
        state: &TaskState,
        meta: &ResultMeta,
    ) -> Result<bool, BrokerError>;

    /// Records several states in order, as [`ResultStore::store`] each; answers, in the same
    /// order, whether each was stored. A backend that can answers them in one round trip (a
    /// task's sub-tasks start and end together); an error may leave the first few stored, and
    /// storing them all again is harmless (a SUCCESS stays).
    async fn store_all(
        &self,
        states: &[(String, TaskState, ResultMeta)],
    ) -> Result<Vec<bool>, BrokerError> {
        let mut stored = Vec::with_capacity(states.len());
        for (task_id, state, meta) in states {
            stored.push(self.store(task_id, state, meta).await?);
        }
        Ok(stored)
    }
}

/// Revoked task ids, shared by every worker on the broker (a worker that starts after a revoke
/// still honours it), each kept for a while (`worker.revokes_expire`).
#[async_trait]
pub trait Revocations: Send + Sync {
    async fn revoke(&self, task_ids: &[String], keep: Duration) -> Result<(), BrokerError>;
    async fn is_revoked(&self, task_id: &str) -> Result<bool, BrokerError>;
    /// The ids revoked and still kept.
    async fn revoked(&self) -> Result<Vec<String>, BrokerError>;
}

/// One run per persona across every worker sharing the broker.
#[async_trait]
pub trait Locks: Send + Sync {
    /// Takes the persona's lock for one task; false while another live worker holds it.
    async fn try_acquire(&self, persona: &str) -> Result<bool, BrokerError>;
    /// One task is done with the persona.
    async fn release(&self, persona: &str) -> Result<(), BrokerError>;
}

/// Celery events (best effort: never waited on for long, never failing the work).
#[async_trait]
pub trait Events: Send + Sync {
    /// `worker-online`, `worker-heartbeat` or `worker-offline`.
    async fn worker(&self, event_type: &str);
    /// A `task-*` event about task `uuid`, with its own `fields`.
    async fn task(&self, event_type: &str, uuid: &str, fields: Value);
    /// A task began being handled (counted in the worker's `active`).
    fn task_taken(&self);
    /// A task's handling ended (counted in `processed`).
    fn task_done(&self);
    /// Turns task events on or off; answers whether they were on.
    fn set_task_events(&self, on: bool) -> bool;
}

/// Where remote-control replies go: kombu's direct exchange on Redis, whose bindings
/// (`_kombu.binding.<exchange>`) name the queue of each routing key.
#[async_trait]
pub trait ControlReplies: Send + Sync {
    async fn reply(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &[u8],
    ) -> Result<(), BrokerError>;
}
