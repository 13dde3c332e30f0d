//! Celery events seen by the real `celery` package's event receiver (what Flower and
//! `celery events` are built on): the daemon is a live worker, a persona's task goes from
//! received to succeeded, and SIGTERM takes the worker offline.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::worker_kit::*;

/// Feeds every event to Celery's own `State`; says when it first hears each kind of event of
/// the worker `node`, and ends when that worker goes offline, printing what it saw.
const RECEIVER: &str = r#"
import json, sys
from celery import Celery
url, node, task_id, client_name = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
app = Celery("workers", broker=url)
# Named, so that the test sees this very connection subscribe.
app.conf.broker_transport_options = {"client_name": client_name}
state = app.events.State()
seen = {"worker": [], "task": []}
class Offline(Exception):
    pass
def on_event(event):
    state.event(event)
    kind = event["type"]
    if event.get("hostname") == node and kind.startswith("worker-"):
        if kind not in seen["worker"]:
            print("heard " + kind, flush=True)
        seen["worker"].append(kind)
        if kind == "worker-offline":
            raise Offline()
    elif event.get("uuid") == task_id:
        seen["task"].append(kind)
with app.connection() as conn:
    receiver = app.events.Receiver(conn, handlers={"*": on_event})
    try:
        receiver.capture(limit=None, timeout=60, wakeup=False)
    except Offline:
        pass
task = state.tasks.get(task_id)
worker = state.workers.get(node)
print(json.dumps({
    "worker_events": sorted(set(seen["worker"])),
    "task_events": seen["task"],
    "task": {"state": task.state, "name": task.name, "runtime": task.runtime} if task else None,
    "worker": {"alive": worker.alive, "processed": worker.processed} if worker else None,
}), flush=True)
"#;

#[actix::test]
async fn celerys_event_receiver_sees_the_worker_and_a_task_from_received_to_succeeded() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let node = format!("{}@test", names.prefix);
    let task_id = uuid::Uuid::new_v4().to_string();
    // The receiver subscribes (a pattern subscription) before the worker starts, so that it
    // hears worker-online too.
    // Its connection is named: other tests' subscribers (Flower, daemons' dashboards) come and go.
    let client_name = format!("{}-receiver", names.prefix);
    let con = connect(&redis_url()).await;
    let mut receiver = Command::new(python())
        .args(["-c", RECEIVER, &redis_url(), &node, &task_id, &client_name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the receiver to subscribe", Duration::from_secs(30), || {
        let mut con = con.clone();
        let wanted = format!("name={client_name} ");
        async move {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut con)
                .await
                .ok()?;
            clients
                .lines()
                .any(|c| c.contains(&wanted) && !c.contains(" psub=0 "))
                .then_some(())
        }
    })
    .await;
    let daemon = Daemon::start(
        &world,
        &names,
        &redis_url(),
        &vars(&[("ENGINE__WORKER__NAME", &node)]),
    );
    let (lines, rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(receiver.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let next_line = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a line from the receiver")
    };
    assert_eq!(next_line(), "heard worker-online");

    let mut con = connect(&redis_url()).await;
    send_full_persona_as(&mut con, &names.queue, "twain-sampler", &task_id).await;
    let result = final_result(&redis_url(), &task_id, Duration::from_secs(60)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    // Heartbeats come every 2 s.
    assert_eq!(next_line(), "heard worker-heartbeat");
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(next_line(), "heard worker-offline");
    let seen = next_line();
    receiver.wait().unwrap();
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(
        seen["worker_events"],
        serde_json::json!(["worker-heartbeat", "worker-offline", "worker-online"]),
        "{seen}"
    );
    assert_eq!(
        seen["task_events"],
        serde_json::json!(["task-received", "task-started", "task-succeeded"]),
        "{seen}"
    );
    assert_eq!(seen["task"]["state"], "SUCCESS");
    assert_eq!(seen["task"]["name"], "workers.tasks.ingest_full_persona");
    assert!(seen["task"]["runtime"].as_f64().unwrap() > 0.0, "{seen}");
    assert_eq!(
        seen["worker"]["alive"], false,
        "offline after SIGTERM: {seen}"
    );
    assert_eq!(seen["worker"]["processed"], 1, "{seen}");
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}
