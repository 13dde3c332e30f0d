//! What the StatusRecorder is told and what it answers: a job's or a run's status update, what
//! applying a run's start found, and the change of a job it publishes for live views.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use crate::counts::JobCounts;
#[cfg(doc)]
use crate::jobs;
use crate::jobs::JobRef;
use crate::manifest::{KindManifest, ManifestChange};
use crate::{JobStatus, Kind, PersonaId};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum StatusUpdate {
    /// Creates missing rows; the persona becomes `ingesting`.
    BeginRun {
        persona: PersonaId,
        jobs: Vec<JobRef>,
    },
    JobStarted {
        job_id: Uuid,
        rerun: bool,
    },
    /// Coalesced: only the latest value per job is written, on the next flush.
    JobProgress {
        job_id: Uuid,
        progress: u8,
    },
    JobCompleted {
        job_id: Uuid,
        total_vectors: u64,
        warning: Option<String>,
        counts: JobCounts,
        /// The kind's manifest as the job left it, written in the same transaction.
        manifest: Option<ManifestChange>,
    },
    JobFailed {
        job_id: Uuid,
        error: String,
        /// The records of the job's kind the store holds after the failure, when known: the
        /// row's `total_vectors` then says what the collection holds, not 0.
        vectors_present: Option<u64>,
        /// The files whose rows to forget, in the same transaction; `None` leaves the kind's
        /// rows unsettled (what the job wrote is not known).
        manifest: Option<ManifestChange>,
    },
    /// The persona becomes `active`, or `failed` with the run's error.
    FinishRun {
        persona: PersonaId,
        error: Option<String>,
    },
}

/// What applying an update found out. Only `BeginRun` finds anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The jobs of the run that its task completed before (job id, vectors): see
    /// [`jobs::begin_run`].
    pub completed_before: Vec<(Uuid, u64)>,
    /// The manifest of each kind the run is to carry out, as it was before (now unsettled).
    pub manifests: BTreeMap<Kind, KindManifest>,
}

/// A change of a job as applied, for progress bars and dashboards.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobEvent {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub total_vectors: u64,
    pub message: Option<String>,
}
