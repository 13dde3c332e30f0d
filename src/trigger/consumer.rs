//! The consumer: serves Celery task messages from Redis with the engine. Each message is taken
//! into this worker's in-flight list, decoded (or dead-lettered with the reason), run through
//! the Supervisor, answered in Celery's result backend (STARTED, then SUCCESS or FAILURE), and
//! only then acknowledged. The worker's lease is renewed while it lives, and the messages of
//! workers whose lease lapsed are requeued. Shutdown is explicit: when `shutdown` turns true,
//! intake stops, running work gets `grace` to finish, and what is left goes back to its queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::broker::{Broker, Delivery};
use super::celery::{decode, ingest_call, IngestCall, TaskMessage, TaskNames, TaskState};
use super::results::ResultBackend;
use crate::actors::orchestrator::{RunOutcome, RunRequest};
use crate::actors::supervisor::IngestPersona;
use crate::jobs::JobRef;
use crate::{Kind, PersonaId};

/// How long one fetch blocks before looking at `shutdown` again.
const FETCH_BLOCK: Duration = Duration::from_secs(1);

pub struct ConsumerConfig {
    /// Unique per process: `hostname:pid:uuid`, so a restarted process never inherits a dead
    /// one's lease.
    pub worker_id: String,
    pub hostname: String,
    pub concurrency: usize,
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

/// The sub-task id of one kind of an `ingest_full_persona` task: derived from the task id, so
/// that a redelivered message answers under the same ids.
pub fn subtask_id(task_id: &str, kind: Kind) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{task_id}/{kind}").as_bytes()).to_string()
}

struct Context {
    config: ConsumerConfig,
    broker: Arc<Broker>,
    results: Arc<ResultBackend>,
    supervisor: Recipient<IngestPersona>,
}

