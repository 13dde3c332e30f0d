//! Every worker as Celery's events and remote control tell it, for the dashboard's workers
//! page: what `worker-online`, `worker-heartbeat` and `worker-offline` say (name, pid, version,
//! tasks running and processed, load), the task events each worker sent (counted by outcome, as
//! Flower counts them), and what `inspect stats` and `active_queues` answer (concurrency,
//! queues), refreshed now and then since no event carries them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// One worker. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerView {
    /// Its node name, `name@host`.
    pub hostname: String,
    pub pid: Option<u64>,
    /// `persona-ingest` or `py-celery`, and its version.
    pub software: Option<String>,
    pub version: Option<String>,
    /// Heartbeats come every `freq` seconds; two missed and the worker is taken for gone.
    pub freq: f64,
    pub last_heartbeat: Option<f64>,
    /// The broker's id of a persona-ingest daemon (its lease and in-flight list), as its
    /// worker events say.
    pub worker_id: Option<String>,
    /// Said goodbye (`worker-offline`).
    pub offline: bool,
    /// Tasks running at its last heartbeat, and processed since it started.
    pub active: u64,
    pub processed: u64,
    pub loadavg: Option<Value>,
    /// Task events it sent, by outcome.
    pub received: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    /// From `inspect stats` (`pool.max-concurrency`) and `inspect active_queues`.
    pub concurrency: Option<u64>,
    pub queues: Vec<String>,
}

impl WorkerView {
    /// Whether it is heard from: online and its last heartbeat within two of its periods (as
    /// Flower's `heartbeat_expires`).
    pub fn alive(&self, now: f64) -> bool {
        !self.offline
            && self
                .last_heartbeat
                .is_some_and(|at| now - at <= 2.0 * self.freq.max(1.0))
    }
}

#[derive(Default)]
pub struct WorkerBook {
    workers: BTreeMap<String, WorkerView>,
}

impl WorkerBook {
    fn worker(&mut self, hostname: &str) -> &mut WorkerView {
        self.workers
            .entry(hostname.to_owned())
            .or_insert_with(|| WorkerView {
                hostname: hostname.to_owned(),
                freq: 2.0,
                ..WorkerView::default()
            })
    }

    /// Applies a `worker-*` or `task-*` event.
    pub fn apply(&mut self, event: &Map<String, Value>) {
        let (Some(kind), Some(hostname)) = (
            event.get("type").and_then(Value::as_str),
            event.get("hostname").and_then(Value::as_str),
        ) else {
            return;
        };
        let at = event.get("timestamp").and_then(Value::as_f64);
        if let Some(task_event) = kind.strip_prefix("task-") {
            let worker = self.worker(hostname);
            match task_event {
                "received" => worker.received += 1,
                "succeeded" => worker.succeeded += 1,
                "failed" => worker.failed += 1,
                "retried" => worker.retried += 1,
                _ => {}
            }
            return;
        }
        let Some(worker_event) = kind.strip_prefix("worker-") else {
            return;
        };
        let worker = self.worker(hostname);
        worker.offline = worker_event == "offline";
        if !worker.offline {
            worker.last_heartbeat = at.or(worker.last_heartbeat);
        }
        let u64_of = |key: &str| event.get(key).and_then(Value::as_u64);
        worker.pid = u64_of("pid").or(worker.pid);
        worker.active = u64_of("active").unwrap_or(worker.active);
        worker.processed = u64_of("processed").unwrap_or(worker.processed);
        if let Some(freq) = event.get("freq").and_then(Value::as_f64) {
            worker.freq = freq;
        }
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        worker.software = text("sw_ident").or(worker.software.take());
        worker.worker_id = text("persona_ingest_worker_id").or(worker.worker_id.take());
        worker.version = text("sw_ver").or(worker.version.take());
        if let Some(load) = event.get("loadavg") {
            worker.loadavg = Some(load.clone());
        }
    }

    /// Applies the replies of `inspect stats` and `inspect active_queues`, each a list of
    /// `{node name: reply}`.
    pub fn inspected(&mut self, stats: &[Value], queues: &[Value]) {
        for (hostname, reply) in stats.iter().filter_map(Value::as_object).flatten() {
            let worker = self.worker(hostname);
            worker.concurrency = reply
                .pointer("/pool/max-concurrency")
                .and_then(Value::as_u64)
                .or(worker.concurrency);
            worker.pid = reply.get("pid").and_then(Value::as_u64).or(worker.pid);
        }
        for (hostname, reply) in queues.iter().filter_map(Value::as_object).flatten() {
            if let Some(list) = reply.as_array() {
                self.worker(hostname).queues = list
                    .iter()
                    .filter_map(|q| q.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect();
            }
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &WorkerView> {
        self.workers.values()
    }
}
