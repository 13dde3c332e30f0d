//! The `Monitor` actor: what the dashboard knows that neither the database nor the broker
//! keeps. It hears every Celery event on the broker (`/{db}.celeryev/*`, the channels Flower
//! listens to), so it knows every task and worker there, this engine's and Celery's alike
//! (`tasks.rs`, `workers.rs`); it samples the engine's counters and the queue depth for the
//! charts (`history.rs`); and it passes each task's new state on to the dashboard's live stream.
//!
//! Its Redis side is behind `MonitorPorts` (the queue depth, remote control's `inspect`), so
//! tests drive it with plain values; the subscription that feeds it is
//! `crate::trigger::subscription::forward`.

pub mod history;
pub mod tasks;
#[cfg(test)]
mod tests;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::trigger::celery::TaskNames;
use history::{History, Sample, Series, SAMPLE_EVERY};
use tasks::{TaskBook, TaskFilter, TaskView};
use workers::{WorkerBook, WorkerView};

/// How often `inspect stats` and `active_queues` are asked (no event carries concurrency or
/// queues).
const INSPECT_EVERY: Duration = Duration::from_secs(10);

/// The messages waiting in the served queues.
#[async_trait]
pub trait QueueDepth: Send + Sync {
    async fn depth(&self) -> anyhow::Result<u64>;
}

#[async_trait]
impl QueueDepth for crate::trigger::broker::Broker {
    async fn depth(&self) -> anyhow::Result<u64> {
        Ok(self.waiting().await?)
    }
}

/// Remote control's `inspect`: the replies of every worker to `method`, each `{node: reply}`.
#[async_trait]
pub trait Inspect: Send + Sync {
    async fn inspect(&self, method: &str) -> anyhow::Result<Vec<Value>>;
}

#[derive(Clone, Default)]
pub struct MonitorPorts {
    pub depth: Option<Arc<dyn QueueDepth>>,
    pub inspect: Option<Arc<dyn Inspect>>,
}

pub struct Monitor {
    tasks: TaskBook,
    workers: WorkerBook,
    history: History,
    ports: MonitorPorts,
    /// Each task's new state, as it changes, for the live stream.
    updates: broadcast::Sender<Value>,
}

impl Monitor {
    pub fn new(names: TaskNames, ports: MonitorPorts) -> Self {
        Self {
            tasks: TaskBook::new(names),
            workers: WorkerBook::default(),
            history: History::default(),
            ports,
            updates: broadcast::channel(1024).0,
        }
    }

    fn sample(&mut self, ctx: &mut Context<Self>) {
        let depth = self.ports.depth.clone();
        async move {
            let mut sample = Sample::now();
            if let Some(depth) = depth {
                sample.queue_depth = depth.depth().await.ok();
            }
            sample
        }
        .into_actor(self)
        .map(|sample, monitor, _| monitor.history.push(sample))
        .spawn(ctx);
    }

    fn inspect(&mut self, ctx: &mut Context<Self>) {
        let Some(inspect) = self.ports.inspect.clone() else {
            return;
        };
        async move {
            let stats = inspect.inspect("stats").await.unwrap_or_default();
            let queues = inspect.inspect("active_queues").await.unwrap_or_default();
            (stats, queues)
        }
        .into_actor(self)
        .map(|(stats, queues), monitor, _| monitor.workers.inspected(&stats, &queues))
        .spawn(ctx);
    }

    fn apply(&mut self, event: &Map<String, Value>) {
        self.workers.apply(event);
        let task = self.tasks.apply(event);
        // Rendered only for a live stream that listens.
        if let Some(task) = task.filter(|_| self.updates.receiver_count() > 0) {
            let _ = self.updates.send(task.summary());
        }
    }
}

impl Actor for Monitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.sample(ctx);
        self.inspect(ctx);
        ctx.run_interval(SAMPLE_EVERY, Self::sample);
        ctx.run_interval(INSPECT_EVERY, Self::inspect);
    }
}

