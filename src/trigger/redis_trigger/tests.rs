//! The RedisTrigger alone: the testkit's `MemoryBroker` in place of Redis, a probe in place of
//! the engine (answering `RunTask` as each test scripts), time virtual.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use serde_json::{json, Map, Value};

use super::*;
use crate::actors::ingestor::{JobError, JobStats};
use crate::actors::orchestrator::{JobOutcome, RunOutcome};
use crate::actors::supervisor::TaskOutcome;
use crate::testkit::{self, observe, probe, MemoryBroker, ProbeHandle};
use crate::trigger::celery::{decode, encode, TaskState};
use crate::{PersonaId, PersonaStatus};

const QUEUE: &str = "celery";
const WORKER: &str = "w1";

struct Harness {
    broker: Arc<MemoryBroker>,
    engine: ProbeHandle<RunTask>,
    abort: ProbeHandle<AbortRuns>,
    trigger: Addr<RedisTrigger>,
}

fn start(concurrency: usize, grace: Duration, engine: ProbeHandle<RunTask>) -> Harness {
    let broker = Arc::new(MemoryBroker::new(&[QUEUE]));
    let abort = probe(|_: &AbortRuns| ());
    let config = TriggerConfig {
        worker_id: WORKER.into(),
        hostname: "test@host".into(),
        concurrency,
        prefetch: 1,
        visibility_timeout: Duration::from_secs(60),
        shutdown_grace: grace,
        names: TaskNames::default(),
    };
    let ports = TriggerPorts {
        queue: broker.clone(),
        results: broker.clone(),
        locks: broker.clone(),
        events: Some(broker.clone()),
    };
    let peers = TriggerPeers {
        engine: engine.recipient(),
        abort_runs: abort.recipient(),
    };
    let trigger = RedisTrigger::new(config, ports, peers).start();
    Harness {
        broker,
        engine,
        abort,
        trigger,
    }
}

/// `ingest_persona_works(persona, job_id)` under `task_id`, due in `countdown` if given.
fn message(task_id: &str, persona: &str, countdown: Option<Duration>) -> Vec<u8> {
    let mut kwargs = Map::new();
    kwargs.insert("persona_id".into(), persona.into());
    kwargs.insert("job_id".into(), uuid::Uuid::new_v4().to_string().into());
    let raw = encode(
        "workers.tasks.ingest_persona_works",
        task_id,
        &[],
        &kwargs,
        QUEUE,
        "t@h",
    );
    let mut envelope: Value = serde_json::from_str(&raw).unwrap();
    if let Some(countdown) = countdown {
        let eta = Utc::now() + chrono::Duration::from_std(countdown).unwrap();
        envelope["headers"]["eta"] = eta.to_rfc3339().into();
    }
    envelope.to_string().into_bytes()
}

fn outcome(task: &RunTask, result: Result<u64, JobError>) -> RunOutcome {
    RunOutcome {
        persona: task.persona.clone(),
        status: if result.is_ok() {
            PersonaStatus::Active
        } else {
            PersonaStatus::Failed
        },
        jobs: task
            .jobs
            .iter()
            .map(|job| JobOutcome {
                job_id: job.id,
                kind: job.kind,
                collection: "c".into(),
                result: result.clone().map(|vectors| JobStats {
                    vectors,
                    ..JobStats::default()
                }),
            })
            .collect(),
        error: result.as_ref().err().map(|e| e.message.clone()),
        elapsed: Duration::ZERO,
    }
}

fn done(task: &RunTask) -> TaskOutcome {
    TaskOutcome::Done(outcome(task, Ok(7)))
}

/// Waits, in steps of virtual time, until `check` holds (five virtual seconds at most).
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        testkit::advance(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5 s");
}

fn persona_of(task: &RunTask) -> &str {
    task.persona.as_str()
}

#[actix::test]
async fn a_message_held_for_its_eta_takes_a_slot_only_when_due() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(done));
    harness
        .broker
        .push(QUEUE, message("later", "a", Some(Duration::from_secs(600))));
    harness.broker.push(QUEUE, message("now", "b", None));

    // The one slot is free for the message behind the held one.
    let first = harness.engine.expect_message().await;
    assert_eq!(persona_of(&first), "b");
    until("the first task answered", || {
        harness.broker.results_of("now").last() == Some(&TaskState::Success(json!(7)))
    })
    .await;
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.scheduled, counters.running), (1, 0));
    assert_eq!(harness.broker.in_flight(WORKER).len(), 1, "held in flight");

    testkit::advance(Duration::from_secs(300)).await;
    let _ = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!(harness.engine.count(), 1, "not due yet");

    testkit::advance(Duration::from_secs(301)).await;
    let second = harness.engine.expect_message().await;
    assert_eq!(persona_of(&second), "a");
    until("the held task answered and acknowledged", || {
        harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.answered, counters.scheduled), (2, 0));
}

