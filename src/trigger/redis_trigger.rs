//! RedisTrigger: the actor that serves Celery task messages from Redis with the engine, as a
//! Celery worker does. It runs `concurrency` tasks at once and holds up to `concurrency *
//! prefetch` messages in this worker's in-flight list (Celery's prefetch: the next message is
//! there when a slot frees, without a round trip to Redis first), and each message:
//!
//! - a message it cannot read (not UTF-8, not JSON, not a Celery envelope, an unknown task or
//!   arguments it cannot use) goes straight to the dead letters with the reason and its raw
//!   bytes, never left in flight;
//! - a message whose `eta` is ahead waits in a timer, in flight under the lease, holding no slot
//!   (Celery's ETA scheduling); `expires` is checked again when it falls due;
//! - a due message takes a slot and is served by `task::serve` through the engine's façade,
//!   `RunTask`; a retry is re-published with its countdown, which frees the slot at once.
//!
//! Lease renewal, the reaper of dead workers' messages and heartbeats run on intervals.
//! `Shutdown` (`shutdown`) stops intake, lets running tasks finish within the grace, then aborts
//! the runs still going (their jobs failed, not left processing), requeues everything still in
//! flight, and answers a report. `Revoke` and `Inspect` (`remote`) serve remote control.
//! `Observe<TriggerCounters>` is read by tests, `/metrics` and `status`.
//!
//! Over 400 lines because a message's way through the actor (fetched, accepted or dead-lettered,
//! held, started, ended) reads best in one file; what it is made of, remote control and shutdown
//! are beside it in `parts`, `remote` and `shutdown`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;

use super::broker::MAX_BLOCK;
use super::celery::{decode, ingest_call, CallError, ResultMeta, TaskState};
use super::events::HEARTBEAT_EVERY;
use super::ports::Delivery;
use super::task::{self, received_fields, write_until_done, Accepted, Served, TaskContext};
use crate::actors::Observe;

/// How long one fetch blocks on empty queues before the actor looks around again.
pub const FETCH_BLOCK: Duration = Duration::from_secs(1);

/// The wait before fetching again after Redis failed to answer.
const FETCH_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TriggerCounters {
    /// Messages taken from the queues.
    pub fetched: u64,
    /// Answered SUCCESS or FAILURE (expired ones included) and acknowledged.
    pub answered: u64,
    pub dead_lettered: u64,
    /// Re-published with a countdown, to run again.
    pub retried: u64,
    pub expired: u64,
    /// Answered REVOKED without running, or ended by a revoke with `terminate`.
    pub revoked: u64,
    /// Tasks holding a run slot now.
    pub running: usize,
    /// Due tasks waiting for a slot.
    pub ready: usize,
    /// Tasks held for their `eta`, in flight without a slot.
    pub scheduled: usize,
    /// Fetches that failed (Redis away); fetching goes on.
    pub fetch_errors: u64,
    pub orphans_requeued: u64,
    pub requeued_at_exit: usize,
    pub stopping: bool,
}

/// A task holding a run slot.
struct Running {
    task: Accepted,
    since: chrono::DateTime<Utc>,
    handle: SpawnHandle,
}

pub struct RedisTrigger {
    config: TriggerConfig,
    ports: TriggerPorts,
    peers: TriggerPeers,
    task_ctx: Arc<TaskContext>,
    stop: watch::Sender<bool>,
    /// Counts the running tasks, for the shutdown to wait on.
    running_count: watch::Sender<usize>,
    abandoning: Arc<AtomicBool>,
    counters: TriggerCounters,
    fetching: bool,
    next_key: u64,
    /// Tasks holding a slot, by a key of their own (a task id may come twice).
    running: HashMap<u64, Running>,
    ready: VecDeque<Accepted>,
    scheduled: HashMap<u64, (Accepted, SpawnHandle)>,
    /// Tasks let go of, by name (`inspect stats`' `total`).
    total: BTreeMap<String, u64>,
}

impl RedisTrigger {
    pub fn new(config: TriggerConfig, ports: TriggerPorts, peers: TriggerPeers) -> Self {
        let (stop, stopping) = watch::channel(false);
        let abandoning = Arc::new(AtomicBool::new(false));
        let task_ctx = Arc::new(TaskContext {
            worker_id: config.worker_id.clone(),
            hostname: config.hostname.clone(),
            names: config.names.clone(),
            answers: config.answers,
            default_queue: config.default_queue.clone(),
            queue: ports.queue.clone(),
            results: ports.results.clone(),
            locks: ports.locks.clone(),
            revocations: ports.revocations.clone(),
            events: ports.events.clone(),
            engine: peers.engine.clone(),
            stopping,
            abandoning: abandoning.clone(),
        });
        Self {
            config,
            ports,
            peers,
            task_ctx,
            stop,
            running_count: watch::channel(0).0,
            abandoning,
            counters: TriggerCounters::default(),
            fetching: false,
            next_key: 0,
            running: HashMap::new(),
            ready: VecDeque::new(),
            scheduled: HashMap::new(),
            total: Default::default(),
        }
    }

