//! Celery's wire format on Redis, as Celery 5 writes it (fixtures in `tests/fixtures/celery`):
//! task messages of protocol v2 (a JSON envelope whose base64 body is `[args, kwargs, embed]`),
//! the names of priority sub-queues, and the values of the Redis result backend
//! (`celery-task-meta-<id>`). JSON only: any other content type is refused with the reason.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::Kind;

/// A task message as a worker needs it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TaskMessage {
    pub id: String,
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub retries: u32,
    pub eta: Option<DateTime<FixedOffset>>,
    pub expires: Option<DateTime<FixedOffset>>,
    /// Seconds. Celery puts `[time_limit, soft_time_limit]` in the `timelimit` header.
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub priority: u8,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
}

/// Why a message cannot be understood; it goes to the dead letters with this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON envelope: {0}")]
    Envelope(String),
    #[error("content type {0:?} is not accepted (JSON only)")]
    ContentType(String),
    #[error("body encoding {0:?} is not supported (base64 only)")]
    BodyEncoding(String),
    #[error("body: {0}")]
    Body(String),
    #[error("header {0}: {1}")]
    Header(&'static str, String),
}

#[derive(Deserialize)]
struct Envelope {
    body: String,
    #[serde(rename = "content-type")]
    content_type: Option<String>,
    headers: Map<String, Value>,
    #[serde(default)]
    properties: Map<String, Value>,
}

fn header_str(
    headers: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, DecodeError> {
    match headers.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(DecodeError::Header(
            name,
            format!("expected a string, got {other}"),
        )),
    }
}

fn header_time(
    headers: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<DateTime<FixedOffset>>, DecodeError> {
    header_str(headers, name)?
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .or_else(|_| {
                    // Celery writes naive datetimes as UTC when timezone support is off.
                    chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc().fixed_offset())
                })
                .map_err(|e| {
                    DecodeError::Header(name, format!("{s:?} is not an ISO 8601 time: {e}"))
                })
        })
        .transpose()
}

/// Decodes a message as taken from a queue.
pub fn decode(raw: &[u8]) -> Result<TaskMessage, DecodeError> {
    let envelope: Envelope =
        serde_json::from_slice(raw).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    let content_type = envelope.content_type.unwrap_or_default();
    if content_type != "application/json" {
        return Err(DecodeError::ContentType(content_type));
    }
    let encoding = envelope
        .properties
        .get("body_encoding")
        .and_then(Value::as_str)
        .unwrap_or("base64");
    if encoding != "base64" {
        return Err(DecodeError::BodyEncoding(encoding.to_owned()));
    }
    let body = BASE64
        .decode(envelope.body.as_bytes())
        .map_err(|e| DecodeError::Body(format!("not base64: {e}")))?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| DecodeError::Body(format!("not JSON: {e}")))?;
    let (args, kwargs) = match body {
        Value::Array(parts) if (2..=3).contains(&parts.len()) => {
            let mut parts = parts.into_iter();
            let args = match parts.next() {
                Some(Value::Array(args)) => args,
                other => {
                    return Err(DecodeError::Body(format!(
                        "args must be a list, got {other:?}"
                    )))
                }
            };
            let kwargs = match parts.next() {
                Some(Value::Object(kwargs)) => kwargs,
                other => {
                    return Err(DecodeError::Body(format!(
                        "kwargs must be a mapping, got {other:?}"
                    )))
                }
            };
            (args, kwargs)
        }
        other => {
            return Err(DecodeError::Body(format!(
                "expected [args, kwargs, embed] (protocol v2), got {}",
                short(&other)
            )))
        }
    };
    let headers = &envelope.headers;
    let task = header_str(headers, "task")?.ok_or(DecodeError::Header("task", "missing".into()))?;
    let id = header_str(headers, "id")?.ok_or(DecodeError::Header("id", "missing".into()))?;
    let retries = match headers.get("retries") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| DecodeError::Header("retries", format!("expected a count, got {v}")))?,
    };
    let (time_limit, soft_time_limit) = match headers.get("timelimit") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Array(limits)) if limits.len() == 2 => (limits[0].as_f64(), limits[1].as_f64()),
        Some(v) => {
            return Err(DecodeError::Header(
                "timelimit",
                format!("expected [hard, soft], got {v}"),
            ))
        }
    };
    let priority = envelope
        .properties
        .get("priority")
        .and_then(Value::as_u64)
        .map_or(0, |p| p.min(255) as u8);
    Ok(TaskMessage {
        eta: header_time(headers, "eta")?,
        expires: header_time(headers, "expires")?,
        root_id: header_str(headers, "root_id")?,
        parent_id: header_str(headers, "parent_id")?,
        id,
        task,
        args,
        kwargs,
        retries,
        time_limit,
        soft_time_limit,
        priority,
    })
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// The message `apply_async(args, kwargs, queue=...)` sends, as Celery 5 writes it.
pub fn encode(
    task: &str,
    id: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
    queue: &str,
    origin: &str,
) -> String {
    let body = json!([args, kwargs, { "callbacks": null, "errbacks": null, "chain": null, "chord": null }]);
    json!({
        "body": BASE64.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": id, "shadow": null, "eta": null, "expires": null,
            "group": null, "group_index": null, "retries": 0, "timelimit": [null, null],
            "root_id": id, "parent_id": null,
            "argsrepr": Value::from(args.to_vec()).to_string(), "kwargsrepr": Value::from(kwargs.clone()).to_string(),
            "origin": origin, "ignore_result": false,
        },
        "properties": {
            "correlation_id": id, "reply_to": Uuid::new_v4().to_string(), "delivery_mode": 2,
            "delivery_info": { "exchange": "", "routing_key": queue }, "priority": 0,
            "body_encoding": "base64", "delivery_tag": Uuid::new_v4().to_string(),
        },
    })
    .to_string()
}

