//! The Orchestrator alone: a probe spawner in place of the ingestors, a probe in place of the
//! recorder, static sources; time limits in virtual time.

use crate::actors::status_recorder::Recorded;
use std::sync::Mutex;

use super::*;
use crate::actors::ingestor::{JobError, JobStats};
use crate::testkit::{self, probe, ProbeHandle, StaticSources};
use crate::PersonaId;

/// Records the ingestors it is asked for; their stop and abort go to two shared probes.
struct ProbeSpawner {
    spawned: Mutex<Vec<(IngestJob, Recipient<IngestFinished>)>>,
    stop: ProbeHandle<StopIngest>,
    abort: ProbeHandle<AbortIngest>,
}

impl IngestorSpawner for ProbeSpawner {
    fn spawn(&self, job: IngestJob, report_to: Recipient<IngestFinished>) -> IngestorHandle {
        self.spawned.lock().unwrap().push((job, report_to));
        IngestorHandle {
            stop: self.stop.recipient(),
            abort: self.abort.recipient(),
        }
    }
}

impl ProbeSpawner {
    fn kinds(&self) -> Vec<Kind> {
        self.spawned
            .lock()
            .unwrap()
            .iter()
            .map(|(job, _)| job.kind)
            .collect()
    }

    /// Reports the end of the job of `kind`, as its ingestor would.
    fn finish(&self, kind: Kind, result: Result<u64, &str>) {
        let spawned = self.spawned.lock().unwrap();
        let (job, report_to) = spawned.iter().find(|(job, _)| job.kind == kind).unwrap();
        report_to.do_send(IngestFinished {
            job_id: job.job_id,
            kind,
            result: result
                .map(|vectors| JobStats {
                    vectors,
                    ..JobStats::default()
                })
                .map_err(|e| JobError::Engine(e.to_owned())),
        });
    }
}

struct Harness {
    addr: Addr<Orchestrator>,
    spawner: Arc<ProbeSpawner>,
    recorder: ProbeHandle<RecordStatus>,
    outcome: oneshot::Receiver<RunOutcome>,
}

fn start(sources: StaticSources, request: RunRequest) -> Harness {
    let recorder = probe(|_: &RecordStatus| Ok(Recorded::default()));
    start_with_recorder(sources, request, recorder)
}

fn start_with_recorder(
    sources: StaticSources,
    request: RunRequest,
    recorder: ProbeHandle<RecordStatus>,
) -> Harness {
    let spawner = Arc::new(ProbeSpawner {
        spawned: Mutex::new(Vec::new()),
        stop: probe(|_: &StopIngest| ()),
        abort: probe(|_: &AbortIngest| ()),
    });
    let deps = RunDeps {
        sources: Arc::new(sources),
        ingestors: spawner.clone(),
        recorder: recorder.recipient(),
        collection_template: "{persona}_{kind}".into(),
        embedding_model: "m".into(),
        dimension: 2,
        soft_time_limit: Duration::from_secs(6900),
        time_limit: Duration::from_secs(7200),
        fingerprints: Arc::new(Kind::ALL.iter().map(|k| (*k, "f".into())).collect()),
        tokens: Default::default(),
    };
    let (reply, outcome) = oneshot::channel();
    let addr = Orchestrator::new(request, deps, reply).start();
    Harness {
        addr,
        spawner,
        recorder,
        outcome,
    }
}

fn everything() -> StaticSources {
    StaticSources::with(&[(Kind::Works, 10), (Kind::Quotes, 10), (Kind::Profile, 10)])
}

fn request() -> RunRequest {
    RunRequest::new(
        PersonaId::parse("p").unwrap(),
        &[Kind::Quotes, Kind::Works, Kind::Profile],
    )
}

fn finish_run_error(recorder: &ProbeHandle<RecordStatus>) -> Option<String> {
    match recorder.received().last() {
        Some(RecordStatus(StatusUpdate::FinishRun { error, .. })) => error.clone(),
        other => panic!("the run's end was not recorded last: {other:?}"),
    }
}

async fn spawned(harness: &Harness, n: usize) {
    while harness.spawner.kinds().len() < n {
        testkit::settle().await;
    }
}