    /// Tasks run at once (`worker.concurrency`).
    fn slots(&self) -> usize {
        self.config.concurrency.max(1)
    }

    /// Due messages held at once, running or ready (Celery's prefetch count).
    fn held(&self) -> usize {
        self.slots() * self.config.prefetch.max(1)
    }

    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// Fetches one message if fewer than the prefetch count are held and no fetch is under way.
    fn fetch_more(&mut self, ctx: &mut Context<Self>) {
        if self.fetching
            || self.counters.stopping
            || self.running.len() + self.ready.len() >= self.held()
        {
            return;
        }
        self.fetching = true;
        let queue = self.ports.queue.clone();
        let worker = self.config.worker_id.clone();
        let fetch = async move { queue.fetch(&worker, FETCH_BLOCK.min(MAX_BLOCK)).await };
        ctx.spawn(
            fetch
                .into_actor(self)
                .map(|fetched, act, ctx| match fetched {
                    Ok(Some(delivery)) => {
                        act.fetching = false;
                        act.counters.fetched += 1;
                        act.accept(delivery, ctx);
                        act.fetch_more(ctx);
                    }
                    Ok(None) => {
                        act.fetching = false;
                        act.fetch_more(ctx);
                    }
                    Err(e) => {
                        act.counters.fetch_errors += 1;
                        tracing::warn!("fetching from Redis failed ({e}); trying again");
                        // Still `fetching`: nothing else starts one before this wait is over.
                        ctx.run_later(FETCH_RETRY, |act, ctx| {
                            act.fetching = false;
                            act.fetch_more(ctx);
                        });
                    }
                }),
        );
    }

    /// A message now in flight: dead-lettered, held for its eta, or made ready to run.
    fn accept(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        if self.counters.stopping {
            // Requeued with the rest at exit.
            return;
        }
        let msg = match decode(&delivery.raw) {
            Ok(msg) => msg,
            Err(reason) => return self.dead_letter(delivery, reason.to_string(), ctx),
        };
        let call = ingest_call(&msg, &self.config.names);
        if let Err(unknown @ CallError::NotRegistered(_)) = &call {
            // Kept whole for whoever serves it; its caller is told, as Celery's worker tells.
            let (exc_type, exc_module, message) = unknown.exception();
            let state = TaskState::Failure {
                exc_type: exc_type.into(),
                exc_message: message,
                exc_module: exc_module.into(),
                traceback: None,
            };
            let (results, id) = (self.ports.results.clone(), msg.id.clone());
            ctx.spawn(
                async move {
                    write_until_done("recording a task result", || async {
                        results
                            .store(&id, &state, &ResultMeta::default())
                            .await
                            .map(|_| ())
                    })
                    .await
                }
                .into_actor(self),
            );
            return self.dead_letter(delivery, unknown.to_string(), ctx);
        }
        let task = Accepted {
            delivery,
            msg,
            call,
            terminated: Arc::new(AtomicBool::new(false)),
        };
        if let Some(events) = &self.ports.events {
            let (events, id, fields) = (
                events.clone(),
                task.msg.id.clone(),
                received_fields(&task.msg),
            );
            ctx.spawn(
                async move { events.task("task-received", &id, fields).await }.into_actor(self),
            );
        }
        let wait = task
            .msg
            .eta
            .and_then(|eta| (eta.with_timezone(&Utc) - Utc::now()).to_std().ok())
            .filter(|wait| !wait.is_zero());
        match wait {
            Some(wait) => {
                let key = self.key();
                let timer = ctx.run_later(wait, move |act, ctx| {
                    if let Some((task, _)) = act.scheduled.remove(&key) {
                        act.ready.push_back(task);
                        act.start_ready(ctx);
                    }
                });
                self.scheduled.insert(key, (task, timer));
            }
            None => {
                self.ready.push_back(task);
                self.start_ready(ctx);
            }
        }
    }

    fn dead_letter(&mut self, delivery: Delivery, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(queue = %delivery.queue, "dead-lettered: {reason}");
        crate::metrics::METRICS.dead_letters.inc();
        self.counters.dead_lettered += 1;
        let queue = self.ports.queue.clone();
        let worker = self.config.worker_id.clone();
        ctx.spawn(
            async move {
                write_until_done("dead-lettering a message", || {
                    queue.dead_letter(&worker, &delivery, &reason)
                })
                .await
            }
            .into_actor(self),
        );
    }