/// The message that runs a task again, as Celery's `Task.retry` sends it: the same message with
/// its `retries` header raised to `retries` and an `eta` (the countdown's end). `raw` is a
/// message `decode` read.
pub fn retry_message(raw: &[u8], retries: u32, eta: DateTime<Utc>) -> Result<Vec<u8>, DecodeError> {
    let mut envelope: Value =
        serde_json::from_slice(raw).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    let headers = envelope
        .get_mut("headers")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| DecodeError::Header("headers", "missing".into()))?;
    headers.insert("retries".into(), retries.into());
    headers.insert(
        "eta".into(),
        eta.to_rfc3339_opts(SecondsFormat::Micros, false).into(),
    );
    Ok(envelope.to_string().into_bytes())
}

/// The Redis list a message of `priority` goes to: Celery's Redis transport keeps priorities
/// 0 to 9 in four lists, `queue` for 0 to 2 and `queue\x06\x16{3,6,9}` above; 0 is served first.
pub fn priority_queue(queue: &str, priority: u8) -> String {
    match priority {
        0..=2 => queue.to_owned(),
        3..=5 => format!("{queue}\x06\x163"),
        6..=8 => format!("{queue}\x06\x166"),
        _ => format!("{queue}\x06\x169"),
    }
}

/// Where the Redis result backend keeps a task's state (also the channel it publishes on).
pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

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
}

/// The value stored under `result_key`, as Celery's Redis backend writes it.
pub fn result_value(task_id: &str, state: &TaskState, now: DateTime<Utc>) -> String {
    let date_done = now.to_rfc3339_opts(SecondsFormat::Micros, false);
    let (status, result, traceback, date_done) = match state {
        TaskState::Started { pid, hostname } => (
            "STARTED",
            json!({ "pid": pid, "hostname": hostname }),
            None,
            None,
        ),
        TaskState::Success(value) => ("SUCCESS", value.clone(), None, Some(date_done)),
        TaskState::Failure {
            exc_type,
            exc_message,
            exc_module,
            traceback,
        } => (
            "FAILURE",
            json!({ "exc_type": exc_type, "exc_message": [exc_message], "exc_module": exc_module }),
            traceback.clone(),
            Some(date_done),
        ),
        TaskState::Retry {
            exc_type,
            exc_message,
            exc_module,
        } => (
            "RETRY",
            json!({ "exc_type": exc_type, "exc_message": [exc_message], "exc_module": exc_module }),
            None,
            // Celery dates only the states a task ends in.
            None,
        ),
    };
    json!({
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": null,
        "date_done": date_done,
        "task_id": task_id,
    })
    .to_string()
}

