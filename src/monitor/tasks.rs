//! Every task as Celery's events tell it, for the dashboard's task list and task pages: what
//! Flower's `State` keeps of tasks. Fed with `task-*` events from every worker on the broker
//! (this engine's daemons and Celery's own workers alike), so it knows tasks this process never
//! ran; bounded, forgetting the least recently heard of first.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::trigger::celery::TaskNames;

/// The most tasks kept (Flower's default `max_tasks`).
pub const MAX_TASKS: usize = 10_000;
/// The most events kept on one task's timeline.
const MAX_TIMELINE: usize = 16;

/// One task as its events describe it. Times are Unix seconds as the worker stamped them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TaskView {
    pub id: String,
    pub name: Option<String>,
    /// Celery's state: `PENDING`, `RECEIVED`, `STARTED`, `RETRY`, `SUCCESS`, `FAILURE`,
    /// `REVOKED`, `REJECTED`.
    pub state: String,
    pub persona: Option<String>,
    /// The kind a one-kind task or sub-task ingests; `None` for `ingest_full_persona`.
    pub kind: Option<String>,
    /// The worker's node name (`name@host`) that last spoke of it.
    pub worker: Option<String>,
    /// As sent in `task-received`: JSON text from this engine, Python's repr from Celery.
    pub args: Option<String>,
    pub kwargs: Option<String>,
    pub parent_id: Option<String>,
    pub root_id: Option<String>,
    pub retries: u64,
    pub eta: Option<String>,
    pub received: Option<f64>,
    pub started: Option<f64>,
    /// When it reached a ready state (SUCCESS, FAILURE, REVOKED).
    pub ended: Option<f64>,
    /// Seconds it ran, as the worker measured.
    pub runtime: Option<f64>,
    pub result: Option<String>,
    pub exception: Option<String>,
    /// The newest event's timestamp.
    pub updated: f64,
    /// Its events, oldest first: `{type, timestamp, hostname}` and their own fields.
    pub timeline: Vec<Value>,
}

impl TaskView {
    /// The task as a list shows it: everything but its timeline.
    pub fn summary(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(object) = value.as_object_mut() {
            object.remove("timeline");
        }
        value
    }
}

/// What the task list asks for; every given field must match.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub state: Option<String>,
    /// A part of the persona's id.
    pub persona: Option<String>,
    pub worker: Option<String>,
    /// A part of the task id (or of the parent's, to find sub-tasks).
    pub search: Option<String>,
    pub limit: usize,
}

#[derive(Default)]
pub struct TaskBook {
    tasks: HashMap<String, TaskView>,
    /// Task ids, least recently heard of first (ids may repeat: stale entries are skipped).
    heard: VecDeque<(String, u64)>,
    /// How many events each task has had, to tell a stale `heard` entry from its latest.
    seen: HashMap<String, u64>,
    names: TaskNames,
}

fn ready(state: &str) -> bool {
    matches!(state, "SUCCESS" | "FAILURE" | "REVOKED" | "REJECTED")
}

