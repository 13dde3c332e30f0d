//! The Pidbox alone: commands as kombu publishes them, replies read from the testkit's
//! `MemoryBroker`, probes in place of the RedisTrigger.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::*;
use crate::testkit::{probe, MemoryBroker, ProbeHandle};
use crate::trigger::redis_trigger::{Held, Inspect, Revoke};

const NODE: &str = "persona-ingest.1@host";

struct Harness {
    broker: Arc<MemoryBroker>,
    revoke: ProbeHandle<Revoke>,
    pidbox: Addr<Pidbox>,
    shutdown: watch::Receiver<bool>,
}

fn start() -> Harness {
    let broker = Arc::new(MemoryBroker::new(&["celery"]));
    let inspect = probe(|_: &Inspect| Held::default());
    let revoke = probe(|r: &Revoke| {
        if r.terminate {
            r.task_ids.clone()
        } else {
            Vec::new()
        }
    });
    let (stop, shutdown) = watch::channel(false);
    let info = WorkerInfo {
        hostname: NODE.into(),
        queues: vec!["celery".into()],
        concurrency: 4,
        prefetch: 1,
        registered: vec!["workers.tasks.ingest_full_persona".into()],
        broker_url: "redis://127.0.0.1:6379/0".into(),
        result_backend: "redis://127.0.0.1:6379/0".into(),
    };
    let pidbox = Pidbox::new(
        info,
        broker.clone(),
        broker.clone(),
        Some(broker.clone()),
        (inspect.recipient(), revoke.recipient()),
        stop,
    )
    .start();
    Harness {
        broker,
        revoke,
        pidbox,
        shutdown,
    }
}

/// A command as `Mailbox._publish` sends it (the ping of `pidbox-ping-wire.txt`, otherwise).
fn command(method: &str, arguments: Value, destination: Value) -> Vec<u8> {
    let body = json!({
        "method": method, "arguments": arguments, "destination": destination,
        "pattern": null, "matcher": null, "ticket": "t-1",
        "reply_to": { "exchange": "reply.celery.pidbox", "routing_key": "oid-1" },
    });
    json!({
        "body": BASE64.encode(body.to_string()), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": { "clock": 1, "expires": 0 },
        "properties": { "delivery_mode": 2, "delivery_info": { "exchange": "celery.pidbox", "routing_key": "" },
                        "priority": 0, "body_encoding": "base64", "delivery_tag": "d" },
    })
    .to_string()
    .into_bytes()
}

/// The replies so far: (where, ticket, {node: reply}).
fn replies(broker: &MemoryBroker) -> Vec<(String, String, Value)> {
    broker
        .replies()
        .into_iter()
        .map(|(to, raw)| {
            let envelope: Value = serde_json::from_slice(&raw).unwrap();
            let body = BASE64.decode(envelope["body"].as_str().unwrap()).unwrap();
            (
                to,
                envelope["headers"]["ticket"].as_str().unwrap().to_owned(),
                serde_json::from_slice(&body).unwrap(),
            )
        })
        .collect()
}

#[actix::test]
async fn ping_is_answered_with_pong_on_the_reply_exchange_with_its_ticket() {
    let h = start();
    // The command exactly as Celery's client sent it (pidbox-ping-wire.txt).
    let wire = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/celery/pidbox-ping-wire.txt"
    ))
    .unwrap();
    let published = wire
        .lines()
        .find_map(|l| l.strip_prefix("PUBLISH /14.celery.pidbox "))
        .unwrap();
    let mut envelope: Value = serde_json::from_str(published).unwrap();
    envelope["headers"]["expires"] = 0.into();
    h.pidbox
        .send(ControlMessage(envelope.to_string().into_bytes()))
        .await
        .unwrap();
    let got = replies(&h.broker);
    assert_eq!(got.len(), 1);
    let (to, ticket, reply) = &got[0];
    assert_eq!(
        to,
        "reply.celery.pidbox/dfcd30a2-456c-34fa-bf6c-684e0e876a6a"
    );
    assert_eq!(ticket, "f557483e-2eaa-4425-a749-9150a54328c4");
    assert_eq!(reply, &json!({ NODE: { "ok": "pong" } }));
}

#[actix::test]
async fn commands_answer_as_a_celery_worker_does() {
    let h = start();
    let ask = |method: &str, arguments: Value| {
        h.pidbox
            .send(ControlMessage(command(method, arguments, Value::Null)))
    };
    ask("registered", json!({})).await.unwrap();
    ask("revoke", json!({ "task_id": "t9", "terminate": false }))
        .await
        .unwrap();
    ask("revoke", json!({ "task_id": ["t8"], "terminate": true }))
        .await
        .unwrap();
    ask("disable_events", json!({})).await.unwrap();
    ask("disable_events", json!({})).await.unwrap();
    ask("heartbeat", json!({})).await.unwrap();
    ask("no_such_command", json!({})).await.unwrap();
    ask("active", json!({})).await.unwrap();
    let answers: Vec<Value> = replies(&h.broker)
        .into_iter()
        .map(|(_, _, r)| r[NODE].clone())
        .collect();
    assert_eq!(
        answers,
        [
            json!(["workers.tasks.ingest_full_persona"]),
            json!({ "ok": "tasks {'t9'} flagged as revoked" }),
            json!({ "ok": "terminate: t8" }),
            json!({ "ok": "task events disabled" }),
            json!({ "ok": "task events already disabled" }),
            Value::Null,
            json!({ "error": "KeyError('no_such_command')" }),
            json!([]),
        ]
    );
    let counters: PidboxCounters = crate::testkit::observe(&h.pidbox).await;
    assert_eq!(counters.commands.get("revoke"), Some(&2));
    assert_eq!(counters.ignored, 0);
    let revokes = h.revoke.received();
    assert_eq!(
        revokes
            .iter()
            .map(|r| (r.task_ids.clone(), r.terminate))
            .collect::<Vec<_>>(),
        [
            (vec!["t9".to_owned()], false),
            (vec!["t8".to_owned()], true)
        ]
    );
}

#[actix::test]
async fn a_command_for_another_node_or_expired_is_not_answered_and_shutdown_stops() {
    let mut h = start();
    h.pidbox
        .send(ControlMessage(command(
            "ping",
            json!({}),
            json!(["other@host"]),
        )))
        .await
        .unwrap();
    let mut expired: Value =
        serde_json::from_slice(&command("ping", json!({}), Value::Null)).unwrap();
    expired["headers"]["expires"] = 1.0.into();
    h.pidbox
        .send(ControlMessage(expired.to_string().into_bytes()))
        .await
        .unwrap();
    h.pidbox
        .send(ControlMessage(b"\xff not json".to_vec()))
        .await
        .unwrap();
    assert!(replies(&h.broker).is_empty());
    h.pidbox
        .send(ControlMessage(command(
            "shutdown",
            json!({}),
            json!([NODE]),
        )))
        .await
        .unwrap();
    assert!(*h.shutdown.borrow_and_update());
    assert!(replies(&h.broker).is_empty(), "shutdown is not answered");
}