/// The task names the trigger serves (configurable: the seed's are the defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNames {
    pub full_persona: String,
    pub one_kind: BTreeMap<String, Kind>,
}

impl Default for TaskNames {
    fn default() -> Self {
        Self {
            full_persona: "workers.tasks.ingest_full_persona".into(),
            one_kind: Kind::ALL
                .iter()
                .map(|k| (format!("workers.tasks.ingest_persona_{k}"), *k))
                .collect(),
        }
    }
}

impl TaskNames {
    pub fn from_settings(tasks: &crate::config::TaskSettings) -> Self {
        Self {
            full_persona: tasks.full_persona.clone(),
            one_kind: [
                (tasks.works.clone(), Kind::Works),
                (tasks.quotes.clone(), Kind::Quotes),
                (tasks.profile.clone(), Kind::Profile),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The task that ingests one kind.
    pub fn of_kind(&self, kind: Kind) -> &str {
        self.one_kind
            .iter()
            .find(|(_, k)| **k == kind)
            .map(|(name, _)| name.as_str())
            .expect("every kind has a task")
    }
}

/// What a message asks the engine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestCall {
    /// `ingest_full_persona(persona_id, job_ids)`: returns `{"profile": id, "works": id, "quotes": id}`.
    FullPersona {
        persona_id: String,
        job_ids: BTreeMap<Kind, Uuid>,
    },
    /// `ingest_persona_<kind>(persona_id, job_id)`: returns the vector count.
    OneKind {
        kind: Kind,
        persona_id: String,
        job_id: Uuid,
    },
}

/// The argument named `name` at `position`, given positionally or by keyword.
fn argument<'a>(msg: &'a TaskMessage, position: usize, name: &str) -> Result<&'a Value, String> {
    msg.kwargs
        .get(name)
        .or_else(|| msg.args.get(position))
        .ok_or_else(|| format!("{}: missing argument {name:?}", msg.task))
}

fn string_argument(msg: &TaskMessage, position: usize, name: &str) -> Result<String, String> {
    argument(msg, position, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: argument {name:?} must be a string", msg.task))
}

fn uuid_of(value: &Value, what: &str) -> Result<Uuid, String> {
    value
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| format!("{what} must be a UUID, got {value}"))
}

/// Reads the call a message makes; an unknown task or bad arguments is the reason to dead-letter.
pub fn ingest_call(msg: &TaskMessage, names: &TaskNames) -> Result<IngestCall, String> {
    if msg.task == names.full_persona {
        let persona_id = string_argument(msg, 0, "persona_id")?;
        let Value::Object(ids) = argument(msg, 1, "job_ids")? else {
            return Err(format!(
                "{}: argument \"job_ids\" must be a mapping of kind to job id",
                msg.task
            ));
        };
        let mut job_ids = BTreeMap::new();
        for (kind, id) in ids {
            let kind: Kind = kind
                .parse()
                .map_err(|e| format!("{}: job_ids: {e}", msg.task))?;
            job_ids.insert(kind, uuid_of(id, &format!("{}: job_ids.{kind}", msg.task))?);
        }
        return Ok(IngestCall::FullPersona {
            persona_id,
            job_ids,
        });
    }
    if let Some(kind) = names.one_kind.get(&msg.task) {
        return Ok(IngestCall::OneKind {
            kind: *kind,
            persona_id: string_argument(msg, 0, "persona_id")?,
            job_id: uuid_of(
                argument(msg, 1, "job_id")?,
                &format!("{}: job_id", msg.task),
            )?,
        });
    }
    Err(format!("unknown task {:?}", msg.task))
}

#[cfg(test)]
mod tests;
