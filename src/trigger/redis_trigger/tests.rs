//! The RedisTrigger alone: the testkit's `MemoryBroker` in place of Redis, a probe in place of
//! the engine (answering `RunTask` as each test scripts), time virtual. Long because each
//! behaviour is one test over the one harness at the top.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use serde_json::{json, Map, Value};

use super::*;
use crate::actors::ingestor::{JobError, JobStats};
use crate::actors::orchestrator::ABORT_GRACE;
use crate::actors::orchestrator::{JobOutcome, RunOutcome};
use crate::actors::supervisor::{AbortPersona, AbortRuns, RunTask};
use crate::actors::supervisor::{TaskEvent, TaskOutcome};
use crate::config::FullPersonaAnswers;
use crate::testkit::{self, observe, probe, MemoryBroker, ProbeHandle};
use crate::trigger::celery::TaskNames;
use crate::trigger::celery::{decode, encode, TaskState};
use crate::{PersonaId, PersonaStatus};

const QUEUE: &str = "celery";
const WORKER: &str = "w1";

struct Harness {
    broker: Arc<MemoryBroker>,
    engine: ProbeHandle<RunTask>,
    abort: ProbeHandle<AbortRuns>,
    abort_persona: ProbeHandle<AbortPersona>,
    trigger: Addr<RedisTrigger>,
}

fn start(concurrency: usize, grace: Duration, engine: ProbeHandle<RunTask>) -> Harness {
    start_answering(concurrency, grace, engine, FullPersonaAnswers::Dispatched)
}

fn start_answering(
    concurrency: usize,
    grace: Duration,
    engine: ProbeHandle<RunTask>,
    answers: FullPersonaAnswers,
) -> Harness {
    start_with(concurrency, 1, grace, engine, answers)
}

fn start_with(
    concurrency: usize,
    prefetch: usize,
    grace: Duration,
    engine: ProbeHandle<RunTask>,
    answers: FullPersonaAnswers,
) -> Harness {
    let broker = Arc::new(MemoryBroker::new(&[QUEUE]));
    let abort = probe(|_: &AbortRuns| ());
    let abort_persona = probe(|_: &AbortPersona| true);
    let config = TriggerConfig {
        worker_id: WORKER.into(),
        hostname: "test@host".into(),
        concurrency,
        prefetch,
        visibility_timeout: Duration::from_secs(60),
        shutdown_grace: grace,
        names: TaskNames::default(),
        answers,
        default_queue: QUEUE.into(),
        revokes_expire: Duration::from_secs(10800),
    };
    let ports = TriggerPorts {
        queue: broker.clone(),
        results: broker.clone(),
        locks: broker.clone(),
        revocations: broker.clone(),
        events: Some(broker.clone()),
    };
    let peers = TriggerPeers {
        engine: engine.recipient(),
        abort_runs: abort.recipient(),
        abort_persona: abort_persona.recipient(),
    };
    let trigger = RedisTrigger::new(config, ports, peers).start();
    Harness {
        broker,
        engine,
        abort,
        abort_persona,
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
        error: result.as_ref().err().map(|e| e.to_string()),
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
async fn prefetched_messages_wait_ready_and_only_concurrency_tasks_run() {
    testkit::pause();
    let engine = probe(done);
    engine.hold_replies();
    let answers = FullPersonaAnswers::Dispatched;
    let harness = start_with(2, 3, Duration::from_secs(30), engine, answers);
    for i in 0..8 {
        harness
            .broker
            .push(QUEUE, message(&format!("t{i}"), &format!("p{i}"), None));
    }
    until("six messages held", || {
        harness.broker.in_flight(WORKER).len() == 6
    })
    .await;
    testkit::advance(Duration::from_secs(1)).await;
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.running, counters.ready), (2, 4));
    assert_eq!(harness.engine.count(), 2, "only `concurrency` tasks run");
    assert_eq!(
        harness.broker.in_flight(WORKER).len(),
        6,
        "no more than the prefetch count"
    );

    harness.engine.release_replies();
    until("all eight answered", || {
        (0..8).all(|i| {
            harness.broker.results_of(&format!("t{i}")).last()
                == Some(&TaskState::Success(json!(7)))
        })
    })
    .await;
    assert_eq!(harness.engine.count(), 8);
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
    assert_eq!(
        harness.broker.results_of("old"),
        [TaskState::Revoked {
            reason: "expired".into()
        }]
    );
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
                outcome: outcome(
                    task,
                    Err(JobError::Embedding {
                        context: "embedding failed".into(),
                        source: crate::embed::EmbedError::transient("provider: 503", None),
                    }),
                ),
            }
        } else {
            done(task)
        }
    });
    let harness = start(1, Duration::from_secs(30), engine);
    harness.broker.push(QUEUE, message("ta", "a", None));
    harness.broker.push(QUEUE, message("tb", "b", None));

    assert_eq!(persona_of(&harness.engine.expect_message().await), "a");
    let retried_at = tokio::time::Instant::now();
    // b runs at once: a's slot was freed by its retry, not held for its 30 s. (The clock is
    // virtual and moves on by itself while everything waits: the time it shows is the proof.)
    assert_eq!(persona_of(&harness.engine.expect_message().await), "b");
    assert!(
        retried_at.elapsed() < Duration::from_secs(1),
        "b waited {:?} for a's retry",
        retried_at.elapsed()
    );
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

