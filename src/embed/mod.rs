//! The embedding seam: a provider turns texts into vectors. The local hashing embedder is
//! the zero-setup default; all-MiniLM-L6-v2 in process and an OpenAI-compatible HTTP provider
//! plug in behind the same trait. A failure says what trying again can do ([`Failure`]).

mod local;
#[cfg(feature = "minilm")]
pub mod minilm;
mod openai;
pub mod rate_limit;

/// all-MiniLM-L6-v2's shape, which the settings check whether or not the `minilm` feature
/// (its implementation, [`minilm`]) is built.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{EmbeddingSettings, ProviderKind};

pub use local::HashingEmbedder;
#[cfg(feature = "minilm")]
pub use minilm::MiniLm;
pub use openai::{failure_of, retry_after, stated_batch_limit, OpenAiProvider};

/// What a failed provider call says about trying again, as the batcher acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Failure {
    /// The provider is away or busy (connection refused or reset, 408, 429, 502, 503, 504):
    /// the same call is tried again later.
    Unavailable,
    /// The call took longer than `embedding.timeout_secs`: retried, and if it keeps timing out,
    /// cut in halves, the smaller size kept (a server on a CPU may take long over a full batch).
    TimedOut,
    /// The provider failed on this call (500 and the like): tried again, and if it keeps
    /// failing, its inputs are tried in halves to find the one at fault.
    ServerFailed,
    /// The provider refuses these inputs (400, 422): not tried again; the input at fault is
    /// looked for in halves.
    Refused,
    /// More inputs or bytes than the server takes in one call (413, or a 400/422 about the batch
    /// size): the batch is cut to the size the server states, else halved, and that size kept
    /// for the process.
    BatchTooLarge,
    /// Nothing will help: authentication, an unknown model, a malformed answer.
    Fatal,
}

/// A failed provider call.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EmbedError {
    pub failure: Failure,
    /// What the provider asked us to wait before trying again (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    pub message: String,
    /// Set when one input alone is at fault (found by trying the call's inputs in halves): its
    /// position in the texts the caller sent. The other inputs of the call were embedded.
    pub input: Option<usize>,
}

impl EmbedError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            failure,
            retry_after: None,
            message: message.into(),
            input: None,
        }
    }

    /// Nothing will help ([`Failure::Fatal`]).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(Failure::Fatal, message)
    }

    /// The provider is away or busy ([`Failure::Unavailable`]).
    pub fn transient(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..Self::new(Failure::Unavailable, message)
        }
    }

    /// True when running the job again later may succeed: the provider was away or failing,
    /// and no input was proven to be the cause.
    pub fn is_transient(&self) -> bool {
        self.input.is_none()
            && matches!(
                self.failure,
                Failure::Unavailable | Failure::TimedOut | Failure::ServerFailed
            )
    }

    /// True when one of the call's inputs may be the cause, so that trying them in halves can
    /// find it.
    pub fn may_be_an_input(&self) -> bool {
        matches!(self.failure, Failure::ServerFailed | Failure::Refused)
    }
}

#[async_trait]
pub trait EmbeddingProvider: Send + Sync {
    /// The model name recorded with every collection and record.
    fn model(&self) -> &str;
    fn dimension(&self) -> usize;
    /// How the model counts tokens: exact where it ships its tokenizer, else an estimate.
    fn token_counter(&self) -> crate::tokens::TokenCounter {
        crate::tokens::TokenCounter::Estimate
    }
    /// The most inputs the server takes in one call, when it says so (text-embeddings-inference's
    /// `max_client_batch_size`); the batcher never sends more.
    fn max_batch_inputs(&self) -> Option<usize> {
        None
    }
    /// One vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The configured provider, connected: an OpenAI-compatible server is asked what it tells of
/// itself and checked with one probe call (within `limiter`'s rate), which gives the size of its
/// vectors.
///
/// Errors, naming the setting: the `minilm` model's files missing or unreadable;
/// `embedding.tokenizer` unreadable; the probe refused (authentication, unknown model, a
/// parameter the server does not take) or the server unreachable after `max_retries`.
pub async fn connect(
    settings: &EmbeddingSettings,
    limiter: Option<&dyn rate_limit::RateLimiter>,
) -> Result<Arc<dyn EmbeddingProvider>, String> {
    Ok(match settings.provider {
        ProviderKind::Local => Arc::new(HashingEmbedder::new(
            settings
                .vector_dimension()
                .expect("the local embedder's size is a setting"),
        )),
        #[cfg(not(feature = "minilm"))]
        ProviderKind::MiniLm => {
            return Err(
                "embedding.provider: this persona-ingest was built without the \
                        `minilm` feature"
                    .into(),
            )
        }
        #[cfg(feature = "minilm")]
        ProviderKind::MiniLm => {
            let dir = minilm::model_dir(settings.model_path.as_deref())?;
            let threads = settings
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            Arc::new(MiniLm::load(&dir, threads)?)
        }
        ProviderKind::OpenAi => {
            // Unset, the provider counts as its model does (OpenAI's tokenizer, else the estimate).
            let counter = match &settings.tokenizer {
                #[cfg(feature = "minilm")]
                Some(path) => Some(crate::tokens::TokenCounter::from_file(path)?),
                #[cfg(not(feature = "minilm"))]
                Some(_) => {
                    return Err(
                        "embedding.tokenizer: this persona-ingest was built without the \
                                `minilm` feature, which reads tokenizer.json"
                            .into(),
                    )
                }
                None => None,
            };
            let provider = OpenAiProvider::new(
                &settings.base_url,
                &settings.model,
                settings.api_key.clone(),
                Duration::from_secs(settings.timeout_secs),
            )
            .with_dimensions(settings.dimensions)
            .with_dimension(settings.dimension)
            .with_encoding_format(settings.encoding_format.clone())
            .with_truncate(settings.truncate)
            .with_token_counter(counter)
            .connect(settings.max_retries + 1, limiter)
            .await
            .map_err(|e| {
                // A server refusing to shorten vectors is the setting's fault, not the address's.
                let lower = e.message.to_lowercase();
                let key = if settings.dimensions.is_some()
                    && (lower.contains("dimension") || lower.contains("matryoshka"))
                {
                    "embedding.dimensions"
                } else {
                    "embedding.base_url"
                };
                format!(
                    "{key}: {} (model {:?}) refused a probe call: {e}",
                    settings.base_url, settings.model
                )
            })?;
            Arc::new(provider)
        }
    })
}
