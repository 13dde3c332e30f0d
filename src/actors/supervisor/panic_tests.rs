//! A panic inside a real actor's handler: the Supervisor starts real Orchestrators whose
//! ingestor spawner panics for one persona. The run is reported lost, its jobs failed, and the
//! Supervisor serves the next run.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::actors::ingestor::{IngestFinished, IngestJob, JobStats};
use crate::actors::orchestrator::{IngestorHandle, IngestorSpawner, RunDeps};
use crate::actors::status_recorder::{RecordStatus, Recorded, StatusUpdate};
use crate::testkit::{probe, StaticSources};
use crate::{Kind, PersonaStatus};

/// Panics while starting the ingestor of persona `boom`; otherwise the job ends at once.
struct Spawner;

impl IngestorSpawner for Spawner {
    fn spawn(&self, job: IngestJob, report_to: Recipient<IngestFinished>) -> IngestorHandle {
        if job.persona.as_str() == "boom" {
            panic!("scripted panic starting {} {}", job.persona, job.kind);
        }
        report_to.do_send(IngestFinished {
            job_id: job.job_id,
            kind: job.kind,
            result: Ok(JobStats {
                vectors: 3,
                ..JobStats::default()
            }),
        });
        IngestorHandle {
            stop: probe(|_: &crate::actors::ingestor::StopIngest| ()).recipient(),
            abort: probe(|_: &crate::actors::ingestor::AbortIngest| ()).recipient(),
        }
    }
}

#[actix::test]
async fn a_panic_in_an_orchestrators_handler_loses_its_run_and_not_the_next() {
    let recorder = probe(|_: &RecordStatus| Ok(Recorded::default()));
    let deps = RunDeps {
        sources: Arc::new(StaticSources::with(&[(Kind::Works, 3)])),
        ingestors: Arc::new(Spawner),
        recorder: recorder.recipient(),
        collection_template: "{persona}_{kind}".into(),
        embedding_model: "m".into(),
        dimension: 2,
        soft_time_limit: Duration::from_secs(60),
        time_limit: Duration::from_secs(120),
        fingerprints: Arc::new(Kind::ALL.iter().map(|k| (*k, "f".into())).collect()),
        tokens: Default::default(),
    };
    let supervisor =
        Supervisor::new(1, Arc::new(OrchestratorStarter(deps)), recorder.recipient()).start();
    let boom = RunRequest::new(PersonaId::parse("boom").unwrap(), &[Kind::Works]);
    let boom_job = boom.jobs[0].id;
    let lost = supervisor.send(IngestPersona(boom)).await.unwrap();
    assert_eq!(lost.status, PersonaStatus::Failed);
    assert!(
        lost.error
            .as_deref()
            .is_some_and(|e| e.contains("ended without an outcome")),
        "{lost:?}"
    );
    assert!(
        recorder.received().iter().any(|RecordStatus(u)| matches!(
            u,
            StatusUpdate::JobFailed { job_id, .. } if *job_id == boom_job
        )),
        "the lost run's job is failed"
    );

    let fine = RunRequest::new(PersonaId::parse("fine").unwrap(), &[Kind::Works]);
    let next = supervisor.send(IngestPersona(fine)).await.unwrap();
    assert_eq!(next.status, PersonaStatus::Active, "{next:?}");
}