/// `ingest_full_persona("a", {works, quotes, profile})` under `task_id`, with `headers` merged.
fn full_persona(task_id: &str, headers: Value, embed: Value) -> Vec<u8> {
    let mut kwargs = Map::new();
    kwargs.insert("persona_id".into(), "a".into());
    let job_ids: Map<String, Value> = crate::Kind::ALL
        .iter()
        .map(|k| (k.to_string(), uuid::Uuid::new_v4().to_string().into()))
        .collect();
    kwargs.insert("job_ids".into(), Value::Object(job_ids));
    let raw = encode(
        "workers.tasks.ingest_full_persona",
        task_id,
        &[],
        &kwargs,
        QUEUE,
        "t@h",
    );
    let mut envelope: Value = serde_json::from_str(&raw).unwrap();
    if let Value::Object(headers) = headers {
        for (k, v) in headers {
            envelope["headers"][k] = v;
        }
    }
    if !embed.is_null() {
        let body = json!([[], envelope_kwargs(&envelope), embed]);
        envelope["body"] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body.to_string())
                .into();
    }
    envelope.to_string().into_bytes()
}

fn envelope_kwargs(envelope: &Value) -> Value {
    let body = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        envelope["body"].as_str().unwrap(),
    )
    .unwrap();
    serde_json::from_slice::<Value>(&body).unwrap()[1].clone()
}

fn sub(task_id: &str, kind: crate::Kind) -> String {
    crate::trigger::task::subtask_id(task_id, kind)
}

/// Tells the run accepted and the works job started, then answers as `done`.
fn accepting(task: &RunTask) -> TaskOutcome {
    (task.tell)(TaskEvent::Begun);
    let works = task
        .jobs
        .iter()
        .find(|j| j.kind == crate::Kind::Works)
        .unwrap();
    (task.tell)(TaskEvent::JobStarted {
        job_id: works.id,
        kind: works.kind,
    });
    done(task)
}

