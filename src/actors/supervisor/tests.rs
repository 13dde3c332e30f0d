//! The Supervisor alone: runs are scripted (the test decides when each ends, or makes it
//! vanish as a panicking orchestrator would), the recorder is a probe.

use crate::actors::status_recorder::Recorded;
use std::sync::Mutex;

use super::*;
use crate::actors::orchestrator::AbortRun;
use crate::testkit::{self, probe, ProbeHandle};
use crate::Kind;
use crate::PersonaStatus;
use std::time::Duration;

/// Starts nothing: keeps each run's reply for the test to answer or drop; aborts go to a probe.
struct ScriptedRuns {
    started: Mutex<Vec<String>>,
    open: Mutex<Vec<(RunRequest, oneshot::Sender<RunOutcome>)>>,
    aborts: ProbeHandle<AbortRun>,
}

impl Default for ScriptedRuns {
    fn default() -> Self {
        Self {
            started: Mutex::default(),
            open: Mutex::default(),
            aborts: probe(|_: &AbortRun| ()),
        }
    }
}

impl RunStarter for ScriptedRuns {
    fn start(&self, request: RunRequest) -> StartedRun {
        let (reply, outcome) = oneshot::channel();
        self.started
            .lock()
            .unwrap()
            .push(request.persona.to_string());
        self.open.lock().unwrap().push((request, reply));
        StartedRun {
            outcome,
            abort: self.aborts.recipient(),
        }
    }
}

impl ScriptedRuns {
    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }

    /// Ends the open run of `persona`; with `None` it vanishes without an outcome.
    fn end(&self, persona: &str, status: Option<PersonaStatus>) {
        let mut open = self.open.lock().unwrap();
        let at = open
            .iter()
            .position(|(r, _)| r.persona.as_str() == persona)
            .unwrap();
        let (request, reply) = open.remove(at);
        if let Some(status) = status {
            let _ = reply.send(RunOutcome {
                persona: request.persona,
                status,
                jobs: Vec::new(),
                error: None,
                elapsed: Duration::ZERO,
            });
        }
    }
}

fn request(persona: &str) -> RunRequest {
    RunRequest::new(PersonaId::parse(persona).unwrap(), &[Kind::Works])
}

fn start(
    concurrency: usize,
) -> (
    Addr<Supervisor>,
    Arc<ScriptedRuns>,
    ProbeHandle<RecordStatus>,
) {
    let runs = Arc::new(ScriptedRuns::default());
    let recorder = probe(|_: &RecordStatus| Ok(Recorded::default()));
    let supervisor = Supervisor::new(concurrency, runs.clone(), recorder.recipient()).start();
    (supervisor, runs, recorder)
}

/// Sends a request without waiting for its outcome.
async fn ingest(
    supervisor: &Addr<Supervisor>,
    request: RunRequest,
) -> tokio::task::JoinHandle<RunOutcome> {
    let answer = supervisor.send(IngestPersona(request));
    let handle = actix::spawn(async move { answer.await.unwrap() });
    testkit::settle().await;
    handle
}

#[actix::test]
async fn never_more_personas_at_once_than_the_concurrency() {
    let (supervisor, runs, _) = start(2);
    let mut answers = Vec::new();
    for persona in ["a", "b", "c", "d", "e"] {
        answers.push(ingest(&supervisor, request(persona)).await);
    }
    assert_eq!(runs.started(), ["a", "b"]);
    let counters: SupervisorCounters = testkit::observe(&supervisor).await;
    assert_eq!(counters.waiting, 3);

    runs.end("b", Some(PersonaStatus::Active));
    testkit::settle().await;
    assert_eq!(runs.started(), ["a", "b", "c"]);
    for persona in ["a", "c"] {
        runs.end(persona, Some(PersonaStatus::Active));
        testkit::settle().await;
    }
    runs.end("d", Some(PersonaStatus::Failed));
    testkit::settle().await;
    runs.end("e", Some(PersonaStatus::Active));
    let statuses: Vec<PersonaStatus> = futures::future::join_all(answers)
        .await
        .into_iter()
        .map(|a| a.unwrap().status)
        .collect();
    assert_eq!(statuses[3], PersonaStatus::Failed);
    let counters: SupervisorCounters = testkit::observe(&supervisor).await;
    assert_eq!(
        (
            counters.max_running_seen,
            counters.succeeded,
            counters.failed
        ),
        (2, 4, 1)
    );
}

#[actix::test]
async fn aborting_aborts_the_running_runs_and_fails_the_waiting_ones_unstarted() {
    let (supervisor, runs, _) = start(1);
    let running = ingest(&supervisor, request("a")).await;
    let waiting = ingest(&supervisor, request("b")).await;
    supervisor
        .send(AbortRuns {
            reason: "shutting down".into(),
        })
        .await
        .unwrap();
    let aborted = runs.aborts.received();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].reason, "shutting down");
    let waiting = waiting.await.unwrap();
    assert_eq!(
        (waiting.status, waiting.error.as_deref()),
        (PersonaStatus::Failed, Some("shutting down"))
    );
    assert_eq!(runs.started(), ["a"], "b never started");
    runs.end("a", Some(PersonaStatus::Failed));
    assert_eq!(running.await.unwrap().status, PersonaStatus::Failed);
}

#[actix::test]
async fn a_second_run_of_a_running_persona_waits_for_the_first() {
    let (supervisor, runs, _) = start(4);
    let first = ingest(&supervisor, request("p")).await;
    let second = ingest(&supervisor, request("p")).await;
    let other = ingest(&supervisor, request("q")).await;
    assert_eq!(runs.started(), ["p", "q"], "q overtakes the waiting p");
    runs.end("p", Some(PersonaStatus::Active));
    assert_eq!(first.await.unwrap().status, PersonaStatus::Active);
    testkit::settle().await;
    assert_eq!(runs.started(), ["p", "q", "p"]);
    runs.end("p", Some(PersonaStatus::Active));
    runs.end("q", Some(PersonaStatus::Active));
    second.await.unwrap();
    other.await.unwrap();
}

#[actix::test]
async fn a_run_that_vanishes_is_failed_and_the_supervisor_serves_on() {
    let (supervisor, runs, recorder) = start(1);
    let request_p = request("p");
    let job_id = request_p.jobs[0].id;
    let lost = ingest(&supervisor, request_p).await;
    let next = ingest(&supervisor, request("q")).await;
    runs.end("p", None);
    let outcome = lost.await.unwrap();
    assert_eq!(outcome.status, PersonaStatus::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("ended without an outcome (its orchestrator panicked or was stopped)"),
        "{error}"
    );
    let recorded: Vec<StatusUpdate> = recorder
        .received()
        .into_iter()
        .map(|RecordStatus(u)| u)
        .collect();
    assert!(recorded.contains(&StatusUpdate::JobFailed {
        job_id,
        error: error.clone(),
        vectors_present: None,
        manifest: None,
    }));
    assert!(matches!(
        recorded.last(),
        Some(StatusUpdate::FinishRun { error: Some(_), .. })
    ));

    testkit::settle().await;
    assert_eq!(runs.started(), ["p", "q"], "the next run starts");
    runs.end("q", Some(PersonaStatus::Active));
    assert_eq!(next.await.unwrap().status, PersonaStatus::Active);
    let counters: SupervisorCounters = testkit::observe(&supervisor).await;
    assert_eq!(counters.lost, 1);
}
