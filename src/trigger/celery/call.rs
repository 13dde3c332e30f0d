//! What a task message asks the engine to do: the task names served and their arguments, bound
//! as Python binds a call to `ingest_full_persona(persona_id, job_ids)` or
//! `ingest_persona_<kind>(persona_id, job_id)`. A call that does not bind is answered as Celery's
//! worker answers it: `TypeError` (missing, extra or repeated arguments, in Python's words),
//! `ValueError` (an argument of the wrong shape, named), `NotRegistered` (an unknown task).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::message::TaskMessage;
use crate::Kind;

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

    /// The kind a one-kind task ingests, by its name.
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        self.one_kind.get(name).copied()
    }

    /// Every task served, sorted (what `inspect registered` answers).
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.one_kind.keys().cloned().collect();
        all.push(self.full_persona.clone());
        all.sort();
        all
    }
}

/// What a message asks the engine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestCall {
    /// `ingest_full_persona(persona_id, job_ids, force=False)`: returns `{"profile": id,
    /// "works": id, "quotes": id}`.
    FullPersona {
        persona_id: String,
        job_ids: BTreeMap<Kind, Uuid>,
        /// Read and embed every file, changed or not.
        force: bool,
    },
    /// `ingest_persona_<kind>(persona_id, job_id, force=False)`: returns the vector count.
    OneKind {
        kind: Kind,
        persona_id: String,
        job_id: Uuid,
        force: bool,
    },
}

impl IngestCall {
    /// Whether the call asks for everything to be embedded again (`force=True`).
    pub fn force(&self) -> bool {
        match self {
            Self::FullPersona { force, .. } | Self::OneKind { force, .. } => *force,
        }
    }
}

/// Why a call cannot be made: the exception Celery's worker would store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("TypeError: {0}")]
    Type(String),
    #[error("ValueError: {0}")]
    Value(String),
    /// Not a task this worker serves.
    #[error("unknown task {0:?}")]
    NotRegistered(String),
}

impl CallError {
    /// The exception's class and module, as the result backend stores them.
    pub fn exception(&self) -> (&'static str, &'static str, String) {
        match self {
            Self::Type(m) => ("TypeError", "builtins", m.clone()),
            Self::Value(m) => ("ValueError", "builtins", m.clone()),
            Self::NotRegistered(name) => {
                ("NotRegistered", "celery.exceptions", format!("{name:?}"))
            }
        }
    }
}

/// The parameter every task takes after its required ones: `force=False`.
const OPTIONAL: [&str; 1] = ["force"];

/// Binds `args` and `kwargs` to `params` and then [`OPTIONAL`] as Python binds a call to
/// `name(*params, force=False)`; answers the required values and the optional one, if given.
fn bind<'a>(
    name: &str,
    params: &[&str],
    args: &'a [Value],
    kwargs: &'a Map<String, Value>,
) -> Result<(Vec<&'a Value>, Option<&'a Value>), CallError> {
    let all: Vec<&str> = params.iter().chain(OPTIONAL.iter()).copied().collect();
    if args.len() > all.len() {
        return Err(CallError::Type(format!(
            "{name}() takes from {} to {} positional arguments but {} were given",
            params.len(),
            all.len(),
            args.len()
        )));
    }
    if let Some(extra) = kwargs.keys().find(|k| !all.contains(&k.as_str())) {
        return Err(CallError::Type(format!(
            "{name}() got an unexpected keyword argument '{extra}'"
        )));
    }
    let optional = match (args.get(params.len()), kwargs.get(OPTIONAL[0])) {
        (Some(_), Some(_)) => {
            return Err(CallError::Type(format!(
                "{name}() got multiple values for argument '{}'",
                OPTIONAL[0]
            )))
        }
        (Some(value), None) | (None, Some(value)) => Some(value),
        (None, None) => None,
    };
    let args = &args[..args.len().min(params.len())];
    Ok((bind_required(name, params, args, kwargs)?, optional))
}

/// Binds the required parameters (`args` no more than they are, keywords all known).
fn bind_required<'a>(
    name: &str,
    params: &[&str],
    args: &'a [Value],
    kwargs: &'a Map<String, Value>,
) -> Result<Vec<&'a Value>, CallError> {
    let mut bound = Vec::new();
    let mut missing = Vec::new();
    for (position, param) in params.iter().enumerate() {
        match (args.get(position), kwargs.get(*param)) {
            (Some(_), Some(_)) => {
                return Err(CallError::Type(format!(
                    "{name}() got multiple values for argument '{param}'"
                )))
            }
            (Some(value), None) | (None, Some(value)) => bound.push(value),
            (None, None) => missing.push(format!("'{param}'")),
        }
    }
    if !missing.is_empty() {
        let plural = if missing.len() == 1 { "" } else { "s" };
        let names = match missing.as_slice() {
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
            [] => unreachable!("not empty"),
        };
        return Err(CallError::Type(format!(
            "{name}() missing {} required positional argument{plural}: {names}",
            missing.len()
        )));
    }
    Ok(bound)
}

fn string(value: &Value, what: &str) -> Result<String, CallError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError::Value(format!("{what} must be a string, got {value}")))
}

/// `force`: a boolean (`None` and absent are false).
fn force_of(value: Option<&Value>) -> Result<bool, CallError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(force)) => Ok(*force),
        Some(other) => Err(CallError::Value(format!(
            "force must be a boolean, got {other}"
        ))),
    }
}

fn uuid_of(value: &Value, what: &str) -> Result<Uuid, CallError> {
    value
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| CallError::Value(format!("{what} must be a UUID string, got {value}")))
}

/// Reads the call a message makes.
pub fn ingest_call(msg: &TaskMessage, names: &TaskNames) -> Result<IngestCall, CallError> {
    let function = msg.task.rsplit('.').next().unwrap_or(&msg.task);
    if msg.task == names.full_persona {
        let (bound, force) = bind(function, &["persona_id", "job_ids"], &msg.args, &msg.kwargs)?;
        let [persona_id, job_ids] = bound[..] else {
            unreachable!("two parameters bound")
        };
        let persona_id = string(persona_id, "persona_id")?;
        let Value::Object(ids) = job_ids else {
            return Err(CallError::Value(format!(
                "job_ids must be a mapping of kind to job id, got {job_ids}"
            )));
        };
        let mut job_ids = BTreeMap::new();
        for (kind, id) in ids {
            let kind: Kind = kind
                .parse()
                .map_err(|e| CallError::Value(format!("job_ids: {e}")))?;
            job_ids.insert(kind, uuid_of(id, &format!("job_ids.{kind}"))?);
        }
        if job_ids.is_empty() {
            return Err(CallError::Value("job_ids names no job".into()));
        }
        return Ok(IngestCall::FullPersona {
            persona_id,
            job_ids,
            force: force_of(force)?,
        });
    }
    if let Some(kind) = names.one_kind.get(&msg.task) {
        let (bound, force) = bind(function, &["persona_id", "job_id"], &msg.args, &msg.kwargs)?;
        let [persona_id, job_id] = bound[..] else {
            unreachable!("two parameters bound")
        };
        return Ok(IngestCall::OneKind {
            kind: *kind,
            persona_id: string(persona_id, "persona_id")?,
            job_id: uuid_of(job_id, "job_id")?,
            force: force_of(force)?,
        });
    }
    Err(CallError::NotRegistered(msg.task.clone()))
}
