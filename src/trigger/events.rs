//! Celery events, so that the tools the web app's operators run (Flower, `celery events`) see
//! `persona-ingest run` as a worker: `worker-online`, a `worker-heartbeat` every 2 s,
//! `worker-offline`, and `task-received`, `task-started`, `task-retried`, `task-succeeded` (with
//! `runtime`), `task-failed` (with `exception`). Each is published as Celery's Redis transport
//! publishes to its `celeryev` fanout exchange: `PUBLISH /{db}.celeryev/{type, - as .}` of a
//! kombu envelope whose base64 body is the event, with the fields Celery sends.
//!
//! Events are best-effort, as in Celery: one that cannot be published is dropped, never waited on.
//! They go through an outbox to one publishing task, which sends what has gathered in one
//! pipeline and in order, so a task's way does not wait for a Redis round trip per event (eight
//! of them for an `ingest_full_persona` and its sub-tasks). A worker event is awaited until it
//! is out, and so is everything before it: `worker-offline` at exit comes after the last task's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use redis::aio::ConnectionManager;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::ports::Events;

/// How often a worker says it lives; Flower takes a worker for gone after about two missed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// An event for the publishing task: its channel, its message, and whom to tell once it is out.
struct Outgoing {
    channel: String,
    message: String,
    sent: Option<oneshot::Sender<()>>,
}

/// Events waiting to be published; more are dropped (Redis away for a while).
const OUTBOX: usize = 10_000;
/// Events sent in one pipeline at most.
const PIPELINE: usize = 256;

pub struct EventPublisher {
    /// Events for the publishing task.
    outbox: mpsc::Sender<Outgoing>,
    /// `/{db}.celeryev/`
    channel_prefix: String,
    events: WorkerEvents,
    /// Task events on (remote control's `enable_events`/`disable_events`); worker events are
    /// always sent, as Celery sends them.
    task_events: std::sync::atomic::AtomicBool,
}

/// The events of one worker, as Celery writes them: its name, pid, logical clock and counts.
pub struct WorkerEvents {
    /// The worker's node name, as Celery's `name@host`.
    pub hostname: String,
    pid: u32,
    /// The broker's id of this daemon (`host:pid:uuid`), sent with worker events so that a
    /// dashboard can join them to its lease whatever the node is named; Celery's tools ignore
    /// the extra field.
    worker_id: Option<String>,
    clock: AtomicU64,
    active: AtomicU64,
    processed: AtomicU64,
}

impl EventPublisher {
    /// Events of the daemon named `hostname` (`name@host`) whose broker worker id (its lease and
    /// in-flight list) is `worker_id`. Starts the publishing task: call it in a Tokio runtime.
    pub fn new(con: ConnectionManager, db: i64, hostname: String, worker_id: String) -> Self {
        let (outbox, waiting) = mpsc::channel(OUTBOX);
        tokio::spawn(publish_in_order(con, waiting));
        Self {
            outbox,
            channel_prefix: format!("/{db}.celeryev/"),
            events: WorkerEvents::new(hostname).with_worker_id(worker_id),
            task_events: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub fn hostname(&self) -> &str {
        &self.events.hostname
    }

    /// An event for the outbox.
    fn outgoing(
        &self,
        event_type: &str,
        event: &Value,
        sent: Option<oneshot::Sender<()>>,
    ) -> Outgoing {
        let routing_key = event_type.replace('-', ".");
        Outgoing {
            channel: format!("{}{routing_key}", self.channel_prefix),
            message: envelope(&self.events.hostname, &routing_key, event),
            sent,
        }
    }
}

#[async_trait]
impl Events for EventPublisher {
    fn task_taken(&self) {
        self.events.active.fetch_add(1, Ordering::Relaxed);
    }

    fn task_done(&self) {
        self.events.active.fetch_sub(1, Ordering::Relaxed);
        self.events.processed.fetch_add(1, Ordering::Relaxed);
    }

    fn set_task_events(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed)
    }

    async fn worker(&self, event_type: &str) {
        let event = self.events.worker(event_type);
        let (sent, out) = oneshot::channel();
        if self
            .outbox
            .try_send(self.outgoing(event_type, &event, Some(sent)))
            .is_ok()
        {
            // Answered once published or given up on (the publisher's own timeout).
            let _ = out.await;
        }
    }

    async fn task(&self, event_type: &str, uuid: &str, fields: Value) {
        if !self.task_events.load(Ordering::Relaxed) {
            return;
        }
        let event = self.events.task(event_type, uuid, fields);
        if self
            .outbox
            .try_send(self.outgoing(event_type, &event, None))
            .is_err()
        {
            tracing::debug!("event {event_type} not published: too many waiting");
        }
    }
}

/// Publishes the outbox's events in order, what has gathered in one pipeline, until the
/// publisher is dropped.
async fn publish_in_order(mut con: ConnectionManager, mut waiting: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PIPELINE);
    while waiting.recv_many(&mut batch, PIPELINE).await > 0 {
        let mut pipe = redis::pipe();
        let mut told = Vec::new();
        for event in batch.drain(..) {
            pipe.cmd("PUBLISH")
                .arg(event.channel)
                .arg(event.message)
                .ignore();
            told.extend(event.sent);
        }
        // Never held up by Redis: an event too late is worth nothing.
        match tokio::time::timeout(Duration::from_secs(1), pipe.query_async::<()>(&mut con)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("events not published: {e}"),
            Err(_) => tracing::debug!("events not published in time"),
        }
        for sent in told {
            let _ = sent.send(());
        }
    }
}

