//! Our events beside the ones a real Celery 5.7 worker published (`tests/fixtures/celery`):
//! the same envelope and the same fields.

use std::collections::BTreeSet;

use base64::Engine as _;

use super::*;

fn fixture(name: &str) -> (String, Value, Value) {
    let path = format!(
        "{}/tests/fixtures/celery/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let captured: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let envelope: Value = serde_json::from_str(captured["data"].as_str().unwrap()).unwrap();
    let body = base64::engine::general_purpose::STANDARD
        .decode(envelope["body"].as_str().unwrap())
        .unwrap();
    (
        captured["channel"].as_str().unwrap().to_owned(),
        envelope,
        serde_json::from_slice(&body).unwrap(),
    )
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// The envelope with its body and delivery tag left out (they differ by nature).
fn shape(envelope: &Value) -> Value {
    let mut envelope = envelope.clone();
    envelope["body"] = Value::Null;
    envelope["properties"]["delivery_tag"] = Value::Null;
    envelope["headers"]["hostname"] = Value::Null;
    envelope
}

#[test]
fn a_heartbeat_reads_as_celerys_own() {
    let (channel, celery_envelope, celery_event) = fixture("event-worker-heartbeat.json");
    assert_eq!(channel, "/13.celeryev/worker.heartbeat");
    let events = WorkerEvents::new("persona-ingest-1@vm".into());
    let ours = events.worker("worker-heartbeat");
    let envelope: Value =
        serde_json::from_str(&envelope(&events.hostname, "worker.heartbeat", &ours)).unwrap();
    assert_eq!(shape(&envelope), shape(&celery_envelope));
    assert_eq!(keys(&ours), keys(&celery_event));
    assert_eq!(ours["type"], "worker-heartbeat");
    assert_eq!(ours["freq"], 2.0);
    assert_eq!(ours["clock"], 1);
    assert_eq!(
        events.worker("worker-heartbeat")["clock"],
        2,
        "a logical clock"
    );
}

#[test]
fn task_events_carry_celerys_fields() {
    let (channel, _, celery_events) = fixture("event-task-multi.json");
    assert_eq!(channel, "/13.celeryev/task.multi");
    let celery_events = celery_events.as_array().unwrap();
    let events = WorkerEvents::new("persona-ingest-1@vm".into());
    let received = events.task(
        "task-received",
        "t1",
        json!({ "name": "workers.tasks.ingest_full_persona", "args": "()", "kwargs": "{}",
                "root_id": "t1", "parent_id": null, "retries": 0, "eta": null, "expires": null }),
    );
    let started = events.task("task-started", "t1", json!({}));
    let succeeded = events.task(
        "task-succeeded",
        "t1",
        json!({ "result": "{}", "runtime": 0.5 }),
    );
    for (ours, celery) in [received, started, succeeded].iter().zip(celery_events) {
        assert_eq!(ours["type"], celery["type"]);
        assert_eq!(keys(ours), keys(celery), "{}", ours["type"]);
    }
}
