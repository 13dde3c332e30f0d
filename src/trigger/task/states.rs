//! Celery's side of a task's answers: the exceptions and states the result backend stores, the
//! events a task's states make, the sub-task ids of `ingest_full_persona`, and the jobs a call
//! asks for.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::jobs::JobRef;
use crate::trigger::celery::{IngestCall, TaskMessage, TaskState};
use crate::Kind;

/// The sub-task id of one kind of an `ingest_full_persona` task: derived from the task id, so
/// that a redelivered message answers under the same ids.
pub fn subtask_id(task_id: &str, kind: Kind) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{task_id}/{kind}").as_bytes()).to_string()
}

/// The persona and the jobs a call asks for, with the task ids their results go under.
pub(super) fn jobs_asked<'a>(call: &'a IngestCall, task_id: &str) -> (&'a str, Vec<JobRef>) {
    match call {
        IngestCall::FullPersona {
            persona_id,
            job_ids,
            ..
        } => (
            persona_id,
            job_ids
                .iter()
                .map(|(kind, id)| JobRef {
                    id: *id,
                    kind: *kind,
                    task_id: Some(subtask_id(task_id, *kind)),
                })
                .collect(),
        ),
        IngestCall::OneKind {
            kind,
            persona_id,
            job_id,
            ..
        } => (
            persona_id,
            vec![JobRef {
                id: *job_id,
                kind: *kind,
                task_id: Some(task_id.to_owned()),
            }],
        ),
    }
}

/// A failure as an exception Celery's client can rebuild: `RuntimeError` for a failed
/// ingestion, `ValueError` for a bad argument.
pub fn exception(exc_type: &str, message: String) -> TaskState {
    let exc_module = "builtins";
    TaskState::Failure {
        exc_type: exc_type.into(),
        exc_message: message,
        exc_module: exc_module.into(),
        traceback: None,
    }
}

pub(super) fn retry_state(message: String) -> TaskState {
    TaskState::Retry {
        exc_type: "RuntimeError".into(),
        exc_message: message,
        exc_module: "builtins".into(),
    }
}

/// What `task-received` tells of a message, as Celery's worker does.
pub fn received_fields(msg: &TaskMessage) -> Value {
    json!({
        "name": msg.task,
        "args": Value::from(msg.args.clone()).to_string(),
        "kwargs": Value::from(msg.kwargs.clone()).to_string(),
        "root_id": msg.root_id,
        "parent_id": msg.parent_id,
        "retries": msg.retries,
        "eta": msg.eta.map(|t| t.to_rfc3339()),
        "expires": msg.expires.map(|t| t.to_rfc3339()),
    })
}

/// The Celery event of a task's new state: its type and its own fields.
pub(super) fn event_of(state: &TaskState, runtime: Duration) -> (&'static str, Value) {
    let exception = |exc_type: &str, message: &str| format!("{exc_type}({message:?})");
    match state {
        TaskState::Started { .. } => ("task-started", json!({})),
        TaskState::Success(value) => (
            "task-succeeded",
            json!({ "result": value.to_string(), "runtime": runtime.as_secs_f64() }),
        ),
        TaskState::Failure {
            exc_type,
            exc_message,
            ..
        } => (
            "task-failed",
            json!({ "exception": exception(exc_type, exc_message), "traceback": null }),
        ),
        TaskState::Retry {
            exc_type,
            exc_message,
            ..
        } => (
            "task-retried",
            json!({ "exception": exception(exc_type, exc_message), "traceback": null }),
        ),
        TaskState::Revoked { reason } => (
            "task-revoked",
            json!({ "terminated": reason == "terminated", "signum": null, "expired": reason == "expired" }),
        ),
    }
}

/// What `task-received` tells of a sub-task of `ingest_full_persona`, as if its message had
/// been received: its own name and arguments, the top task as parent and root.
pub fn subtask_received_fields(
    name: &str,
    persona_id: &str,
    job_id: &uuid::Uuid,
    parent: &TaskMessage,
) -> Value {
    json!({
        "name": name,
        "args": json!([persona_id, job_id]).to_string(),
        "kwargs": "{}",
        "root_id": parent.root_id.as_deref().unwrap_or(&parent.id),
        "parent_id": parent.id,
        "retries": 0,
        "eta": null,
        "expires": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_task_ids_are_the_same_for_a_redelivered_task_and_differ_by_kind() {
        let works = subtask_id("t-1", Kind::Works);
        assert_eq!(works, subtask_id("t-1", Kind::Works));
        assert_ne!(works, subtask_id("t-1", Kind::Quotes));
        assert_ne!(works, subtask_id("t-2", Kind::Works));
    }

    #[test]
    fn states_make_the_events_celery_sends() {
        let failed = exception("RuntimeError", "persona ghost not found".into());
        assert_eq!(
            event_of(&failed, Duration::ZERO),
            (
                "task-failed",
                json!({ "exception": "RuntimeError(\"persona ghost not found\")", "traceback": null })
            )
        );
        let (kind, fields) = event_of(&TaskState::Success(json!(12)), Duration::from_millis(1500));
        assert_eq!(kind, "task-succeeded");
        assert_eq!(fields, json!({ "result": "12", "runtime": 1.5 }));
        assert_eq!(
            event_of(&retry_state("503".into()), Duration::ZERO).0,
            "task-retried"
        );
    }
}
