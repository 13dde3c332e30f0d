//! The messages a worker (and `persona-ingest enqueue`) sends, as Celery 5 writes them: a task
//! as `apply_async` sends it, a task published again for its retry, and `link`/`link_error`
//! callbacks.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::message::{DecodeError, TaskMessage};

/// What a message says of itself beyond its task and arguments.
#[derive(Clone, Debug, Default)]
pub struct Options<'a> {
    pub retries: u32,
    pub eta: Option<DateTime<Utc>>,
    pub root_id: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub priority: u8,
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
    encode_with(task, id, args, kwargs, queue, origin, &Options::default())
}

/// `encode`, with the options a worker sets on the messages it sends.
pub fn encode_with(
    task: &str,
    id: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
    queue: &str,
    origin: &str,
    options: &Options,
) -> String {
    let body = json!([args, kwargs, { "callbacks": null, "errbacks": null, "chain": null, "chord": null }]);
    let eta = options
        .eta
        .map(|eta| eta.to_rfc3339_opts(SecondsFormat::Micros, false));
    json!({
        "body": BASE64.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": id, "shadow": null, "eta": eta, "expires": null,
            "group": null, "group_index": null, "retries": options.retries, "timelimit": [null, null],
            "root_id": options.root_id.unwrap_or(id), "parent_id": options.parent_id,
            "argsrepr": Value::from(args.to_vec()).to_string(), "kwargsrepr": Value::from(kwargs.clone()).to_string(),
            "origin": origin, "ignore_result": false,
        },
        "properties": {
            "correlation_id": id, "reply_to": Uuid::new_v4().to_string(), "delivery_mode": 2,
            "delivery_info": { "exchange": "", "routing_key": queue }, "priority": options.priority,
            "body_encoding": "base64", "delivery_tag": Uuid::new_v4().to_string(),
        },
    })
    .to_string()
}

/// The message that runs a task again, as Celery's `Task.retry` sends it: the same message with
/// its `retries` header raised to `retries` and an `eta` (the countdown's end). A protocol v2
/// message keeps everything else it carried; a protocol v1 one is sent again as v2, as Celery's
/// retry does.
pub fn retry_message(
    raw: &[u8],
    msg: &TaskMessage,
    queue: &str,
    eta: DateTime<Utc>,
) -> Result<Vec<u8>, DecodeError> {
    let retries = msg.retries + 1;
    if msg.protocol == 1 {
        let options = Options {
            retries,
            eta: Some(eta),
            root_id: msg.root_id.as_deref(),
            parent_id: msg.parent_id.as_deref(),
            priority: msg.priority,
        };
        let again = encode_with(
            &msg.task,
            &msg.id,
            &msg.args,
            &msg.kwargs,
            queue,
            "retry",
            &options,
        );
        return Ok(again.into_bytes());
    }
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

/// A `link` or `link_error` signature called as Celery calls it: its task sent as a new message
/// with `first` before its own arguments (unless it is immutable), to its own queue (its
/// `options.queue`, else `default_queue`), the calling task as its parent. Answers the queue and
/// the message, or `None` for a signature without a task name.
pub fn callback_message(
    signature: &Value,
    first: Value,
    parent: &TaskMessage,
    default_queue: &str,
    origin: &str,
) -> Option<(String, String)> {
    let task = signature.get("task")?.as_str()?;
    let options = signature.get("options").and_then(Value::as_object);
    let option = |name: &str| options.and_then(|o| o.get(name)).and_then(Value::as_str);
    let immutable = signature.get("immutable").and_then(Value::as_bool) == Some(true)
        || options
            .and_then(|o| o.get("immutable"))
            .and_then(Value::as_bool)
            == Some(true);
    let mut args: Vec<Value> = if immutable { Vec::new() } else { vec![first] };
    if let Some(Value::Array(own)) = signature.get("args") {
        args.extend(own.iter().cloned());
    }
    let kwargs = signature
        .get("kwargs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let queue = option("queue")
        .or_else(|| option("routing_key"))
        .unwrap_or(default_queue)
        .to_owned();
    let id = option("task_id").map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let options = Options {
        root_id: Some(parent.root_id.as_deref().unwrap_or(&parent.id)),
        parent_id: Some(&parent.id),
        ..Options::default()
    };
    let message = encode_with(task, &id, &args, &kwargs, &queue, origin, &options);
    Some((queue, message))
}