#[actix::test]
async fn the_full_persona_task_answers_its_sub_task_ids_once_the_run_is_accepted() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(accepting));
    harness.engine.hold_replies();
    harness
        .broker
        .push(QUEUE, full_persona("top", json!({}), Value::Null));
    harness.engine.expect_message().await;
    until("the top task answered", || {
        harness
            .broker
            .results_of("top")
            .last()
            .is_some_and(TaskState::is_ready)
    })
    .await;
    let children: Value = crate::Kind::ALL
        .iter()
        .map(|k| (k.to_string(), Value::from(sub("top", *k))))
        .collect::<Map<_, _>>()
        .into();
    assert_eq!(
        harness.broker.results_of("top").last(),
        Some(&TaskState::Success(children))
    );
    let works = sub("top", crate::Kind::Works);
    assert!(matches!(
        harness.broker.results_of(&works)[..],
        [TaskState::Started { .. }]
    ));
    let events = harness.broker.events();
    assert!(events.contains(&("task-received".into(), Some(works.clone()))));
    assert!(events.contains(&("task-started".into(), Some(works.clone()))));
    // The run goes on: the message stays in flight until it ends.
    assert_eq!(harness.broker.in_flight(WORKER).len(), 1);
    harness.engine.release_replies();
    until("every sub-task answered", || {
        crate::Kind::ALL.iter().all(|k| {
            harness.broker.results_of(&sub("top", *k)).last() == Some(&TaskState::Success(json!(7)))
        })
    })
    .await;
    until("acknowledged", || {
        harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
}

/// A run's start and its jobs' starts, told together, are answered in one write to the result
/// backend (one round trip), in the order told.
#[actix::test]
async fn states_told_together_are_stored_in_one_write() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(accepting));
    harness
        .broker
        .push(QUEUE, full_persona("top", json!({}), Value::Null));
    until(
        "every sub-task answered and the message acknowledged",
        || {
            crate::Kind::ALL.iter().all(|k| {
                harness
                    .broker
                    .results_of(&sub("top", *k))
                    .last()
                    .is_some_and(TaskState::is_ready)
            }) && harness.broker.in_flight(WORKER).is_empty()
        },
    )
    .await;
    let works = sub("top", crate::Kind::Works);
    let writes = harness.broker.result_writes();
    let told = writes.iter().find(|w| w.contains(&works)).unwrap();
    assert_eq!(told, &["top".to_string(), works], "{writes:?}");
    // STARTED first, alone (the run is asked for as it is stored), then the starts together,
    // then the ends of the three sub-tasks (the run's outcome) together.
    assert_eq!(writes.len(), 3, "{writes:?}");
}

#[actix::test]
async fn with_completed_answers_the_full_persona_task_waits_for_the_run() {
    testkit::pause();
    let harness = start_answering(
        1,
        Duration::from_secs(30),
        probe(accepting),
        FullPersonaAnswers::Completed,
    );
    harness.engine.hold_replies();
    harness
        .broker
        .push(QUEUE, full_persona("top", json!({}), Value::Null));
    harness.engine.expect_message().await;
    let _ = observe::<_, TriggerCounters>(&harness.trigger).await;
    testkit::advance(Duration::from_millis(50)).await;
    assert!(matches!(
        harness.broker.results_of("top")[..],
        [TaskState::Started { .. }]
    ));
    harness.engine.release_replies();
    until("the top task answered", || {
        matches!(
            harness.broker.results_of("top").last(),
            Some(TaskState::Success(_))
        )
    })
    .await;
}

