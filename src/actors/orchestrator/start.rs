//! The start of a run: its rows recorded (and what its task completed before, and the kinds'
//! manifests, found), what each kind has to read listed off the actor thread, then its ingestors
//! started, or the run failed at once when there is nothing to ingest.

use actix::prelude::*;

use super::{send, Orchestrator, RunEvent};
use crate::actors::panic_message;
use crate::actors::status_recorder::StatusUpdate;
use std::sync::Arc;

use crate::actors::ingestor::JobError;
use crate::jobs::JobRef;
use crate::Kind;

impl Actor for Orchestrator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let recorder = self.deps.recorder.clone();
        let sources = self.deps.sources.clone();
        let request = self.request.clone();
        let watch = self.request.watch.clone();
        let setup = async move {
            let begun = send(
                &recorder,
                StatusUpdate::BeginRun {
                    persona: request.persona.clone(),
                    jobs: request.jobs.clone(),
                },
            )
            .await
            .map_err(|e| {
                JobError::Recording(format!("could not record the start of the run: {e}"))
            })?;
            watch.tell(&RunEvent::Begun);
            let completed = begun.completed_before;
            let manifests = begun.manifests;
            if !sources.persona_exists(&request.persona) {
                return Err(JobError::NoCorpus(format!(
                    "persona {} not found: nothing at {}",
                    request.persona,
                    sources.describe(&request.persona)
                )));
            }
            // Listing files is blocking I/O: off the actor thread.
            let to_run: Vec<JobRef> = crate::jobs::still_to_run(&request.jobs, &completed)
                .cloned()
                .collect();
            let persona = request.persona.clone();
            let plans = tokio::task::spawn_blocking(move || {
                to_run
                    .iter()
                    .map(|job| {
                        let planned = sources
                            .source(&persona, job.kind)
                            .and_then(|source| Ok((source.clone(), source.plan()?)))
                            .map_err(|e| JobError::Reading(Arc::new(e)));
                        (job.clone(), planned)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| {
                JobError::Engine(format!(
                    "listing the persona's files failed: {}",
                    describe_join_error(e)
                ))
            })?;
            Ok((completed, plans, manifests))
        };
        ctx.wait(setup.into_actor(self).map(|setup, act, ctx| {
            match setup {
                Err(error) => act.fail_all(&error),
                Ok((completed, plans, manifests)) => {
                    let nothing = completed.is_empty()
                        && plans
                            .iter()
                            .all(|(_, p)| p.as_ref().is_ok_and(|(_, p)| p.files.is_empty()));
                    if nothing {
                        let looked: Vec<String> = plans
                            .iter()
                            .flat_map(|(_, p)| {
                                p.as_ref()
                                    .map(|(_, p)| p.missing.clone())
                                    .unwrap_or_default()
                            })
                            .collect();
                        act.fail_all(&JobError::NoCorpus(format!(
                            "persona {} has nothing to ingest: found none of {}",
                            act.request.persona,
                            looked.join(", ")
                        )));
                    } else {
                        act.completed_before(completed);
                        let mut plans = plans;
                        plans.sort_by_key(|(job, _)| Kind::ALL.iter().position(|k| *k == job.kind));
                        act.start_ingestors(plans, manifests, ctx);
                    }
                }
            }
            if act.running.is_empty() {
                act.finish(ctx);
            }
        }));
    }
}

fn describe_join_error(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => format!("panicked: {}", panic_message(&*panic)),
        Err(e) => e.to_string(),
    }
}