#[actix::test]
async fn an_expired_message_is_answered_revoked_without_running() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(done));
    let mut envelope: Value = serde_json::from_slice(&message("old", "a", None)).unwrap();
    envelope["headers"]["expires"] = (Utc::now() - chrono::Duration::seconds(5))
        .to_rfc3339()
        .into();
    harness.broker.push(QUEUE, envelope.to_string());
    until("the expired task answered", || {
        !harness.broker.results_of("old").is_empty() && harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    assert!(matches!(
        &harness.broker.results_of("old")[..],
        [TaskState::Failure { exc_type, .. }] if exc_type == "TaskRevokedError"
    ));
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.expired, harness.engine.count()), (1, 0));
}

#[actix::test]
async fn a_retry_is_republished_with_its_countdown_and_frees_the_slot_at_once() {
    testkit::pause();
    // Persona a fails transiently on its first run; everything else succeeds.
    let engine = probe(|task: &RunTask| {
        if persona_of(task) == "a" && task.retries == 0 {
            TaskOutcome::Retry {
                after: Duration::from_secs(30),
                retry: 1,
                outcome: outcome(task, Err(JobError::retryable("provider: 503"))),
            }
        } else {
            done(task)
        }
    });
    let harness = start(1, Duration::from_secs(30), engine);
    harness.broker.push(QUEUE, message("ta", "a", None));
    harness.broker.push(QUEUE, message("tb", "b", None));

    assert_eq!(persona_of(&harness.engine.expect_message().await), "a");
    // b runs at once: a's slot was freed by its retry, not held for its 30 s.
    assert_eq!(persona_of(&harness.engine.expect_message().await), "b");
    assert!(matches!(
        harness.broker.results_of("ta").last(),
        Some(TaskState::Retry { exc_message, .. }) if exc_message.contains("503")
    ));
    until("b answered", || {
        harness.broker.results_of("tb").last() == Some(&TaskState::Success(json!(7)))
    })
    .await;
    // a came back as a new message with retries + 1 and its eta, held without a slot.
    until("a's retry taken and held", || {
        harness.broker.in_flight(WORKER).len() == 1
    })
    .await;
    let held = decode(&harness.broker.in_flight(WORKER)[0]).unwrap();
    assert_eq!((held.id.as_str(), held.retries), ("ta", 1));
    let wait = held.eta.unwrap().with_timezone(&Utc) - Utc::now();
    assert!(
        wait.num_seconds() > 20 && wait.num_seconds() <= 30,
        "{wait}"
    );
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.retried, counters.scheduled), (1, 1));

    testkit::advance(Duration::from_secs(31)).await;
    let again = harness.engine.expect_message().await;
    assert_eq!((persona_of(&again), again.retries), ("a", 1));
    until("a answered", || {
        harness.broker.results_of("ta").last() == Some(&TaskState::Success(json!(7)))
    })
    .await;
    assert!(harness
        .broker
        .events()
        .contains(&("task-retried".into(), Some("ta".into()))));
}

