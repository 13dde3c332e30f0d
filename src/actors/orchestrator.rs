//! Orchestrator: one per persona run. It records the run's start (persona → ingesting, job
//! rows created when missing), finds what each requested kind has to read, starts one
//! ingestor per job (the profile first, as it is the fastest; works and quotes alongside),
//! enforces the soft and hard time limits, and when every job has reported, records the
//! persona as active, or failed naming the failed kinds, and answers the run's outcome.
//!
//! Supervision: an ingestor's error or panic reaches the Orchestrator as a failed
//! `IngestFinished` (the ingestor has recorded its job failed); a kind whose files cannot be
//! listed fails alone, before any ingestor starts, and is recorded here; an ingestor that does
//! not stop within `ABORT_GRACE` of a hard abort has its job failed here. The run always ends
//! with an outcome and the persona's final status, and the other kinds run on meanwhile.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use self::run::run_error;
use super::ingestor::{AbortIngest, IngestFinished, IngestJob, JobError, JobStats, StopIngest};
use super::status_recorder::{RecordStatus, Recorded, StatusUpdate};
use super::Observe;
use crate::jobs::JobRef;
use crate::manifest::{KindManifest, ManifestChange};
use crate::sources::{Source, SourceFactory, SourcePlan};
use crate::store::CollectionSpec;
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaStatus};

/// How long ingestors get to stop after a hard abort before their jobs are failed for them.
pub const ABORT_GRACE: Duration = Duration::from_secs(10);

/// A kind's source and what it found to read.
type Planned = (Arc<dyn Source>, SourcePlan);

/// How to control a running ingestor.
#[derive(Clone)]
pub struct IngestorHandle {
    pub stop: Recipient<StopIngest>,
    pub abort: Recipient<AbortIngest>,
}

/// Starts an ingestor for a job; a seam, so tests can put probes in its place.
pub trait IngestorSpawner: Send + Sync {
    fn spawn(&self, job: IngestJob, report_to: Recipient<IngestFinished>) -> IngestorHandle;
}

/// What every run shares.
#[derive(Clone)]
pub struct RunDeps {
    pub sources: Arc<dyn SourceFactory>,
    pub ingestors: Arc<dyn IngestorSpawner>,
    pub recorder: Recipient<RecordStatus>,
    /// `collections.name_template`: `{persona}` and `{kind}` are replaced.
    pub collection_template: String,
    pub embedding_model: String,
    pub dimension: usize,
    pub soft_time_limit: Duration,
    pub time_limit: Duration,
    /// [`crate::manifest::fingerprint`] of the engine's settings, by kind.
    pub fingerprints: Arc<BTreeMap<Kind, Arc<str>>>,
    /// Counts the tokens embedded (the provider's counter).
    pub tokens: TokenCounter,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OrchestratorCounters {
    pub started: Vec<Kind>,
    pub finished: Vec<Kind>,
    pub soft_limit_hit: bool,
    pub hard_limit_hit: bool,
}

pub struct Orchestrator {
    request: RunRequest,
    deps: RunDeps,
    reply: Option<oneshot::Sender<RunOutcome>>,
    running: BTreeMap<Uuid, IngestorHandle>,
    /// Jobs whose ingestor was started: those record their own end.
    spawned: HashSet<Uuid>,
    outcomes: BTreeMap<Uuid, JobOutcome>,
    started_at: Instant,
    counters: OrchestratorCounters,
    /// Why the run was aborted, if it was (later aborts change nothing).
    aborted: Option<String>,
}

/// Ends the run now, failing its unfinished jobs with `reason`, as the hard time limit does
/// (the worker is shutting down and gives the message back to its queue).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct AbortRun {
    pub reason: String,
}

impl Orchestrator {
    pub fn new(request: RunRequest, deps: RunDeps, reply: oneshot::Sender<RunOutcome>) -> Self {
        Self {
            request,
            deps,
            reply: Some(reply),
            running: BTreeMap::new(),
            spawned: HashSet::new(),
            outcomes: BTreeMap::new(),
            started_at: Instant::now(),
            counters: OrchestratorCounters::default(),
            aborted: None,
        }
    }

