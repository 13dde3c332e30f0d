//! The replies to `inspect` commands, in the shapes a Celery 5 worker gives them
//! (`tests/fixtures/celery/control-replies.json`).

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::WorkerInfo;
use crate::trigger::redis_trigger::Held;
use crate::trigger::task::Accepted;

pub(super) fn queue_info(queue: &str) -> Value {
    json!({
        "name": queue,
        "exchange": { "name": queue, "type": "direct", "arguments": null, "durable": true, "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false },
        "routing_key": queue, "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": null, "bindings": [],
        "no_declare": null, "expires": null, "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}

pub(super) fn conf(info: &WorkerInfo) -> Value {
    json!({
        "broker_url": info.broker_url,
        "result_backend": info.result_backend,
        "task_default_queue": info.queues.first(),
        "worker_concurrency": info.concurrency,
        "worker_prefetch_multiplier": info.prefetch,
        "task_serializer": "json",
        "accept_content": ["json"],
        "include": [],
    })
}

pub(super) fn report(info: &WorkerInfo) -> String {
    format!(
        "\nsoftware -> persona-ingest:{} (Celery protocol 2 worker)\nplatform -> system:Linux\nsettings -> transport:redis results:redis\nbroker_url: {}\nresult_backend: {}\n",
        env!("CARGO_PKG_VERSION"),
        info.broker_url,
        info.result_backend
    )
}

/// A task as `Request.info()` describes it.
pub(super) fn request_info(
    task: &Accepted,
    hostname: &str,
    since: Option<&chrono::DateTime<chrono::Utc>>,
) -> Value {
    let list = &task.delivery.queue;
    let queue = list.split('\x06').next().unwrap_or(list);
    let priority = task.msg.priority;
    json!({
        "id": task.msg.id,
        "name": task.msg.task,
        "args": task.msg.args,
        "kwargs": task.msg.kwargs,
        "type": task.msg.task,
        "hostname": hostname,
        "time_start": since.map(|t| t.timestamp_micros() as f64 / 1e6),
        "acknowledged": since.is_some(),
        "delivery_info": { "exchange": "", "routing_key": queue, "priority": priority, "redelivered": false },
        "worker_pid": since.map(|_| std::process::id()),
    })
}

pub(super) fn scheduled_info(task: &Accepted, hostname: &str) -> Value {
    json!({
        "eta": task.msg.eta.map(|t| t.to_rfc3339()),
        "priority": task.msg.priority,
        "request": request_info(task, hostname, None),
    })
}

pub(super) fn query_task(held: &Held, arguments: &Map<String, Value>, hostname: &str) -> Value {
    let ids = id_list(arguments.get("ids"));
    let mut found = Map::new();
    for id in ids {
        if let Some((task, since)) = held.active.iter().find(|(t, _)| t.msg.id == id) {
            found.insert(
                id,
                json!(["active", request_info(task, hostname, Some(since))]),
            );
        } else if let Some(task) = held
            .reserved
            .iter()
            .chain(&held.scheduled)
            .find(|t| t.msg.id == id)
        {
            found.insert(id, json!(["reserved", request_info(task, hostname, None)]));
        }
    }
    Value::Object(found)
}

pub(super) fn stats(info: &WorkerInfo, held: &Held, uptime: Duration, clock: u64) -> Value {
    let (utime, stime) = cpu_times();
    json!({
        "total": held.total,
        "pid": std::process::id(),
        "clock": clock.to_string(),
        "uptime": uptime.as_secs(),
        "pool": {
            "implementation": "persona-ingest:actors",
            "max-concurrency": info.concurrency,
            "processes": [std::process::id()],
            "max-tasks-per-child": "N/A",
            "put-guarded-by-semaphore": false,
            "timeouts": [0, 0],
        },
        "broker": { "transport": "redis", "hostname": info.broker_url, "ssl": info.broker_url.starts_with("rediss") },
        "prefetch_count": info.concurrency * info.prefetch,
        "rusage": { "utime": utime, "stime": stime, "maxrss": max_rss_kb() },
    })
}

/// User and system CPU seconds of this process, from `/proc/self/stat`.
pub(super) fn cpu_times() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // The fields after the command name (which may hold spaces, but ends with ')').
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (ticks(11), ticks(12))
}

/// Peak resident memory in KiB, from `/proc/self/status`.
pub(super) fn max_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Task ids as remote control passes them: one id, or a list.
pub(super) fn id_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(id)) => vec![id.clone()],
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
