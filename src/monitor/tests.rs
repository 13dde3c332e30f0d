//! The Monitor alone: events in as PUBLISHed, what the dashboard reads out.

use actix::prelude::*;
use base64::Engine as _;
use serde_json::{json, Value};

use super::tasks::TaskFilter;
use super::*;
use crate::trigger::events::{envelope, WorkerEvents};

fn published(event: &Value) -> CeleryEvent {
    let routing_key = event["type"].as_str().unwrap().replace('-', ".");
    CeleryEvent(envelope("w@host", &routing_key, event).into_bytes())
}

fn filter() -> TaskFilter {
    TaskFilter {
        limit: 100,
        ..TaskFilter::default()
    }
}

#[actix::test]
async fn tasks_and_sub_tasks_are_known_by_their_events_in_any_order() {
    let monitor = Monitor::new(TaskNames::default(), MonitorPorts::default()).start();
    let worker = WorkerEvents::new("persona-ingest.1@host".into());
    let top = worker.task(
        "task-received",
        "top-1",
        json!({"name": "workers.tasks.ingest_full_persona", "args": "[]",
               "kwargs": r#"{"persona_id": "mark-twain", "job_ids": {}}"#}),
    );
    let sub_received = worker.task(
        "task-received",
        "sub-works",
        json!({"name": "workers.tasks.ingest_persona_works", "args": r#"["mark-twain", "j"]"#,
               "parent_id": "top-1", "root_id": "top-1"}),
    );
    let sub_started = worker.task("task-started", "sub-works", json!({}));
    let sub_failed = worker.task(
        "task-failed",
        "sub-works",
        json!({"exception": "RuntimeError('works/x.txt line 3: bad')", "runtime": 1.5}),
    );
    monitor.send(published(&top)).await.unwrap();
    // The failure heard before its start: the start does not undo it.
    monitor.send(published(&sub_received)).await.unwrap();
    monitor.send(published(&sub_failed)).await.unwrap();
    monitor.send(published(&sub_started)).await.unwrap();

    let (top, children) = monitor
        .send(GetTask("top-1".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(top.persona.as_deref(), Some("mark-twain"));
    assert_eq!(top.kind, None);
    assert_eq!(top.state, "RECEIVED");
    assert_eq!(children.len(), 1);
    let sub = &children[0];
    assert_eq!(
        (
            sub.state.as_str(),
            sub.kind.as_deref(),
            sub.persona.as_deref()
        ),
        ("FAILURE", Some("works"), Some("mark-twain"))
    );
    assert_eq!(sub.runtime, Some(1.5));
    assert!(sub.exception.as_deref().unwrap().contains("line 3"));
    assert_eq!(sub.timeline.len(), 3);

    let by_state = TaskFilter {
        state: Some("failure".into()),
        ..filter()
    };
    let (total, found) = monitor.send(ListTasks(by_state)).await.unwrap();
    assert_eq!((total, found[0].id.as_str()), (1, "sub-works"));
    // Searching by a part of the top task's id finds its sub-tasks too.
    let search = TaskFilter {
        search: Some("top".into()),
        ..filter()
    };
    assert_eq!(monitor.send(ListTasks(search)).await.unwrap().0, 2);
    let other = TaskFilter {
        persona: Some("jane-austen".into()),
        ..filter()
    };
    assert_eq!(monitor.send(ListTasks(other)).await.unwrap().0, 0);
}

#[actix::test]
async fn celery_s_buffered_task_multi_and_python_reprs_are_read() {
    let monitor = Monitor::new(TaskNames::default(), MonitorPorts::default()).start();
    let events = json!([
        {"type": "task-received", "uuid": "c1", "hostname": "celery@box", "timestamp": 1.0,
         "name": "workers.tasks.ingest_persona_quotes", "args": "['jane-austen', 'abc']",
         "kwargs": "{}"},
        {"type": "task-succeeded", "uuid": "c1", "hostname": "celery@box", "timestamp": 2.0,
         "result": "42", "runtime": 0.25},
    ]);
    let body = base64::engine::general_purpose::STANDARD.encode(events.to_string());
    let message = json!({"body": body, "properties": {"body_encoding": "base64"}});
    monitor
        .send(CeleryEvent(message.to_string().into_bytes()))
        .await
        .unwrap();
    let (task, _) = monitor.send(GetTask("c1".into())).await.unwrap().unwrap();
    assert_eq!(
        (
            task.state.as_str(),
            task.persona.as_deref(),
            task.kind.as_deref()
        ),
        ("SUCCESS", Some("jane-austen"), Some("quotes"))
    );
    assert_eq!(task.result.as_deref(), Some("42"));
    // Garbage on the channel is ignored.
    monitor
        .send(CeleryEvent(b"\xff not json".to_vec()))
        .await
        .unwrap();
    let workers = monitor.send(ListWorkers).await.unwrap();
    assert_eq!(workers[0].0.succeeded, 1);
}

struct Replies;

#[async_trait]
impl Inspect for Replies {
    async fn inspect(&self, method: &str) -> anyhow::Result<Vec<Value>> {
        Ok(match method {
            "stats" => vec![json!({"w@host": {"pid": 7, "pool": {"max-concurrency": 4}}})],
            _ => vec![json!({"w@host": [{"name": "celery"}, {"name": "bulk"}]})],
        })
    }
}

struct Depth;

#[async_trait]
impl QueueDepth for Depth {
    async fn depth(&self) -> anyhow::Result<u64> {
        Ok(3)
    }
}

#[actix::test]
async fn workers_are_known_by_heartbeats_task_events_and_inspect() {
    tokio::time::pause();
    let ports = MonitorPorts {
        depth: Some(std::sync::Arc::new(Depth)),
        inspect: Some(std::sync::Arc::new(Replies)),
    };
    let monitor = Monitor::new(TaskNames::default(), ports).start();
    let worker = WorkerEvents::new("w@host".into());
    monitor
        .send(published(&worker.worker("worker-online")))
        .await
        .unwrap();
    for (event, id) in [
        ("task-received", "a"),
        ("task-retried", "a"),
        ("task-succeeded", "a"),
    ] {
        monitor
            .send(published(&worker.task(event, id, json!({}))))
            .await
            .unwrap();
    }
    // Past two samples: the inspect replies and the queue depth are in.
    tokio::time::sleep(SAMPLE_EVERY * 2).await;
    let workers = monitor.send(ListWorkers).await.unwrap();
    let (w, alive) = &workers[0];
    assert!(alive);
    assert_eq!((w.received, w.retried, w.succeeded, w.failed), (1, 1, 1, 0));
    assert_eq!(w.concurrency, Some(4));
    assert_eq!(w.queues, vec!["celery", "bulk"]);
    assert_eq!(w.software.as_deref(), Some("persona-ingest"));
    let (series, _) = monitor.send(Charts).await.unwrap();
    assert!(series.queue_depth.iter().all(|(_, d)| *d == 3.0));
    assert!(!series.queue_depth.is_empty());

    monitor
        .send(published(&worker.worker("worker-offline")))
        .await
        .unwrap();
    assert!(!monitor.send(ListWorkers).await.unwrap()[0].1);
}

#[actix::test]
async fn the_stream_hears_each_task_s_new_state() {
    let monitor = Monitor::new(TaskNames::default(), MonitorPorts::default()).start();
    let mut updates = monitor.send(Subscribe).await.unwrap();
    let worker = WorkerEvents::new("w@host".into());
    monitor
        .send(published(&worker.task("task-started", "t", json!({}))))
        .await
        .unwrap();
    let update = updates.recv().await.unwrap();
    assert_eq!(
        (update["id"].as_str(), update["state"].as_str()),
        (Some("t"), Some("STARTED"))
    );
    assert!(update.get("timeline").is_none());
}

#[test]
fn the_oldest_heard_of_are_forgotten_first() {
    let mut book = TaskBook::new(TaskNames::default());
    let event = |id: String, at: f64| {
        let Value::Object(e) = json!({"type": "task-received", "uuid": id, "timestamp": at}) else {
            unreachable!()
        };
        e
    };
    book.apply(&event("first".into(), 0.0));
    for i in 0..tasks::MAX_TASKS {
        book.apply(&event(format!("t{i}"), 1.0));
        // `first` is heard of again, so it stays while t0 goes.
        if i == 10 {
            book.apply(&event("first".into(), 2.0));
        }
    }
    assert_eq!(book.len(), tasks::MAX_TASKS);
    assert!(book.get("first").is_some());
    assert!(book.get("t0").is_none());
}

#[test]
fn the_persona_is_read_from_json_or_any_python_repr_of_the_arguments() {
    let mut book = TaskBook::new(TaskNames::default());
    let cases = [
        (r#"["a-json", "j"]"#, "{}", Some("a-json")),
        ("('a-tuple',)", "{}", Some("a-tuple")),
        (r#"["a-list", 'j']"#, "{}", Some("a-list")),
        (
            "()",
            "{'persona_id': 'a-kwarg', 'job_ids': {}}",
            Some("a-kwarg"),
        ),
        (
            "()",
            r#"{"persona_id": "a-json-kwarg"}"#,
            Some("a-json-kwarg"),
        ),
        ("(42,)", "{}", None),
    ];
    for (i, (args, kwargs, persona)) in cases.into_iter().enumerate() {
        let Value::Object(event) = json!({"type": "task-received", "uuid": format!("t{i}"),
            "timestamp": 1.0, "name": "workers.tasks.ingest_full_persona", "args": args, "kwargs": kwargs})
        else {
            unreachable!()
        };
        let task = book.apply(&event).unwrap();
        assert_eq!(task.persona.as_deref(), persona, "{args} {kwargs}");
    }
}

#[actix::test]
async fn a_stopped_monitor_answers_no_more() {
    let monitor = Monitor::new(TaskNames::default(), MonitorPorts::default()).start();
    monitor.send(StopMonitor).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(monitor.send(ListWorkers).await.is_err());
}