    /// Jobs its task completed before: their outcome stands (their vector count), and they are
    /// not run again.
    fn completed_before(&mut self, completed: Vec<(Uuid, u64)>) {
        for (job_id, vectors) in completed {
            let Some(job) = self.request.jobs.iter().find(|j| j.id == job_id).cloned() else {
                continue;
            };
            let outcome = JobOutcome {
                job_id,
                kind: job.kind,
                collection: self.collection(job.kind).name,
                result: Ok(JobStats {
                    vectors,
                    ..JobStats::default()
                }),
            };
            self.request
                .watch
                .tell(&RunEvent::JobEnded(outcome.clone()));
            self.spawned.insert(job_id);
            self.outcomes.insert(job_id, outcome);
        }
    }

    fn collection(&self, kind: Kind) -> CollectionSpec {
        CollectionSpec {
            name: crate::naming::collection_name(
                &self.deps.collection_template,
                self.request.persona.as_str(),
                kind.as_str(),
            ),
            embedding_model: self.deps.embedding_model.clone(),
            dimension: self.deps.dimension,
        }
    }

    fn job_failed_early(&mut self, job: &JobRef, error: JobError) {
        let collection = self.collection(job.kind).name;
        self.outcomes.insert(
            job.id,
            JobOutcome {
                job_id: job.id,
                kind: job.kind,
                collection,
                result: Err(error),
            },
        );
    }

    /// Fails the jobs that never started; the recorder is told before the run ends.
    fn fail_all(&mut self, error: &JobError) {
        for job in self.request.jobs.clone() {
            if !self.outcomes.contains_key(&job.id) {
                self.job_failed_early(&job, error.clone());
            }
        }
    }

    fn start_ingestors(
        &mut self,
        plans: Vec<(JobRef, Result<Planned, JobError>)>,
        mut manifests: BTreeMap<Kind, KindManifest>,
        ctx: &mut Context<Self>,
    ) {
        let persona = self.request.persona.clone();
        for (job, planned) in plans {
            let (source, plan) = match planned {
                Ok(planned) => planned,
                Err(error) => {
                    self.job_failed_early(&job, error);
                    continue;
                }
            };
            let ingest = IngestJob {
                job_id: job.id,
                persona: persona.clone(),
                kind: job.kind,
                collection: self.collection(job.kind),
                source,
                plan,
                rerun: self.request.rerun,
                previous: manifests.remove(&job.kind).map(Arc::new),
                force: self.request.force,
                fingerprint: self.deps.fingerprints[&job.kind].clone(),
                tokens: self.deps.tokens.clone(),
            };
            let handle = self.deps.ingestors.spawn(ingest, ctx.address().recipient());
            self.request.watch.tell(&RunEvent::JobStarted {
                job_id: job.id,
                kind: job.kind,
            });
            self.counters.started.push(job.kind);
            self.spawned.insert(job.id);
            self.running.insert(job.id, handle);
        }
        let soft = self
            .request
            .soft_time_limit
            .unwrap_or(self.deps.soft_time_limit);
        let hard = self.request.time_limit.unwrap_or(self.deps.time_limit);
        ctx.run_later(soft, move |act, _| {
            act.counters.soft_limit_hit = true;
            let reason = format!("soft time limit of {} s exceeded", soft.as_secs());
            for handle in act.running.values() {
                handle.stop.do_send(StopIngest {
                    reason: reason.clone(),
                });
            }
        });
        ctx.run_later(hard, move |act, ctx| {
            act.counters.hard_limit_hit = true;
            act.abort(
                format!("hard time limit of {} s exceeded", hard.as_secs()),
                ctx,
            );
        });
    }