    /// Starts ready tasks while slots are free.
    fn start_ready(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.slots() && !self.counters.stopping {
            let Some(task) = self.ready.pop_front() else {
                break;
            };
            let key = self.key();
            let expired = task.msg.expires.is_some_and(|at| at < Utc::now());
            let task_ctx = self.task_ctx.clone();
            let held = task.clone();
            let handle = if expired {
                ctx.spawn(
                    async move {
                        task::revoke(task_ctx, task, "expired").await;
                        None
                    }
                    .into_actor(self)
                    .map(move |served, act, ctx| act.task_ended(key, served, ctx)),
                )
            } else {
                ctx.spawn(
                    task::serve(task_ctx, task)
                        .into_actor(self)
                        .map(move |served, act, ctx| act.task_ended(key, Some(served), ctx)),
                )
            };
            self.running.insert(
                key,
                Running {
                    task: held,
                    since: Utc::now(),
                    handle,
                },
            );
        }
        self.running_changed();
    }

    /// A task let go of its slot (`None`: it had expired).
    fn task_ended(&mut self, key: u64, served: Option<Served>, ctx: &mut Context<Self>) {
        if let Some(running) = self.running.remove(&key) {
            if served != Some(Served::Left) {
                *self.total.entry(running.task.msg.task.clone()).or_default() += 1;
            }
            if running.task.terminated.load(Ordering::SeqCst) {
                self.counters.revoked += 1;
            }
        }
        match served {
            None => {
                self.counters.expired += 1;
                self.counters.answered += 1;
            }
            Some(Served::Answered) => self.counters.answered += 1,
            Some(Served::Retried) => self.counters.retried += 1,
            Some(Served::Left) => {}
        }
        self.start_ready(ctx);
        self.fetch_more(ctx);
    }

    /// Tells the shutdown, which waits for none to be running.
    fn running_changed(&self) {
        self.running_count.send_replace(self.running.len());
    }

    /// The counters, with the gauges read off the task maps.
    fn counters(&self) -> TriggerCounters {
        TriggerCounters {
            running: self.running.len(),
            ready: self.ready.len(),
            scheduled: self.scheduled.len(),
            ..self.counters.clone()
        }
    }

    fn upkeep(&mut self, ticks: u32, ctx: &mut Context<Self>) {
        let queue = self.ports.queue.clone();
        let worker = self.config.worker_id.clone();
        let lease = self.config.visibility_timeout;
        let reap = ticks.is_multiple_of(3);
        ctx.spawn(
            async move {
                if let Err(e) = queue.renew_lease(&worker, lease).await {
                    tracing::warn!("renewing the lease failed: {e}");
                }
                if !reap {
                    return 0;
                }
                match queue.requeue_orphans().await {
                    Ok(0) => 0,
                    Ok(requeued) => {
                        tracing::warn!(
                            requeued,
                            "requeued the messages of workers whose lease lapsed"
                        );
                        requeued
                    }
                    Err(e) => {
                        tracing::warn!("looking for dead workers failed: {e}");
                        0
                    }
                }
            }
            .into_actor(self)
            .map(|requeued, act, _| act.counters.orphans_requeued += requeued as u64),
        );
    }
}

impl Actor for RedisTrigger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let queue = self.ports.queue.clone();
        let worker = self.config.worker_id.clone();
        let lease = self.config.visibility_timeout;
        let events = self.ports.events.clone();
        // The lease before any message is taken; dead workers' messages back in line first.
        let begin = async move {
            write_until_done("taking the worker's lease", || {
                queue.renew_lease(&worker, lease)
            })
            .await;
            let requeued = match queue.requeue_orphans().await {
                Ok(requeued) => requeued,
                Err(e) => {
                    tracing::warn!("looking for dead workers failed: {e}");
                    0
                }
            };
            if requeued > 0 {
                tracing::warn!(
                    requeued,
                    "requeued the messages of workers whose lease lapsed"
                );
            }
            if let Some(events) = events {
                events.worker("worker-online").await;
            }
            requeued
        };
        // Spawned, not waited: `Observe` and `Shutdown` are answered while Redis is away.
        self.fetching = true;
        ctx.spawn(begin.into_actor(self).map(|requeued, act, ctx| {
            act.counters.orphans_requeued += requeued as u64;
            act.fetching = false;
            act.fetch_more(ctx);
        }));
        let mut ticks = 0u32;
        ctx.run_interval(self.config.visibility_timeout / 3, move |act, ctx| {
            ticks += 1;
            act.upkeep(ticks, ctx);
        });
        if let Some(events) = self.ports.events.clone() {
            ctx.run_interval(HEARTBEAT_EVERY, move |act, ctx| {
                let events = events.clone();
                ctx.spawn(async move { events.worker("worker-heartbeat").await }.into_actor(act));
            });
        }
    }
}

impl Handler<Observe<TriggerCounters>> for RedisTrigger {
    type Result = MessageResult<Observe<TriggerCounters>>;

    fn handle(&mut self, _: Observe<TriggerCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters())
    }
}

mod parts;
mod remote;
mod shutdown;

pub use parts::{hostname, TriggerConfig, TriggerPeers, TriggerPorts};
pub use remote::{Held, Inspect, Revoke};
pub use shutdown::Shutdown;

#[cfg(test)]
mod tests;