impl WorkerEvents {
    pub fn new(hostname: String) -> Self {
        Self {
            hostname,
            pid: std::process::id(),
            worker_id: None,
            clock: AtomicU64::new(0),
            active: AtomicU64::new(0),
            processed: AtomicU64::new(0),
        }
    }

    pub fn with_worker_id(mut self, worker_id: String) -> Self {
        self.worker_id = Some(worker_id);
        self
    }

    /// The fields every event carries, and `type`.
    fn event(&self, event_type: &str, fields: Map<String, Value>) -> Value {
        let mut event = Map::new();
        event.insert("hostname".into(), self.hostname.clone().into());
        event.insert("utcoffset".into(), json!(utc_offset_hours()));
        event.insert("pid".into(), self.pid.into());
        event.insert(
            "clock".into(),
            (self.clock.fetch_add(1, Ordering::Relaxed) + 1).into(),
        );
        event.extend(fields);
        event.insert("timestamp".into(), json!(now()));
        event.insert("type".into(), event_type.into());
        Value::Object(event)
    }

    /// `worker-online`, `worker-heartbeat` or `worker-offline`.
    pub fn worker(&self, event_type: &str) -> Value {
        let fields = json!({
            "freq": HEARTBEAT_EVERY.as_secs_f64(),
            "active": self.active.load(Ordering::Relaxed),
            "processed": self.processed.load(Ordering::Relaxed),
            "loadavg": loadavg(),
            "sw_ident": "persona-ingest",
            "sw_ver": env!("CARGO_PKG_VERSION"),
            "sw_sys": "Linux",
        });
        let Value::Object(mut fields) = fields else {
            unreachable!("built as an object")
        };
        if let Some(id) = &self.worker_id {
            fields.insert("persona_ingest_worker_id".into(), id.clone().into());
        }
        self.event(event_type, fields)
    }

    /// A `task-*` event about task `uuid`, with its own `fields`.
    pub fn task(&self, event_type: &str, uuid: &str, fields: Value) -> Value {
        let mut all = Map::new();
        all.insert("uuid".into(), uuid.into());
        if let Value::Object(fields) = fields {
            all.extend(fields);
        }
        self.event(event_type, all)
    }
}

/// The kombu message Celery's Redis transport publishes for an event.
pub fn envelope(hostname: &str, routing_key: &str, event: &Value) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": { "hostname": hostname },
        "properties": {
            "delivery_mode": 1,
            "delivery_info": { "exchange": "celeryev", "routing_key": routing_key },
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    })
    .to_string()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Celery sends the local offset from UTC in hours, west positive (`time.timezone / 3600`).
fn utc_offset_hours() -> f64 {
    -f64::from(chrono::Local::now().offset().local_minus_utc()) / 3600.0
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