    /// Aborts every running ingestor with `reason` (each fails its job with it). One that does
    /// not even answer an abort is given up on after `ABORT_GRACE`: its job is failed here, so
    /// that nothing stays processing.
    fn abort(&mut self, reason: String, ctx: &mut Context<Self>) {
        for handle in self.running.values() {
            handle.abort.do_send(AbortIngest {
                reason: reason.clone(),
            });
        }
        ctx.run_later(ABORT_GRACE, move |act, ctx| {
            let stuck: Vec<Uuid> = act.running.keys().copied().collect();
            if stuck.is_empty() {
                return;
            }
            for job_id in stuck {
                act.running.remove(&job_id);
                act.spawned.remove(&job_id);
                if let Some(job) = act.request.jobs.iter().find(|j| j.id == job_id).cloned() {
                    act.job_failed_early(
                        &job,
                        JobError::Stopped(format!("{reason}; the ingestor did not stop")),
                    );
                }
            }
            act.finish(ctx);
        });
    }

    /// Records the jobs that failed before starting and the persona's final status, answers
    /// the outcome, and stops.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        let recorder = self.deps.recorder.clone();
        let persona = self.request.persona.clone();
        let never_started: Vec<(Uuid, Kind, String)> = self
            .outcomes
            .iter()
            .filter(|(id, _)| !self.spawned.contains(*id))
            .filter_map(|(id, o)| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| (*id, o.kind, e.to_string()))
            })
            .collect();
        let jobs: Vec<JobOutcome> = self
            .request
            .jobs
            .iter()
            .filter_map(|job| self.outcomes.get(&job.id).cloned())
            .collect();
        let error = run_error(&jobs);
        let recorded_error = error.clone();
        let work = async move {
            for (job_id, kind, error) in never_started {
                // A job that never read a file leaves its kind's manifest as it was (settled).
                let manifest = Some(ManifestChange::Forget {
                    persona: persona.clone(),
                    kind,
                    sources: Vec::new(),
                });
                send(
                    &recorder,
                    StatusUpdate::JobFailed {
                        job_id,
                        error,
                        vectors_present: None,
                        manifest,
                    },
                )
                .await?;
            }
            send(
                &recorder,
                StatusUpdate::FinishRun {
                    persona,
                    error: recorded_error,
                },
            )
            .await
        };
        ctx.wait(work.into_actor(self).map(|recorded, act, ctx| {
            let error = match recorded {
                Err(e) => Some(format!("the run's end could not be recorded: {e}")),
                Ok(_) => error,
            };
            let outcome = RunOutcome {
                persona: act.request.persona.clone(),
                status: if error.is_none() {
                    PersonaStatus::Active
                } else {
                    PersonaStatus::Failed
                },
                jobs,
                error,
                elapsed: act.started_at.elapsed(),
            };
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(outcome);
            }
            ctx.stop();
        }));
    }
}

async fn send(
    recorder: &Recipient<RecordStatus>,
    update: StatusUpdate,
) -> Result<Recorded, String> {
    match recorder.send(RecordStatus(update)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("status recorder unreachable: {e}")),
    }
}

impl Handler<IngestFinished> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: IngestFinished, ctx: &mut Context<Self>) {
        if self.running.remove(&msg.job_id).is_none() {
            return;
        }
        self.counters.finished.push(msg.kind);
        let collection = self.collection(msg.kind).name;
        let outcome = JobOutcome {
            job_id: msg.job_id,
            kind: msg.kind,
            collection,
            result: msg.result,
        };
        self.request
            .watch
            .tell(&RunEvent::JobEnded(outcome.clone()));
        self.outcomes.insert(msg.job_id, outcome);
        if self.running.is_empty() {
            self.finish(ctx);
        }
    }
}

impl Handler<AbortRun> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: AbortRun, ctx: &mut Context<Self>) {
        if self.aborted.is_none() {
            self.aborted = Some(msg.reason.clone());
            self.abort(msg.reason, ctx);
        }
    }
}

impl Handler<Observe<OrchestratorCounters>> for Orchestrator {
    type Result = MessageResult<Observe<OrchestratorCounters>>;

    fn handle(&mut self, _: Observe<OrchestratorCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

mod run;
mod start;

pub use run::{JobOutcome, JobWatch, RunEvent, RunOutcome, RunRequest};

#[cfg(test)]
mod tests;