#[actix::test]
async fn calls_that_do_not_bind_are_answered_and_unknown_tasks_also_kept() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(done));
    let raw = encode(
        "workers.tasks.ingest_full_persona",
        "bad-args",
        &[],
        &serde_json::from_value(json!({ "persona_id": "a" })).unwrap(),
        QUEUE,
        "t@h",
    );
    harness.broker.push(QUEUE, raw);
    let unknown = encode(
        "workers.tasks.send_newsletter",
        "unknown",
        &[],
        &Map::new(),
        QUEUE,
        "t@h",
    );
    harness.broker.push(QUEUE, unknown.clone());
    until("both answered", || {
        !harness.broker.results_of("bad-args").is_empty()
            && !harness.broker.results_of("unknown").is_empty()
            && harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    assert!(matches!(
        &harness.broker.results_of("bad-args")[..],
        [TaskState::Failure { exc_type, exc_message, .. }]
            if exc_type == "TypeError"
            && exc_message == "ingest_full_persona() missing 1 required positional argument: 'job_ids'"
    ));
    assert!(matches!(
        &harness.broker.results_of("unknown")[..],
        [TaskState::Failure { exc_type, exc_module, .. }]
            if exc_type == "NotRegistered" && exc_module == "celery.exceptions"
    ));
    let dead = harness.broker.dead_letters();
    assert_eq!(dead.len(), 1, "only the unknown task is kept: {dead:?}");
    assert_eq!(dead[0].1, unknown.into_bytes());
    assert_eq!(harness.engine.count(), 0);
}

#[actix::test]
async fn a_revoked_countdown_task_never_runs_and_ends_revoked() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(done));
    harness
        .broker
        .push(QUEUE, message("later", "a", Some(Duration::from_secs(600))));
    until("held", || harness.broker.in_flight(WORKER).len() == 1).await;
    let _ = observe::<_, TriggerCounters>(&harness.trigger).await;
    let terminated = harness
        .trigger
        .send(Revoke {
            task_ids: vec!["later".into()],
            terminate: false,
        })
        .await
        .unwrap();
    assert!(terminated.is_empty());
    until("answered and acknowledged", || {
        harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    assert_eq!(
        harness.broker.results_of("later").last(),
        Some(&TaskState::Revoked {
            reason: "revoked".into()
        })
    );
    testkit::advance(Duration::from_secs(601)).await;
    let counters = observe::<_, TriggerCounters>(&harness.trigger).await;
    assert_eq!((counters.revoked, harness.engine.count()), (1, 0));
    // Remembered for every worker: a copy arriving later is not run either.
    harness.broker.push(QUEUE, message("later", "a", None));
    until("the copy answered", || {
        harness.broker.in_flight(WORKER).is_empty() && counters.fetched < 2
            || harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    let _ = observe::<_, TriggerCounters>(&harness.trigger).await;
    testkit::advance(Duration::from_millis(100)).await;
    assert_eq!(harness.engine.count(), 0, "a revoked task never runs");
    // The persona's lock, asked for with the revoked check, is given back.
    assert_eq!(harness.broker.locks_held(), 0);
}

#[actix::test]
async fn revoke_with_terminate_aborts_the_run_and_answers_revoked() {
    testkit::pause();
    let engine = probe(|task: &RunTask| {
        TaskOutcome::Done(outcome(task, Err(JobError::Stopped("revoked".into()))))
    });
    let harness = start(1, Duration::from_secs(30), engine);
    harness.engine.hold_replies();
    harness
        .broker
        .push(QUEUE, full_persona("runaway", json!({}), Value::Null));
    harness.engine.expect_message().await;
    // The web app revokes a sub-task id: the run it belongs to is ended.
    let works = sub("runaway", crate::Kind::Works);
    let terminated = harness
        .trigger
        .send(Revoke {
            task_ids: vec![works.clone()],
            terminate: true,
        })
        .await
        .unwrap();
    assert_eq!(terminated, ["runaway"]);
    let abort = harness.abort_persona.expect_message().await;
    assert_eq!(
        (abort.persona.as_str(), abort.reason.as_str()),
        ("a", "revoked")
    );
    harness.engine.release_replies();
    until("answered", || harness.broker.in_flight(WORKER).is_empty()).await;
    // As Celery's worker answers a terminated task: TaskRevokedError('terminated').
    let revoked = TaskState::Revoked {
        reason: "terminated".into(),
    };
    assert_eq!(harness.broker.results_of(&works).last(), Some(&revoked));
    assert_eq!(harness.broker.results_of("runaway").last(), Some(&revoked));
}

#[actix::test]
async fn ignore_result_stores_nothing_and_callbacks_are_sent() {
    testkit::pause();
    let harness = start(1, Duration::from_secs(30), probe(done));
    let link = json!({ "task": "workers.tasks.notify", "args": ["x"], "kwargs": {}, "options": { "queue": "notes" }, "subtask_type": null, "immutable": false });
    let mut raw: Value = serde_json::from_slice(&message("quiet", "a", None)).unwrap();
    raw["headers"]["ignore_result"] = true.into();
    let body = json!([[], envelope_kwargs(&raw), { "callbacks": [link], "errbacks": null, "chain": null, "chord": null }]);
    raw["body"] =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body.to_string()).into();
    harness.broker.push(QUEUE, raw.to_string());
    until("acknowledged", || {
        harness.engine.count() == 1 && harness.broker.in_flight(WORKER).is_empty()
    })
    .await;
    assert!(
        harness.broker.results_of("quiet").is_empty(),
        "ignore_result"
    );
    let sent = harness.broker.waiting("notes");
    assert_eq!(sent.len(), 1);
    let callback = decode(&sent[0]).unwrap();
    assert_eq!(callback.task, "workers.tasks.notify");
    assert_eq!(callback.args, [json!(7), json!("x")], "the result first");
    assert_eq!(callback.parent_id.as_deref(), Some("quiet"));
}
