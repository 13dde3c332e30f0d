//! Why a job failed, as a type: what failed decides whether another run may succeed.

use std::sync::Arc;

use serde::Serialize;

use crate::embed::EmbedError;
use crate::sources::SourceError;
use crate::store::StoreError;

/// Why a job failed. Whether running it again later may succeed comes from the variant
/// ([`JobError::retryable`]): only the embedding provider or the vector store staying
/// unavailable through every retry of a call is worth another run; bad input, a stop, a refusal
/// or a fault of the engine are not. Causes are kept as their own types (`source()`, for code
/// that decides by them); `Display` says the whole chain once, so the edges (the job row, the
/// Celery result, the CLI, logs) show it whole with `{e}`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum JobError {
    /// A file of the corpus unreadable or not valid input; the error names the file and line.
    Reading(#[source] Arc<SourceError>),
    /// The embedding provider failed for this job's texts; `context` says which (a file and
    /// chunk when one input was refused).
    Embedding {
        context: String,
        #[source]
        source: EmbedError,
    },
    /// The vector store failed; `context` says doing what, to which collection.
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    /// The persona's corpus is not there, or holds nothing of any kind asked.
    NoCorpus(String),
    /// The job's start or end could not be recorded in the database.
    Recording(String),
    /// Stopped before its end: a time limit, an abort, a revoke or a shutdown, said by `0`.
    Stopped(String),
    /// A part of the engine failed: a panic, an actor gone, a thread lost.
    Engine(String),
    /// `error`, after which the collection holds records this run wrote: how many, and how many
    /// the store holds now when it could say.
    AfterWrites {
        #[source]
        error: Box<JobError>,
        written: u64,
        present: Option<u64>,
        collection: String,
    },
}

impl std::fmt::Display for JobError {
    /// The error and its causes, each said once: a cause whose text an outer error already
    /// shows (as `SourceError`'s show their I/O error) is not repeated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = match self {
            Self::Reading(error) => error.to_string(),
            Self::Embedding { context, .. } | Self::Store { context, .. } => context.clone(),
            Self::NoCorpus(said)
            | Self::Recording(said)
            | Self::Stopped(said)
            | Self::Engine(said) => said.clone(),
            Self::AfterWrites {
                error,
                written,
                present,
                collection,
            } => {
                return match present {
                    Some(present) => write!(
                        f,
                        "{error}; {written} record(s) written before the failure, {present} in {collection} now"
                    ),
                    None => write!(f, "{error}; {written} record(s) written before the failure"),
                };
            }
        };
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            let said = error.to_string();
            if !text.contains(&said) {
                text = format!("{text}: {said}");
            }
            cause = error.source();
        }
        f.write_str(&text)
    }
}

/// As `{"kind": "store", "message": <the chain>, "retryable": bool}`, for `--json` and the API.
impl Serialize for JobError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("JobError", 3)?;
        out.serialize_field("kind", self.kind())?;
        out.serialize_field("message", &self.to_string())?;
        out.serialize_field("retryable", &self.retryable())?;
        out.end()
    }
}

impl JobError {
    /// The variant's name, in snake case: what failed.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Reading(_) => "reading",
            Self::NoCorpus(_) => "no_corpus",
            Self::Embedding { .. } => "embedding",
            Self::Store { .. } => "store",
            Self::Recording(_) => "recording",
            Self::Stopped(_) => "stopped",
            Self::Engine(_) => "engine",
            Self::AfterWrites { error, .. } => error.kind(),
        }
    }

    /// Whether running the job again later may succeed: the provider or the store was
    /// unavailable (their own errors say so), not the input, a stop or the engine.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Embedding { source, .. } => source.is_transient(),
            Self::Store { source, .. } => source.is_transient(),
            Self::AfterWrites { error, .. } => error.retryable(),
            Self::Reading(_)
            | Self::NoCorpus(_)
            | Self::Recording(_)
            | Self::Stopped(_)
            | Self::Engine(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_provider_or_store_is_worth_another_run() {
        let embedding = |source| JobError::Embedding {
            context: "embedding failed".into(),
            source,
        };
        assert!(embedding(EmbedError::transient("503", None)).retryable());
        assert!(!embedding(EmbedError::permanent("401")).retryable());
        let store = |transient| JobError::Store {
            context: "writing to p_works".into(),
            source: if transient {
                StoreError::Unavailable("500".into())
            } else {
                StoreError::Failed("400".into())
            },
        };
        assert!(store(true).retryable());
        assert!(!store(false).retryable());
        let after = JobError::AfterWrites {
            error: Box::new(store(true)),
            written: 2,
            present: None,
            collection: "p_works".into(),
        };
        assert!(after.retryable(), "a wrapper keeps its cause's verdict");
        assert!(!JobError::Stopped("time limit".into()).retryable());
        assert!(!JobError::Engine("panicked".into()).retryable());
    }

    #[test]
    fn the_chain_is_said_once_in_order() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let reading = JobError::Reading(Arc::new(SourceError::Io {
            rel: "data/p/works/a.txt".into(),
            source: io,
        }));
        assert_eq!(reading.to_string(), "data/p/works/a.txt: No such file");
        let failed = JobError::AfterWrites {
            error: Box::new(JobError::Embedding {
                context: "embedding failed for works/a.txt chunk 3".into(),
                source: EmbedError::permanent("input too long"),
            }),
            written: 4,
            present: Some(4),
            collection: "p_works".into(),
        };
        assert_eq!(
            failed.to_string(),
            "embedding failed for works/a.txt chunk 3: input too long; 4 record(s) written before the failure, 4 in p_works now"
        );
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({
                "kind": "embedding",
                "message": failed.to_string(),
                "retryable": false,
            })
        );
    }
}