#[actix::test]
async fn any_bytes_are_dead_lettered_with_the_reason_and_valid_work_goes_on() {
    testkit::pause();
    let harness = start(2, Duration::from_secs(30), probe(done));
    let with_body = |body: &[u8]| {
        let mut envelope: Value = serde_json::from_slice(&message("x", "a", None)).unwrap();
        envelope["body"] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body).into();
        envelope.to_string().into_bytes()
    };
    let mut pickle: Value = serde_json::from_slice(&message("p", "a", None)).unwrap();
    pickle["content-type"] = "application/x-python-serialize".into();
    let garbage: Vec<(Vec<u8>, &str)> = vec![
        (b"\xff\xfe not utf-8".to_vec(), "not a JSON envelope"),
        (b"{\"body\": \"\xc3\x28\"}".to_vec(), "not a JSON envelope"),
        (with_body(b"\xff\x00\x80 not utf-8"), "body: not JSON"),
        (pickle.to_string().into_bytes(), "content type"),
        (b"".to_vec(), "not a JSON envelope"),
    ];
    for (raw, _) in &garbage {
        harness.broker.push(QUEUE, raw.clone());
    }
    harness.broker.push(QUEUE, message("good", "a", None));

    assert_eq!(persona_of(&harness.engine.expect_message().await), "a");
    until("every message dealt with", || {
        harness.broker.in_flight(WORKER).is_empty()
            && harness.broker.dead_letters().len() == garbage.len()
    })
    .await;
    let dead = harness.broker.dead_letters();
    for ((raw, why), (reason, bytes)) in garbage.iter().zip(&dead) {
        assert_eq!(raw, bytes, "the raw bytes are kept");
        assert!(reason.contains(why), "{reason:?} should say {why:?}");
    }
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.dead_lettered, counters.answered), (5, 1));
}

#[actix::test]
async fn shutdown_lets_running_work_finish_within_its_grace() {
    testkit::pause();
    let harness = start(2, Duration::from_secs(30), probe(done));
    harness.engine.hold_replies();
    harness.broker.push(QUEUE, message("t1", "a", None));
    harness
        .broker
        .push(QUEUE, message("t2", "b", Some(Duration::from_secs(600))));
    harness.engine.expect_message().await;
    let stopped = harness.trigger.send(Shutdown);
    let stopped = actix::spawn(stopped);
    testkit::advance(Duration::from_secs(10)).await;
    harness.engine.release_replies();
    let counters = stopped.await.unwrap().unwrap();
    assert_eq!(counters.answered, 1);
    assert_eq!(counters.requeued_at_exit, 1, "the held message goes back");
    assert_eq!(harness.broker.waiting(QUEUE).len(), 1);
    assert_eq!(harness.abort.count(), 0, "nothing aborted");
    assert_eq!(harness.broker.retired(), [WORKER]);
    assert!(harness.broker.in_flight(WORKER).is_empty());
}

#[actix::test]
async fn shutdown_past_its_grace_aborts_the_runs_and_requeues_their_messages() {
    testkit::pause();
    let harness = start(2, Duration::from_secs(30), probe(done));
    harness.engine.hold_replies();
    harness.broker.push(QUEUE, message("t1", "a", None));
    harness.broker.push(QUEUE, message("t2", "b", None));
    harness.engine.expect_message().await;
    harness.engine.expect_message().await;
    let stopped = actix::spawn(harness.trigger.send(Shutdown));
    testkit::advance(Duration::from_secs(29)).await;
    assert_eq!(harness.abort.count(), 0, "still within the grace");
    testkit::advance(Duration::from_secs(2)).await;
    harness.abort.expect_message().await;
    // The engine never answers (its runs stuck): after the abort's own grace, they are left.
    testkit::advance(ABORT_GRACE + Duration::from_secs(6)).await;
    let counters = stopped.await.unwrap().unwrap();
    assert_eq!((counters.answered, counters.requeued_at_exit), (0, 2));
    assert_eq!(harness.broker.waiting(QUEUE).len(), 2);
    assert!(harness.broker.in_flight(WORKER).is_empty());
    assert_eq!(harness.broker.locks_held(), 0, "locks released or retired");
    for task in ["t1", "t2"] {
        assert!(
            !harness
                .broker
                .results_of(task)
                .iter()
                .any(|s| matches!(s, TaskState::Success(_) | TaskState::Failure { .. })),
            "{task} is answered by the worker that runs it next"
        );
    }
    let _ = PersonaId::parse("a").unwrap();
}

#[actix::test]
async fn redis_away_while_fetching_is_ridden_out() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(done));
    harness.broker.push(QUEUE, message("t0", "a", None));
    harness.engine.expect_message().await;
    until("t0 acknowledged", || {
        harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    harness.broker.set_down(true);
    let mut counters = TriggerCounters::default();
    for _ in 0..50 {
        testkit::advance(Duration::from_millis(100)).await;
        counters = observe(&harness.trigger).await;
        if counters.fetch_errors >= 2 {
            break;
        }
    }
    assert!(counters.fetch_errors >= 2, "{counters:?}");
    harness.broker.set_down(false);
    harness.broker.push(QUEUE, message("t1", "b", None));
    assert_eq!(persona_of(&harness.engine.expect_message().await), "b");
}
