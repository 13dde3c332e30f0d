//! A batch of status updates written together: one transaction, the reads of the runs it
//! starts in two queries, its transitions as one string of statements and its manifest changes
//! as another where the connection joins writes (see [`Writes`]); the parent module applies
//! the batch one update at a time when this fails.

use std::collections::HashSet;

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::{completed_event, failed_event, started_event, Applied, ProgressWritten};
use crate::actors::status_recorder::open_runs::touched;
use crate::actors::status_recorder::{Recorded, StatusUpdate};
use crate::db::JobsWriter;
use crate::jobs::{self, RunsWrites, TransitionError, Writes};
use crate::manifest;
use crate::{Kind, PersonaId};

/// The batch in one transaction, in parts (see [`independent`]), its progress last. Any error,
/// a refusal among them (see [`write_together`]), rolls it all back.
pub(super) async fn together(
    db: &JobsWriter,
    updates: &[StatusUpdate],
    progress: &[(Uuid, u8)],
) -> Result<(Vec<Applied>, ProgressWritten), TransitionError> {
    let txn = db.begin().await?;
    let mut results = Vec::with_capacity(updates.len());
    let mut rest = updates;
    while !rest.is_empty() {
        let part = &rest[..independent(rest)];
        results.extend(write_together(&txn, part).await?);
        rest = &rest[part.len()..];
    }
    let mut writes = Writes::new();
    let backend = txn.get_database_backend();
    for &(job_id, value) in progress {
        writes.push(jobs::progressed(backend, job_id, value));
    }
    let written = writes.run(&txn).await?;
    txn.commit().await?;
    Ok((
        results,
        ProgressWritten {
            together: true,
            written,
            unwritten: Vec::new(),
        },
    ))
}

/// How many of `updates`, from the first, can be written together: up to a run start that
/// reads rows an earlier one of them writes (its persona, its jobs), as its reads are made
/// before their writes. Within one daemon a persona's runs follow one another, so that is
/// rare: a part is most often the whole batch.
fn independent(updates: &[StatusUpdate]) -> usize {
    let mut personas: HashSet<&PersonaId> = HashSet::new();
    let mut jobs: HashSet<Uuid> = HashSet::new();
    for (at, update) in updates.iter().enumerate() {
        let (its_personas, its_jobs) = touched(update);
        if let StatusUpdate::BeginRun { .. } = update {
            let read_before = its_personas.iter().any(|p| personas.contains(p))
                || its_jobs.iter().any(|j| jobs.contains(j));
            if at > 0 && read_before {
                return at;
            }
        }
        personas.extend(its_personas);
        jobs.extend(its_jobs);
    }
    updates.len()
}

/// Writes `updates` as few statement strings (see [`Writes`]): the rows the run starts read
/// first (one query for their jobs, one for their manifests), then every transition in one
/// string, then the manifest changes in another. A transition that changes fewer rows than it
/// should was refused: the batch is rolled back (an error) and applied one update at a time,
/// which finds which and why.
async fn write_together<C: RunsWrites>(
    txn: &C,
    updates: &[StatusUpdate],
) -> Result<Vec<Applied>, TransitionError> {
    let backend = txn.get_database_backend();
    let run_jobs: Vec<Uuid> = updates
        .iter()
        .flat_map(|update| match update {
            StatusUpdate::BeginRun { jobs, .. } => jobs.iter().map(|j| j.id).collect(),
            _ => Vec::new(),
        })
        .collect();
    let existing = if run_jobs.is_empty() {
        Vec::new()
    } else {
        jobs::job_rows(txn, run_jobs).await?
    };
    let mut transitions = Writes::new();
    let mut rows = 0;
    // The job ends' manifest changes, written after the run starts' unsettling, which a part's
    // job ends follow (a start that reads what an earlier update wrote begins a new part).
    let mut ended = Writes::new();
    let mut results: Vec<Applied> = Vec::with_capacity(updates.len());
    // The run starts accepted: where their answer is, and the kinds whose manifests they read.
    let mut begun = Vec::new();
    for update in updates {
        let result = match update {
            StatusUpdate::BeginRun { persona, jobs } => {
                jobs::begin_run_writes(backend, persona, jobs, &existing, &mut transitions).map(
                    |run| {
                        rows += run.rows;
                        let kinds: Vec<Kind> = jobs::still_to_run(jobs, &run.completed_before)
                            .map(|job| job.kind)
                            .collect();
                        begun.push((results.len(), persona.clone(), kinds));
                        let recorded = Recorded {
                            completed_before: run.completed_before,
                            manifests: Default::default(),
                        };
                        (None, recorded)
                    },
                )
            }
            StatusUpdate::JobStarted { job_id, rerun } => {
                transitions.push(jobs::started(backend, &[*job_id], *rerun));
                rows += 1;
                Ok((started_event(*job_id), Recorded::default()))
            }
            StatusUpdate::JobProgress { .. } => unreachable!("coalesced in the handler"),
            StatusUpdate::JobCompleted {
                job_id,
                total_vectors,
                warning,
                counts,
                manifest,
            } => {
                transitions.push(jobs::completed(
                    backend,
                    *job_id,
                    *total_vectors,
                    warning.clone(),
                    *counts,
                ));
                rows += 1;
                if let Some(change) = manifest {
                    change.writes(backend, &mut ended);
                }
                Ok((
                    completed_event(*job_id, *total_vectors, warning.clone()),
                    Recorded::default(),
                ))
            }
            StatusUpdate::JobFailed {
                job_id,
                error,
                vectors_present,
                manifest,
            } => {
                transitions.push(jobs::failed(backend, *job_id, error, *vectors_present));
                rows += 1;
                if let Some(change) = manifest {
                    change.writes(backend, &mut ended);
                }
                Ok((failed_event(*job_id, error), Recorded::default()))
            }
            StatusUpdate::FinishRun { persona, error } => {
                transitions.push(jobs::finished(backend, persona, error.clone()));
                rows += 1;
                Ok((None, Recorded::default()))
            }
        };
        results.push(result);
    }
    let mut manifests = Writes::new();
    if !begun.is_empty() {
        let asked: Vec<(PersonaId, Vec<Kind>)> = begun
            .iter()
            .map(|(_, persona, kinds)| (persona.clone(), kinds.clone()))
            .collect();
        let loaded = manifest::load_all(txn, &asked).await?;
        for ((at, persona, kinds), found) in begun.into_iter().zip(loaded) {
            if !found.is_empty() {
                manifests.push(manifest::unsettled(backend, &persona, &kinds));
            }
            if let Ok((_, recorded)) = &mut results[at] {
                recorded.manifests = found;
            }
        }
    }
    manifests.append(ended);
    let changed = transitions.run(txn).await?;
    if changed != rows {
        // Which one was refused is for the updates applied alone to find out.
        return Err(TransitionError::Db(format!(
            "{changed} of {rows} rows changed by transitions written together"
        )));
    }
    manifests.run(txn).await?;
    Ok(results)
}