#[actix::test]
async fn profile_starts_first_and_works_and_quotes_run_alongside() {
    let harness = start(everything(), request());
    spawned(&harness, 3).await;
    assert_eq!(
        harness.spawner.kinds(),
        [Kind::Profile, Kind::Works, Kind::Quotes]
    );
    assert!(matches!(
        harness.recorder.received()[0],
        RecordStatus(StatusUpdate::BeginRun { .. })
    ));
    for kind in Kind::ALL {
        harness.spawner.finish(kind, Ok(10));
    }
    let outcome = harness.outcome.await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Active);
    assert_eq!(outcome.jobs.len(), 3);
    assert_eq!(finish_run_error(&harness.recorder), None);
}

#[actix::test]
async fn each_job_is_told_to_the_watcher_as_it_ends_before_the_run_is_over() {
    let (watch, mut finished) = JobWatch::channel();
    let mut harness = start(everything(), RunRequest { watch, ..request() });
    spawned(&harness, 3).await;
    harness.spawner.finish(Kind::Profile, Ok(4));
    let profile = finished.recv().await.unwrap();
    assert_eq!(
        (profile.kind, profile.result.unwrap().vectors),
        (Kind::Profile, 4)
    );
    // Every message sent to the Orchestrator so far has been handled: had it ended the run,
    // the outcome would be there.
    let _: OrchestratorCounters = testkit::observe(&harness.addr).await;
    testkit::settle().await;
    assert!(
        harness.outcome.try_recv().is_err(),
        "works and quotes still run"
    );
    harness
        .spawner
        .finish(Kind::Works, Err("a.txt:3: not valid UTF-8"));
    let works = finished.recv().await.unwrap();
    assert_eq!(
        works.result.unwrap_err().to_string(),
        "a.txt:3: not valid UTF-8"
    );
    harness.spawner.finish(Kind::Quotes, Ok(5));
    assert_eq!(finished.recv().await.unwrap().kind, Kind::Quotes);
    harness.outcome.await.unwrap();
}

#[actix::test]
async fn one_failed_kind_fails_the_persona_naming_it() {
    let harness = start(everything(), request());
    spawned(&harness, 3).await;
    harness.spawner.finish(Kind::Profile, Ok(1));
    harness
        .spawner
        .finish(Kind::Works, Err("a.txt:3: not valid UTF-8"));
    harness.spawner.finish(Kind::Quotes, Ok(5));
    let outcome = harness.outcome.await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Failed);
    let expected = "failed: works (a.txt:3: not valid UTF-8)";
    assert_eq!(outcome.error.as_deref(), Some(expected));
    assert_eq!(
        finish_run_error(&harness.recorder).as_deref(),
        Some(expected)
    );
}

#[actix::test]
async fn every_kind_failing_names_them_all() {
    let harness = start(everything(), request());
    spawned(&harness, 3).await;
    for kind in Kind::ALL {
        harness.spawner.finish(kind, Err("store down"));
    }
    let outcome = harness.outcome.await.unwrap();
    assert_eq!(
        outcome.error.as_deref(),
        Some("failed: profile (store down); works (store down); quotes (store down)")
    );
}

#[actix::test]
async fn a_missing_persona_fails_every_job_without_starting_one() {
    let sources = StaticSources {
        missing: true,
        ..everything()
    };
    let harness = start(sources, request());
    let outcome = harness.outcome.await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Failed);
    assert!(harness.spawner.kinds().is_empty());
    let failed = harness
        .recorder
        .received()
        .iter()
        .filter(|RecordStatus(u)| matches!(u, StatusUpdate::JobFailed { .. }))
        .count();
    assert_eq!(
        failed, 3,
        "the orchestrator fails the jobs it never started"
    );
    let error = finish_run_error(&harness.recorder).unwrap();
    assert!(
        error.starts_with(
            "failed: profile (persona p not found: nothing at the static sources of p)"
        ),
        "{error}"
    );
}