/// The events in one message PUBLISHed on a `celeryev` channel: a kombu envelope whose body
/// (base64, or plain JSON) is one event, or a list of them (Celery's buffered `task.multi`).
pub fn decode_events(payload: &[u8]) -> Vec<Map<String, Value>> {
    let Ok(envelope) = serde_json::from_slice::<Value>(payload) else {
        return Vec::new();
    };
    let body = match envelope.get("body") {
        Some(Value::String(body)) => {
            let base64 = envelope.pointer("/properties/body_encoding") == Some(&"base64".into());
            let bytes = if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_default()
            } else {
                body.as_bytes().to_vec()
            };
            serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)
        }
        Some(body) => body.clone(),
        None => Value::Null,
    };
    match body {
        Value::Object(event) => vec![event],
        Value::Array(events) => events
            .into_iter()
            .filter_map(|e| match e {
                Value::Object(event) => Some(event),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One message heard on a `celeryev` channel, as PUBLISHed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CeleryEvent(pub Vec<u8>);

impl Handler<CeleryEvent> for Monitor {
    type Result = ();

    fn handle(&mut self, msg: CeleryEvent, _: &mut Self::Context) {
        for event in decode_events(&msg.0) {
            self.apply(&event);
        }
    }
}

/// The tasks a filter matches: how many, and the first `limit` (most recent first).
#[derive(Message)]
#[rtype(result = "(usize, Vec<TaskView>)")]
pub struct ListTasks(pub TaskFilter);

impl Handler<ListTasks> for Monitor {
    type Result = MessageResult<ListTasks>;

    fn handle(&mut self, msg: ListTasks, _: &mut Self::Context) -> Self::Result {
        let (total, tasks) = self.tasks.list(&msg.0);
        MessageResult((total, tasks.into_iter().cloned().collect()))
    }
}

/// One task with its sub-tasks, if it was heard of.
#[derive(Message)]
#[rtype(result = "Option<(TaskView, Vec<TaskView>)>")]
pub struct GetTask(pub String);

impl Handler<GetTask> for Monitor {
    type Result = MessageResult<GetTask>;

    fn handle(&mut self, msg: GetTask, _: &mut Self::Context) -> Self::Result {
        let task = self.tasks.get(&msg.0).cloned();
        let children = self.tasks.children(&msg.0).into_iter().cloned().collect();
        MessageResult(task.map(|t| (t, children)))
    }
}

/// Every worker heard of, and whether each is alive now.
#[derive(Message)]
#[rtype(result = "Vec<(WorkerView, bool)>")]
pub struct ListWorkers;

impl Handler<ListWorkers> for Monitor {
    type Result = MessageResult<ListWorkers>;

    fn handle(&mut self, _: ListWorkers, _: &mut Self::Context) -> Self::Result {
        let now = history::unix_now();
        MessageResult(
            self.workers
                .all()
                .map(|w| (w.clone(), w.alive(now)))
                .collect(),
        )
    }
}

/// The charts: the counters' series over the window, and the runtimes of the tasks that ended
/// in it (`[ended, seconds, kind or name, state]`).
#[derive(Message)]
#[rtype(result = "(Series, Vec<Value>)")]
pub struct Charts;

impl Handler<Charts> for Monitor {
    type Result = MessageResult<Charts>;

    fn handle(&mut self, _: Charts, _: &mut Self::Context) -> Self::Result {
        let since = history::unix_now() - history::WINDOW.as_secs_f64();
        let durations = self
            .tasks
            .ended_since(since)
            .into_iter()
            .filter(|t| t.kind.is_some())
            .map(|t| serde_json::json!([t.ended, t.runtime, t.kind, t.state]))
            .collect();
        MessageResult((self.history.series(), durations))
    }
}

/// Stops the monitor: its sampling and its `inspect` calls end (the daemon stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopMonitor;

impl Handler<StopMonitor> for Monitor {
    type Result = ();

    fn handle(&mut self, _: StopMonitor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A receiver of every task's new state (without its timeline), for the live stream.
#[derive(Message)]
#[rtype(result = "broadcast::Receiver<Value>")]
pub struct Subscribe;

impl Handler<Subscribe> for Monitor {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, _: Subscribe, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.updates.subscribe())
    }
}