fn text(event: &Map<String, Value>, key: &str) -> Option<String> {
    match event.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl TaskBook {
    pub fn new(names: TaskNames) -> Self {
        Self {
            names,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Applies one `task-*` event; answers the task as it now stands (`None` for an event
    /// without a `uuid`).
    pub fn apply(&mut self, event: &Map<String, Value>) -> Option<&TaskView> {
        let kind = event
            .get("type")?
            .as_str()?
            .strip_prefix("task-")?
            .to_owned();
        let id = event.get("uuid")?.as_str()?.to_owned();
        let at = event
            .get("timestamp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let count = self.seen.entry(id.clone()).or_default();
        *count += 1;
        self.heard.push_back((id.clone(), *count));
        let task = self.tasks.entry(id.clone()).or_insert_with(|| TaskView {
            id: id.clone(),
            state: "PENDING".into(),
            ..TaskView::default()
        });
        let hostname = text(event, "hostname");
        let state = match kind.as_str() {
            "sent" => Some("PENDING"),
            "received" => {
                task.name = text(event, "name").or(task.name.take());
                task.args = text(event, "args");
                task.kwargs = text(event, "kwargs");
                task.parent_id = text(event, "parent_id");
                task.root_id = text(event, "root_id");
                task.eta = text(event, "eta");
                task.retries = event.get("retries").and_then(Value::as_u64).unwrap_or(0);
                task.received = Some(at);
                Some("RECEIVED")
            }
            "started" => {
                task.started = Some(at);
                Some("STARTED")
            }
            "succeeded" => {
                task.result = text(event, "result");
                task.runtime = event.get("runtime").and_then(Value::as_f64);
                task.ended = Some(at);
                Some("SUCCESS")
            }
            "failed" => {
                task.exception = text(event, "exception");
                task.runtime = event
                    .get("runtime")
                    .and_then(Value::as_f64)
                    .or(task.runtime);
                task.ended = Some(at);
                Some("FAILURE")
            }
            "retried" => {
                task.exception = text(event, "exception");
                Some("RETRY")
            }
            "revoked" => {
                task.ended = Some(at);
                Some("REVOKED")
            }
            "rejected" => Some("REJECTED"),
            _ => None,
        };
        // Events of one task can arrive out of order (sub-tasks are announced by the worker
        // that dispatches them): a ready state is never undone, and an older event never
        // moves a task back.
        if let Some(state) = state {
            if ready(state) || !ready(&task.state) && at >= task.updated {
                task.state = state.into();
            }
        }
        if hostname.is_some() && kind != "sent" {
            task.worker = hostname;
        }
        task.updated = task.updated.max(at);
        if task.name.is_some() && (task.persona.is_none() || task.kind.is_none()) {
            let (persona, kind) = describe(&self.names, task);
            task.persona = task.persona.take().or(persona);
            task.kind = task.kind.take().or(kind);
        }
        let mut entry = Map::new();
        for (key, value) in event {
            if !matches!(
                key.as_str(),
                "uuid" | "clock" | "utcoffset" | "pid" | "local_received"
            ) {
                entry.insert(key.clone(), value.clone());
            }
        }
        task.timeline.push(Value::Object(entry));
        if task.timeline.len() > MAX_TIMELINE {
            task.timeline.remove(1);
        }
        self.forget_oldest();
        self.tasks.get(&id)
    }

    fn forget_oldest(&mut self) {
        while self.tasks.len() > MAX_TASKS {
            let Some((id, count)) = self.heard.pop_front() else {
                return;
            };
            if self.seen.get(&id) == Some(&count) {
                self.tasks.remove(&id);
                self.seen.remove(&id);
            }
        }
        // Stale entries of tasks heard of again would otherwise grow without bound.
        if self.heard.len() > 4 * MAX_TASKS {
            let seen = &self.seen;
            self.heard.retain(|(id, count)| seen.get(id) == Some(count));
        }
    }

    pub fn get(&self, id: &str) -> Option<&TaskView> {
        self.tasks.get(id)
    }

    /// The tasks whose parent is `id`, in the order they were received.
    pub fn children(&self, id: &str) -> Vec<&TaskView> {
        let mut children: Vec<&TaskView> = self
            .tasks
            .values()
            .filter(|t| t.parent_id.as_deref() == Some(id))
            .collect();
        children.sort_by(|a, b| {
            a.received
                .partial_cmp(&b.received)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        children
    }

    /// The tasks `filter` matches, the most recently heard of first.
    pub fn list(&self, filter: &TaskFilter) -> (usize, Vec<&TaskView>) {
        let wanted = |given: &Option<String>, value: &Option<String>| {
            given.as_deref().is_none_or(|g| value.as_deref() == Some(g))
        };
        let mut found: Vec<&TaskView> = self
            .tasks
            .values()
            .filter(|t| {
                filter
                    .state
                    .as_deref()
                    .is_none_or(|s| t.state.eq_ignore_ascii_case(s))
                    && filter.persona.as_deref().is_none_or(|p| {
                        t.persona
                            .as_deref()
                            .is_some_and(|persona| persona.contains(p))
                    })
                    && wanted(&filter.worker, &t.worker)
                    && filter.search.as_deref().is_none_or(|q| {
                        let q = q.to_ascii_lowercase();
                        t.id.contains(&q) || t.parent_id.as_deref().is_some_and(|p| p.contains(&q))
                    })
            })
            .collect();
        found.sort_by(|a, b| {
            let key = |t: &TaskView| t.received.unwrap_or(t.updated);
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let total = found.len();
        found.truncate(filter.limit);
        (total, found)
    }

    /// Tasks that reached a ready state after `since` with a runtime, oldest first.
    pub fn ended_since(&self, since: f64) -> Vec<&TaskView> {
        let mut ended: Vec<&TaskView> = self
            .tasks
            .values()
            .filter(|t| t.ended.is_some_and(|e| e >= since) && t.runtime.is_some())
            .collect();
        ended.sort_by(|a, b| {
            a.ended
                .partial_cmp(&b.ended)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        ended
    }
}

/// The persona and kind of a task, from its name and its arguments (JSON as this engine sends
/// them; Celery's Python repr is read for a quoted first argument or `persona_id`).
fn describe(names: &TaskNames, task: &TaskView) -> (Option<String>, Option<String>) {
    let name = task.name.as_deref().unwrap_or_default();
    let kind = names.kind_of(name).map(|k| k.to_string());
    let from_json = || {
        let args: Value = serde_json::from_str(task.args.as_deref()?).ok()?;
        args.get(0)?.as_str().map(str::to_owned)
    };
    let from_kwargs = || {
        let kwargs: Value = serde_json::from_str(task.kwargs.as_deref()?).ok()?;
        kwargs.get("persona_id")?.as_str().map(str::to_owned)
    };
    // Celery sends Python's repr: `['jane-austen', 'j1']`, `('jane-austen',)`, or
    // `{'persona_id': 'jane-austen', ...}`.
    let from_repr = || {
        let quoted = |text: &str| {
            let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let rest = &text[1..];
            Some(rest[..rest.find(quote)?].to_owned())
        };
        let kwargs = task.kwargs.as_deref().and_then(|k| {
            let at = k.find("'persona_id': ")? + "'persona_id': ".len();
            quoted(&k[at..])
        });
        kwargs.or_else(|| {
            let args = task.args.as_deref()?.trim_start();
            quoted(args.strip_prefix(['(', '['])?.trim_start())
        })
    };
    let persona = from_json().or_else(from_kwargs).or_else(from_repr);
    (persona, kind)
}
