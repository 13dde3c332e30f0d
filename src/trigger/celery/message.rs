//! Task messages as Celery producers write them on Redis: a kombu envelope (JSON) whose base64
//! body is, for protocol v2, `[args, kwargs, embed]` with the task's fields in the headers, and
//! for protocol v1 one object holding them all; the body maybe compressed (kombu's
//! `compression` header: zlib under `application/x-gzip`, bzip2 under `application/x-bz2`).
//! JSON only: any other content type is refused with the reason. (The messages a worker sends
//! itself are in `outgoing`.)

use std::io::Read;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde_json::{Map, Value};

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
    pub group: Option<String>,
    /// Celery's `ignore_result`: no state is stored for it.
    pub ignore_result: bool,
    /// `link=`: signatures to call with the result once it succeeds.
    pub callbacks: Vec<Value>,
    /// `link_error=`: signatures to call with the task id once it fails.
    pub errbacks: Vec<Value>,
    /// 1 or 2.
    pub protocol: u8,
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
    #[error("compression {0:?} is not supported (zlib, gzip, bzip2)")]
    Compression(String),
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
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    properties: Map<String, Value>,
}

fn field_str(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, DecodeError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(DecodeError::Header(
            name,
            format!("expected a string, got {other}"),
        )),
    }
}

fn field_time(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<DateTime<FixedOffset>>, DecodeError> {
    field_str(fields, name)?
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

/// The most bytes a compressed body may inflate to (16 MiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The body's bytes: base64-decoded, then decompressed as its `compression` header says.
fn body_bytes(envelope: &Envelope) -> Result<Vec<u8>, DecodeError> {
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
    let compression = match envelope.headers.get("compression") {
        None | Some(Value::Null) => return Ok(body),
        Some(Value::String(name)) => name.as_str(),
        Some(other) => return Err(DecodeError::Compression(other.to_string())),
    };
    let mut plain = Vec::new();
    // One message's arguments are a few hundred bytes: a body that inflates past this is a
    // compression bomb, refused before it takes the worker's memory.
    let limit = MAX_BODY_BYTES as u64 + 1;
    let read = match compression {
        // kombu registers zlib under this name, with "zlib" and "gzip" as aliases.
        "application/x-gzip" | "zlib" | "gzip" => flate2::read::ZlibDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut plain),
        "application/x-bz2" | "bzip2" | "bzip" => bzip2::read::BzDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut plain),
        other => return Err(DecodeError::Compression(other.to_owned())),
    };
    read.map_err(|e| DecodeError::Body(format!("not {compression} data: {e}")))?;
    if plain.len() > MAX_BODY_BYTES {
        return Err(DecodeError::Body(format!(
            "{compression} body inflates past {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(plain)
}

/// Decodes a message as taken from a queue: protocol v2 or v1, compressed or not.
pub fn decode(raw: &[u8]) -> Result<TaskMessage, DecodeError> {
    let envelope: Envelope =
        serde_json::from_slice(raw).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    let content_type = envelope.content_type.clone().unwrap_or_default();
    if content_type != "application/json" {
        return Err(DecodeError::ContentType(content_type));
    }
    let body = body_bytes(&envelope)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| DecodeError::Body(format!("not JSON: {e}")))?;
    let priority = envelope
        .properties
        .get("priority")
        .and_then(Value::as_u64)
        .map_or(0, |p| p.min(255) as u8);
    let mut msg = match body {
        Value::Array(parts) if (2..=3).contains(&parts.len()) => v2(&envelope.headers, parts)?,
        Value::Object(fields) if fields.contains_key("task") && fields.contains_key("id") => {
            v1(&fields)?
        }
        other => {
            return Err(DecodeError::Body(format!(
            "expected [args, kwargs, embed] (protocol v2) or a task object (protocol v1), got {}",
            short(&other)
        )))
        }
    };
    msg.priority = priority;
    Ok(msg)
}

/// Protocol v2: the task's fields in the headers, `[args, kwargs, embed]` in the body.
fn v2(headers: &Map<String, Value>, parts: Vec<Value>) -> Result<TaskMessage, DecodeError> {
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
    let embed = match parts.next() {
        Some(Value::Object(embed)) => embed,
        _ => Map::new(),
    };
    let task = field_str(headers, "task")?.ok_or(DecodeError::Header("task", "missing".into()))?;
    let id = field_str(headers, "id")?.ok_or(DecodeError::Header("id", "missing".into()))?;
    let (time_limit, soft_time_limit) = time_limits(headers.get("timelimit"))?;
    Ok(TaskMessage {
        eta: field_time(headers, "eta")?,
        expires: field_time(headers, "expires")?,
        root_id: field_str(headers, "root_id")?,
        parent_id: field_str(headers, "parent_id")?,
        group: field_str(headers, "group")?,
        ignore_result: headers.get("ignore_result").and_then(Value::as_bool) == Some(true),
        retries: retries(headers.get("retries"))?,
        callbacks: signatures(embed.get("callbacks")),
        errbacks: signatures(embed.get("errbacks")),
        id,
        task,
        args,
        kwargs,
        time_limit,
        soft_time_limit,
        priority: 0,
        protocol: 2,
    })
}

/// Protocol v1: everything in one body object.
fn v1(fields: &Map<String, Value>) -> Result<TaskMessage, DecodeError> {
    let task = field_str(fields, "task")?.ok_or(DecodeError::Header("task", "missing".into()))?;
    let id = field_str(fields, "id")?.ok_or(DecodeError::Header("id", "missing".into()))?;
    let args = match fields.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args.clone(),
        Some(other) => {
            return Err(DecodeError::Body(format!(
                "args must be a list, got {other}"
            )))
        }
    };
    let kwargs = match fields.get("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(kwargs)) => kwargs.clone(),
        Some(other) => {
            return Err(DecodeError::Body(format!(
                "kwargs must be a mapping, got {other}"
            )))
        }
    };
    let (time_limit, soft_time_limit) = time_limits(fields.get("timelimit"))?;
    Ok(TaskMessage {
        eta: field_time(fields, "eta")?,
        expires: field_time(fields, "expires")?,
        root_id: None,
        parent_id: None,
        group: field_str(fields, "taskset")?,
        ignore_result: false,
        retries: retries(fields.get("retries"))?,
        callbacks: signatures(fields.get("callbacks")),
        errbacks: signatures(fields.get("errbacks")),
        id,
        task,
        args,
        kwargs,
        time_limit,
        soft_time_limit,
        priority: 0,
        protocol: 1,
    })
}

fn retries(value: Option<&Value>) -> Result<u32, DecodeError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| DecodeError::Header("retries", format!("expected a count, got {v}"))),
    }
}

/// `[hard, soft]`, either null.
fn time_limits(value: Option<&Value>) -> Result<(Option<f64>, Option<f64>), DecodeError> {
    match value {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::Array(limits)) if limits.len() == 2 => {
            Ok((limits[0].as_f64(), limits[1].as_f64()))
        }
        Some(v) => Err(DecodeError::Header(
            "timelimit",
            format!("expected [hard, soft], got {v}"),
        )),
    }
}

/// Signatures (`{"task", "args", "kwargs", "options", ...}`) of `link`/`link_error`; anything
/// else there is ignored, as Celery ignores what it cannot call.
fn signatures(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(list)) => list
            .iter()
            .filter(|s| s.get("task").and_then(Value::as_str).is_some())
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}