#[actix::test]
async fn the_soft_limit_asks_ingestors_to_stop_and_the_hard_limit_aborts_them() {
    testkit::pause();
    let started = tokio::time::Instant::now();
    let mut request = request();
    request.soft_time_limit = Some(Duration::from_secs(10));
    request.time_limit = Some(Duration::from_secs(20));
    let harness = start(everything(), request);
    spawned(&harness, 3).await;

    let stop = harness.spawner.stop.expect_message().await;
    assert_eq!(stop.reason, "soft time limit of 10 s exceeded");
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert_eq!(harness.spawner.abort.count(), 0);

    let abort = harness.spawner.abort.expect_message().await;
    assert_eq!(abort.reason, "hard time limit of 20 s exceeded");
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert_eq!(harness.spawner.stop.count(), 3);

    // These probes never stop: after the grace period, the orchestrator fails their jobs itself.
    let outcome = harness.outcome.await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(20) + ABORT_GRACE);
    assert_eq!(outcome.status, PersonaStatus::Failed);
    for job in &outcome.jobs {
        assert_eq!(
            job.result.as_ref().unwrap_err().to_string(),
            "hard time limit of 20 s exceeded; the ingestor did not stop"
        );
    }
    let failed = harness
        .recorder
        .received()
        .iter()
        .filter(|RecordStatus(u)| matches!(u, StatusUpdate::JobFailed { .. }))
        .count();
    assert_eq!(failed, 3);
}

#[actix::test]
async fn an_aborted_run_aborts_the_ingestors_still_running_and_ends_failed() {
    let harness = start(everything(), request());
    spawned(&harness, 3).await;
    harness.spawner.finish(Kind::Profile, Ok(4));
    testkit::settle().await;
    let reason = "the worker shut down before the run ended";
    harness.addr.do_send(AbortRun {
        reason: reason.into(),
    });
    harness.addr.do_send(AbortRun {
        reason: "a second abort changes nothing".into(),
    });
    testkit::settle().await;
    let aborts = harness.spawner.abort.received();
    assert_eq!(
        aborts.len(),
        2,
        "works and quotes, not the finished profile"
    );
    assert!(aborts.iter().all(|a| a.reason == reason));
    for kind in [Kind::Works, Kind::Quotes] {
        harness.spawner.finish(kind, Err(reason));
    }
    let outcome = harness.outcome.await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Failed);
    assert_eq!(outcome.jobs.iter().filter(|j| j.result.is_ok()).count(), 1);
}

#[actix::test]
async fn jobs_its_task_completed_before_are_not_run_again_but_counted_and_told() {
    let request = request();
    let works = request
        .jobs
        .iter()
        .find(|j| j.kind == Kind::Works)
        .unwrap()
        .id;
    // The recorder finds the works job completed under this task, with 12 vectors.
    let recorder = probe(move |RecordStatus(update): &RecordStatus| {
        Ok(match update {
            StatusUpdate::BeginRun { .. } => Recorded {
                completed_before: vec![(works, 12)],
                ..Recorded::default()
            },
            _ => Recorded::default(),
        })
    });
    let (watch, mut told) = JobWatch::channel();
    let harness = start_with_recorder(everything(), RunRequest { watch, ..request }, recorder);
    let first = told.recv().await.unwrap();
    assert_eq!(
        (first.kind, first.result.unwrap().vectors),
        (Kind::Works, 12)
    );
    spawned(&harness, 2).await;
    assert_eq!(harness.spawner.kinds(), [Kind::Profile, Kind::Quotes]);
    harness.spawner.finish(Kind::Profile, Ok(3));
    harness.spawner.finish(Kind::Quotes, Ok(4));
    let outcome = harness.outcome.await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Active);
    let mut vectors: Vec<(Kind, u64)> = outcome
        .jobs
        .iter()
        .map(|j| (j.kind, j.result.as_ref().unwrap().vectors))
        .collect();
    vectors.sort();
    let mut expected = vec![(Kind::Works, 12), (Kind::Quotes, 4), (Kind::Profile, 3)];
    expected.sort();
    assert_eq!(vectors, expected);
    assert_eq!(harness.spawner.kinds().len(), 2, "works never started");
    let failed = harness
        .recorder
        .received()
        .into_iter()
        .filter(|RecordStatus(u)| matches!(u, StatusUpdate::JobFailed { .. }))
        .count();
    assert_eq!(
        failed, 0,
        "the completed job is not failed as never started"
    );
}
