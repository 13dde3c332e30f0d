//! Supervisor: one for the engine. It takes ingestion requests (`IngestPersona`, and the
//! trigger's `RunTask`, which adds redelivery and the retry policy: see `task`), runs at most `concurrency`
//! personas at once and one run per persona at a time (a second request for a running
//! persona waits behind it), starts an Orchestrator per run and answers each requester with
//! its run's outcome.
//!
//! Supervision: a run that ends without an outcome (its orchestrator panicked or was stopped)
//! is answered as failed, its unfinished jobs and its persona are marked failed with the
//! reason, and the Supervisor goes on serving the next requests.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use super::orchestrator::{AbortRun, Orchestrator, RunDeps, RunOutcome, RunRequest};
use super::status_recorder::{RecordStatus, StatusUpdate};
use super::Observe;
use crate::retry::RetryPolicy;
use crate::PersonaId;

/// Ingest a persona; answered with the outcome once the run is over.
#[derive(Clone, Debug, Message)]
#[rtype(result = "RunOutcome")]
pub struct IngestPersona(pub RunRequest);

/// Aborts every run (their unfinished jobs fail with `reason`) and answers the waiting
/// requests as failed without starting them: the worker is shutting down.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct AbortRuns {
    pub reason: String,
}

/// Aborts the run of one persona (its unfinished jobs fail with `reason`), or answers its
/// waiting requests as failed without starting them: a task of it was revoked with `terminate`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "bool")]
pub struct AbortPersona {
    pub persona: PersonaId,
    pub reason: String,
}

/// A run as started: its outcome to come, and how to abort it.
pub struct StartedRun {
    pub outcome: oneshot::Receiver<RunOutcome>,
    pub abort: Recipient<AbortRun>,
}

/// Starts a run; a seam, so tests can script runs.
pub trait RunStarter: Send + Sync {
    fn start(&self, request: RunRequest) -> StartedRun;
}

/// Runs each request in an Orchestrator actor.
pub struct OrchestratorStarter(pub RunDeps);

