//! Task states as Celery's Redis result backend stores them under `celery-task-meta-<id>` (the
//! fixtures in `tests/fixtures/celery` are a real worker's): `STARTED` with the worker's pid and
//! node name, `SUCCESS` with the value, `FAILURE`, `RETRY` and `REVOKED` with the exception as
//! `exc_type`, `exc_message` (a list: the exception's args) and `exc_module`; `children` (the
//! tasks a task sent, each as `[[id, null], null]`) and `parent_id` where the task has them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// A task's state as `AsyncResult` reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    Started {
        pid: u32,
        hostname: String,
    },
    Success(Value),
    /// Celery stores `exc.args` as `exc_message`, a list.
    Failure {
        exc_type: String,
        exc_message: String,
        exc_module: String,
        traceback: Option<String>,
    },
    /// To be run again: the exception that made it so, as Celery's `mark_as_retry` stores it.
    Retry {
        exc_type: String,
        exc_message: String,
        exc_module: String,
    },
    /// Revoked (`reason` "revoked"; "terminated" for a run a terminate stopped; "expired" for a
    /// message past its `expires`), as
    /// `mark_as_revoked` stores it: a `TaskRevokedError`.
    Revoked {
        reason: String,
    },
}

impl TaskState {
    /// Whether the task is over (Celery's READY_STATES).
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            Self::Success(_) | Self::Failure { .. } | Self::Revoked { .. }
        )
    }

    /// The state's name as stored in `status`.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Started { .. } => "STARTED",
            Self::Success(_) => "SUCCESS",
            Self::Failure { .. } => "FAILURE",
            Self::Retry { .. } => "RETRY",
            Self::Revoked { .. } => "REVOKED",
        }
    }
}

/// What a stored state says besides the state: the task's parent and the tasks it sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultMeta {
    pub parent_id: Option<String>,
    /// `None`: stored as null (a state written outside a worker's run, as `store_result` does).
    pub children: Option<Vec<String>>,
}

/// The value stored under `result_key`, as Celery's Redis backend writes it.
pub fn result_value(
    task_id: &str,
    state: &TaskState,
    meta: &ResultMeta,
    now: DateTime<Utc>,
) -> String {
    let exception = |exc_type: &str, exc_message: &str, exc_module: &str| json!({ "exc_type": exc_type, "exc_message": [exc_message], "exc_module": exc_module });
    let (result, traceback) = match state {
        TaskState::Started { pid, hostname } => (json!({ "pid": pid, "hostname": hostname }), None),
        TaskState::Success(value) => (value.clone(), None),
        TaskState::Failure {
            exc_type,
            exc_message,
            exc_module,
            traceback,
        } => (
            exception(exc_type, exc_message, exc_module),
            traceback.clone(),
        ),
        TaskState::Retry {
            exc_type,
            exc_message,
            exc_module,
        } => (exception(exc_type, exc_message, exc_module), None),
        TaskState::Revoked { reason } => (
            exception("TaskRevokedError", reason, "celery.exceptions"),
            None,
        ),
    };
    // Celery dates only the states a task ends in.
    let date_done = state
        .is_ready()
        .then(|| now.to_rfc3339_opts(SecondsFormat::Micros, false));
    let children = meta.children.as_ref().map(|ids| {
        ids.iter()
            .map(|id| json!([[id, null], null]))
            .collect::<Vec<_>>()
    });
    let mut value = Map::new();
    value.insert("status".into(), state.status().into());
    value.insert("result".into(), result);
    value.insert("traceback".into(), traceback.into());
    value.insert("children".into(), children.into());
    value.insert("date_done".into(), date_done.into());
    if let Some(parent) = &meta.parent_id {
        value.insert("parent_id".into(), parent.clone().into());
    }
    value.insert("task_id".into(), task_id.into());
    Value::Object(value).to_string()
}
