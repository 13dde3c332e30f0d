//! The consumer: serves Celery task messages from Redis with the engine. Each message is taken
//! into this worker's in-flight list, at most `concurrency * prefetch` at once, and handled as
//! `task` says (answered, then acknowledged). The worker's lease is renewed while it lives, and the messages of
//! workers whose lease lapsed are requeued. Shutdown is explicit: when `shutdown` turns true,
//! intake stops, running work gets `grace` to finish; then the runs still going are aborted
//! (their jobs failed, not left processing) and their messages go back to their queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use sea_orm::DatabaseConnection;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::broker::Broker;
use super::celery::TaskNames;
use super::events::{EventPublisher, HEARTBEAT_EVERY};
use super::persona_lock::PersonaLocks;
use super::results::ResultBackend;
use super::task::{handle, Served};
use crate::actors::orchestrator::ABORT_GRACE;
use crate::actors::supervisor::{AbortRuns, IngestPersona};

/// How long one fetch blocks before looking at `shutdown` again.
const FETCH_BLOCK: Duration = Duration::from_secs(1);

pub struct ConsumerConfig {
    /// Unique per process: `hostname:pid:uuid`, so a restarted process never inherits a dead
    /// one's lease.
    pub worker_id: String,
    pub hostname: String,
    pub concurrency: usize,
    /// Messages taken per concurrency slot.
    pub prefetch: usize,
    /// Runs of a transiently failing task after its first, and the wait before the first one.
    pub max_retries: u32,
    pub retry_delay: Duration,
    pub visibility_timeout: Duration,
    pub shutdown_grace: Duration,
    pub names: TaskNames,
}

impl ConsumerConfig {
    pub fn worker_id() -> String {
        let host = hostname();
        format!("{host}:{}:{}", std::process::id(), Uuid::new_v4().simple())
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What a consumer did, for its log line at exit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumerReport {
    pub served: u64,
    pub dead_lettered: u64,
    pub requeued_at_exit: usize,
}

/// What the consumer works with.
pub struct ConsumerPeers {
    pub broker: Arc<Broker>,
    pub results: Arc<ResultBackend>,
    pub supervisor: Recipient<IngestPersona>,
    pub abort_runs: Recipient<AbortRuns>,
    /// Read only (the StatusRecorder writes): what a redelivered task already did.
    pub db: DatabaseConnection,
    /// Celery events, when `events.enabled`.
    pub events: Option<Arc<EventPublisher>>,
    /// One run per persona across workers.
    pub locks: Arc<PersonaLocks>,
}

/// What every message's handling shares.
pub(super) struct Context {
    pub(super) config: ConsumerConfig,
    pub(super) peers: ConsumerPeers,
    /// Set when the shutdown grace ran out: runs ending now were aborted, their messages go
    /// back to their queue unanswered.
    abandoning: AtomicBool,
}

impl Context {
    pub(super) fn abandoning(&self) -> bool {
        self.abandoning.load(Ordering::SeqCst)
    }
}

/// Serves until `shutdown` turns true; then drains as the module says.
pub async fn serve(
    config: ConsumerConfig,
    peers: ConsumerPeers,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ConsumerReport> {
    let ctx = Arc::new(Context {
        config,
        peers,
        abandoning: AtomicBool::new(false),
    });
    let worker = ctx.config.worker_id.clone();
    ctx.peers
        .broker
        .renew_lease(&worker, ctx.config.visibility_timeout)
        .await?;
    let requeued = ctx.peers.broker.requeue_orphans().await?;
    if requeued > 0 {
        tracing::warn!(
            requeued,
            "requeued the messages of workers whose lease lapsed"
        );
    }
    let upkeep = tokio::spawn(upkeep(ctx.clone()));
    let heartbeat = ctx.peers.events.clone().map(|events| {
        tokio::spawn(async move {
            events.worker("worker-online").await;
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                events.worker("worker-heartbeat").await;
            }
        })
    });
    // The Supervisor runs `concurrency` personas at once; prefetched messages wait behind them.
    let taken_at_once = ctx.config.concurrency.max(1) * ctx.config.prefetch.max(1);
    let slots = Arc::new(Semaphore::new(taken_at_once));
    let mut running = JoinSet::new();
    let mut report = ConsumerReport::default();
    while !*shutdown.borrow() {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.changed() => break,
        };
        let delivery = tokio::select! {
            fetched = ctx.peers.broker.fetch(&worker, FETCH_BLOCK) => fetched,
            _ = shutdown.changed() => break,
        };
        let delivery = match delivery {
            Ok(Some(delivery)) => delivery,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("fetching from Redis failed ({e}); trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        running.spawn(async move {
            let served = handle(&ctx, &delivery, shutdown).await;
            drop(permit);
            served
        });
        while let Some(done) = running.try_join_next() {
            count(&mut report, done);
        }
    }
    tracing::info!(
        "stopping: no new messages; running work has {:?} to finish",
        ctx.config.shutdown_grace
    );
    let drained = tokio::time::timeout(ctx.config.shutdown_grace, async {
        while let Some(done) = running.join_next().await {
            count(&mut report, done);
        }
    })
    .await;
    if drained.is_err() {
        // Their runs are aborted first, so that no job stays processing: the jobs fail with the
        // reason, and the next worker to take the message runs them again.
        ctx.abandoning.store(true, Ordering::SeqCst);
        let reason =
            "the worker shut down before the run ended; its message went back to the queue";
        tracing::warn!("shutdown grace over: aborting the runs still going");
        let _ = ctx
            .peers
            .abort_runs
            .send(AbortRuns {
                reason: reason.into(),
            })
            .await;
        let _ = tokio::time::timeout(ABORT_GRACE + Duration::from_secs(5), async {
            while let Some(done) = running.join_next().await {
                count(&mut report, done);
            }
        })
        .await;
        running.abort_all();
    }
    upkeep.abort();
    if let (Some(heartbeat), Some(events)) = (heartbeat, &ctx.peers.events) {
        heartbeat.abort();
        events.worker("worker-offline").await;
    }
    report.requeued_at_exit = ctx.peers.broker.requeue(&worker).await?;
    // Nothing of ours is in flight: the lease goes now, and with it any persona lock a task
    // aborted above still held, rather than when it would have lapsed.
    ctx.peers.broker.retire(&worker).await?;
    Ok(report)
}

fn count(report: &mut ConsumerReport, done: Result<Served, tokio::task::JoinError>) {
    match done {
        Ok(Served::Answered) => report.served += 1,
        Ok(Served::DeadLettered) => report.dead_lettered += 1,
        Ok(Served::Left) | Err(_) => {}
    }
}

/// Renews the lease every third of its length and requeues the messages of dead workers.
async fn upkeep(ctx: Arc<Context>) {
    let every = ctx.config.visibility_timeout / 3;
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = ctx
            .peers
            .broker
            .renew_lease(&ctx.config.worker_id, ctx.config.visibility_timeout)
            .await
        {
            tracing::warn!("renewing the lease failed: {e}");
        }
        ticks += 1;
        if ticks.is_multiple_of(3) {
            match ctx.peers.broker.requeue_orphans().await {
                Ok(0) => {}
                Ok(requeued) => tracing::warn!(
                    requeued,
                    "requeued the messages of workers whose lease lapsed"
                ),
                Err(e) => tracing::warn!("looking for dead workers failed: {e}"),
            }
        }
    }
}