/// Serves until `shutdown` turns true; then drains as the module says.
pub async fn serve(
    config: ConsumerConfig,
    broker: Arc<Broker>,
    results: Arc<ResultBackend>,
    supervisor: Recipient<IngestPersona>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ConsumerReport> {
    let ctx = Arc::new(Context {
        config,
        broker,
        results,
        supervisor,
    });
    let worker = ctx.config.worker_id.clone();
    ctx.broker
        .renew_lease(&worker, ctx.config.visibility_timeout)
        .await?;
    let requeued = ctx.broker.requeue_orphans().await?;
    if requeued > 0 {
        tracing::warn!(
            requeued,
            "requeued the messages of workers whose lease lapsed"
        );
    }
    let upkeep = tokio::spawn(upkeep(ctx.clone()));
    let slots = Arc::new(Semaphore::new(ctx.config.concurrency.max(1)));
    let mut running = JoinSet::new();
    let mut report = ConsumerReport::default();
    while !*shutdown.borrow() {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.changed() => break,
        };
        let delivery = tokio::select! {
            fetched = ctx.broker.fetch(&worker, FETCH_BLOCK) => fetched,
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
        running.spawn(async move {
            let served = handle(&ctx, &delivery).await;
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
        running.abort_all();
    }
    upkeep.abort();
    report.requeued_at_exit = ctx.broker.requeue(&worker).await?;
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
            .broker
            .renew_lease(&ctx.config.worker_id, ctx.config.visibility_timeout)
            .await
        {
            tracing::warn!("renewing the lease failed: {e}");
        }
        ticks += 1;
        if ticks.is_multiple_of(3) {
            if let Err(e) = ctx.broker.requeue_orphans().await {
                tracing::warn!("looking for dead workers failed: {e}");
            }
        }
    }
}

enum Served {
    Answered,
    DeadLettered,
    /// Left in flight (Redis unreachable): requeued at exit or by another worker's reaper.
    Left,
}

async fn handle(ctx: &Context, delivery: &Delivery) -> Served {
    let worker = &ctx.config.worker_id;
    let call = decode(delivery.raw.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|msg| ingest_call(&msg, &ctx.config.names).map(|call| (msg, call)));
    let (msg, call) = match call {
        Ok(understood) => understood,
        Err(reason) => {
            tracing::warn!(queue = %delivery.queue, "dead-lettered: {reason}");
            return match ctx.broker.dead_letter(worker, delivery, &reason).await {
                Ok(()) => Served::DeadLettered,
                Err(e) => {
                    tracing::error!("dead-lettering failed: {e}");
                    Served::Left
                }
            };
        }
    };
    let answered = run(ctx, &msg, call).await;
    if let Err(e) = answered {
        tracing::error!(task_id = %msg.id, "the result could not be recorded, the message stays in flight: {e}");
        return Served::Left;
    }
    match ctx.broker.ack(worker, delivery).await {
        Ok(()) => Served::Answered,
        Err(e) => {
            tracing::error!(task_id = %msg.id, "acknowledging failed: {e}");
            Served::Left
        }
    }
}

/// A failure as an exception Celery's client can rebuild: `RuntimeError` for a failed
/// ingestion, `ValueError` for a bad argument, `celery.exceptions.TaskRevokedError` for an
/// expired message.
fn failure(exc_type: &str, message: String) -> TaskState {
    let exc_module = if exc_type == "TaskRevokedError" {
        "celery.exceptions"
    } else {
        "builtins"
    };
    TaskState::Failure {
        exc_type: exc_type.into(),
        exc_message: message,
        exc_module: exc_module.into(),
        traceback: None,
    }
}

/// Runs the call and records its results; an error means Redis could not be written.
async fn run(ctx: &Context, msg: &TaskMessage, call: IngestCall) -> Result<(), redis::RedisError> {
    let results = &ctx.results;
    if msg.expires.is_some_and(|at| at < Utc::now()) {
        results
            .store(&msg.id, &failure("TaskRevokedError", "expired".into()))
            .await?;
        return Ok(());
    }
    if let Some(eta) = msg.eta {
        if let Ok(wait) = (eta.with_timezone(&Utc) - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
    }
    let started = TaskState::Started {
        pid: std::process::id(),
        hostname: ctx.config.hostname.clone(),
    };
    results.store(&msg.id, &started).await?;
    let (persona_id, jobs) = match &call {
        IngestCall::FullPersona {
            persona_id,
            job_ids,
        } => (
            persona_id,
            job_ids
                .iter()
                .map(|(kind, id)| JobRef {
                    id: *id,
                    kind: *kind,
                    task_id: Some(subtask_id(&msg.id, *kind)),
                })
                .collect::<Vec<_>>(),
        ),
        IngestCall::OneKind {
            kind,
            persona_id,
            job_id,
        } => (
            persona_id,
            vec![JobRef {
                id: *job_id,
                kind: *kind,
                task_id: Some(msg.id.clone()),
            }],
        ),
    };
    let persona = match PersonaId::parse(persona_id) {
        Ok(persona) => persona,
        Err(e) => {
            results
                .store(&msg.id, &failure("ValueError", e.to_string()))
                .await?;
            return Ok(());
        }
    };
    let request = RunRequest {
        persona,
        jobs,
        // At least once: a redelivered message may find its jobs in any state.
        restart: true,
        soft_time_limit: msg.soft_time_limit.map(Duration::from_secs_f64),
        time_limit: msg.time_limit.map(Duration::from_secs_f64),
    };
    let outcome = match ctx.supervisor.send(IngestPersona(request)).await {
        Ok(outcome) => outcome,
        Err(e) => {
            results
                .store(
                    &msg.id,
                    &failure("RuntimeError", format!("the engine is not running: {e}")),
                )
                .await?;
            return Ok(());
        }
    };
    record_outcome(results, msg, &call, &outcome).await
}

async fn record_outcome(
    results: &ResultBackend,
    msg: &TaskMessage,
    call: &IngestCall,
    outcome: &RunOutcome,
) -> Result<(), redis::RedisError> {
    let job_state = |kind: Kind| match outcome
        .jobs
        .iter()
        .find(|j| j.kind == kind)
        .map(|j| &j.result)
    {
        Some(Ok(stats)) => TaskState::Success(json!(stats.vectors)),
        Some(Err(e)) => failure("RuntimeError", e.clone()),
        None => failure(
            "RuntimeError",
            outcome.error.clone().unwrap_or_else(|| "not run".into()),
        ),
    };
    match call {
        IngestCall::FullPersona { job_ids, .. } => {
            let mut children = BTreeMap::new();
            for kind in job_ids.keys() {
                let id = subtask_id(&msg.id, *kind);
                results.store(&id, &job_state(*kind)).await?;
                children.insert(kind.to_string(), Value::from(id));
            }
            let state = if outcome.succeeded() {
                TaskState::Success(Value::Object(children.into_iter().collect()))
            } else {
                failure("RuntimeError", outcome.error.clone().unwrap_or_default())
            };
            results.store(&msg.id, &state).await?;
        }
        IngestCall::OneKind { kind, .. } => {
            results.store(&msg.id, &job_state(*kind)).await?;
        }
    }
    Ok(())
}