impl RunStarter for OrchestratorStarter {
    fn start(&self, request: RunRequest) -> StartedRun {
        let (reply, outcome) = oneshot::channel();
        let orchestrator = Orchestrator::new(request, self.0.clone(), reply).start();
        StartedRun {
            outcome,
            abort: orchestrator.recipient(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SupervisorCounters {
    pub running: Vec<PersonaId>,
    pub waiting: usize,
    pub max_running_seen: usize,
    pub succeeded: u64,
    pub failed: u64,
    pub lost: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RunEnded {
    persona: PersonaId,
    succeeded: bool,
    lost: bool,
}

pub struct Supervisor {
    concurrency: usize,
    /// When a task whose jobs failed transiently runs again (`RunTask`).
    retry: RetryPolicy,
    starter: Arc<dyn RunStarter>,
    recorder: Recipient<RecordStatus>,
    /// The running personas, and how to abort their runs.
    running: HashMap<PersonaId, Recipient<AbortRun>>,
    waiting: VecDeque<(RunRequest, oneshot::Sender<RunOutcome>)>,
    counters: SupervisorCounters,
}

impl Supervisor {
    pub fn new(
        concurrency: usize,
        starter: Arc<dyn RunStarter>,
        recorder: Recipient<RecordStatus>,
    ) -> Self {
        Self {
            concurrency: concurrency.max(1),
            retry: RetryPolicy::never(),
            starter,
            recorder,
            running: HashMap::new(),
            waiting: VecDeque::new(),
            counters: SupervisorCounters::default(),
        }
    }

    /// Runs transiently failing tasks again as `policy` says.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Queues a run; its outcome comes when it ends (failed, if the Supervisor stops first).
    fn enqueue(
        &mut self,
        request: RunRequest,
        ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = RunOutcome> {
        let persona = request.persona.clone();
        let (reply, outcome) = oneshot::channel();
        self.waiting.push_back((request, reply));
        self.start_what_can_run(ctx);
        async move {
            outcome.await.unwrap_or_else(|_| {
                let error = format!("the supervisor stopped before the run of {persona} ended");
                RunOutcome::not_run(persona, error)
            })
        }
    }

    /// Starts waiting runs, oldest first, while there is room and their persona is free.
    fn start_what_can_run(&mut self, ctx: &mut Context<Self>) {
        let mut index = 0;
        while self.running.len() < self.concurrency && index < self.waiting.len() {
            if self.running.contains_key(&self.waiting[index].0.persona) {
                index += 1;
                continue;
            }
            let (request, reply) = self.waiting.remove(index).expect("index in range");
            let StartedRun { outcome, abort } = self.starter.start(request.clone());
            self.running.insert(request.persona.clone(), abort);
            self.counters.max_running_seen = self.counters.max_running_seen.max(self.running.len());
            let recorder = self.recorder.clone();
            ctx.spawn(
                async move {
                    let (outcome, lost) = match outcome.await {
                        Ok(outcome) => (outcome, false),
                        Err(_) => (run_lost(&recorder, &request).await, true),
                    };
                    let ended = RunEnded {
                        persona: request.persona.clone(),
                        succeeded: outcome.succeeded(),
                        lost,
                    };
                    let _ = reply.send(outcome);
                    ended
                }
                .into_actor(self)
                .map(|ended, act, ctx| {
                    act.run_ended(ended);
                    act.start_what_can_run(ctx);
                }),
            );
        }
        self.counters.waiting = self.waiting.len();
    }

    fn run_ended(&mut self, ended: RunEnded) {
        self.running.remove(&ended.persona);
        if ended.lost {
            self.counters.lost += 1;
        }
        if ended.succeeded {
            self.counters.succeeded += 1;
        } else {
            self.counters.failed += 1;
        }
    }
}

/// The answer for a run whose orchestrator vanished: every job not finished is failed, and so
/// is the persona, so that nothing is left processing.
async fn run_lost(recorder: &Recipient<RecordStatus>, request: &RunRequest) -> RunOutcome {
    let error = format!(
        "the run of {} ended without an outcome (its orchestrator panicked or was stopped)",
        request.persona
    );
    tracing::error!("{error}");
    for job in &request.jobs {
        // Completed jobs refuse this, as they should.
        let _ = recorder
            .send(RecordStatus(StatusUpdate::JobFailed {
                job_id: job.id,
                error: error.clone(),
                vectors_present: None,
                // What its ingestors wrote is not known: the manifest stays unsettled.
                manifest: None,
            }))
            .await;
    }
    let _ = recorder
        .send(RecordStatus(StatusUpdate::FinishRun {
            persona: request.persona.clone(),
            error: Some(error.clone()),
        }))
        .await;
    RunOutcome::not_run(request.persona.clone(), error)
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<IngestPersona> for Supervisor {
    type Result = ResponseFuture<RunOutcome>;

    fn handle(
        &mut self,
        IngestPersona(request): IngestPersona,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        Box::pin(self.enqueue(request, ctx))
    }
}

impl Handler<AbortRuns> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: AbortRuns, _: &mut Context<Self>) {
        for abort in self.running.values() {
            abort.do_send(AbortRun {
                reason: msg.reason.clone(),
            });
        }
        for (request, reply) in self.waiting.drain(..) {
            let _ = reply.send(RunOutcome::not_run(request.persona, msg.reason.clone()));
        }
        self.counters.waiting = 0;
    }
}

impl Handler<AbortPersona> for Supervisor {
    type Result = bool;

    /// Answers whether there was a run or a request of the persona to end.
    fn handle(&mut self, msg: AbortPersona, _: &mut Context<Self>) -> bool {
        let mut found = false;
        if let Some(abort) = self.running.get(&msg.persona) {
            abort.do_send(AbortRun {
                reason: msg.reason.clone(),
            });
            found = true;
        }
        let mut index = 0;
        while index < self.waiting.len() {
            if self.waiting[index].0.persona != msg.persona {
                index += 1;
                continue;
            }
            let (request, reply) = self.waiting.remove(index).expect("index in range");
            let _ = reply.send(RunOutcome::not_run(request.persona, msg.reason.clone()));
            found = true;
        }
        self.counters.waiting = self.waiting.len();
        found
    }
}

impl Handler<Observe<SupervisorCounters>> for Supervisor {
    type Result = MessageResult<Observe<SupervisorCounters>>;

    fn handle(&mut self, _: Observe<SupervisorCounters>, _: &mut Context<Self>) -> Self::Result {
        let mut counters = self.counters.clone();
        counters.running = self.running.keys().cloned().collect();
        counters.running.sort();
        counters.waiting = self.waiting.len();
        MessageResult(counters)
    }
}

mod task;

pub use task::{JobEnded, RunLimits, RunTask, TaskEvent, TaskOutcome, TaskTell};

#[cfg(test)]
mod panic_tests;
#[cfg(test)]
mod tests;
