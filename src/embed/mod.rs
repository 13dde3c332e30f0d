//! The embedding seam: a provider turns texts into vectors. The local hashing embedder is
//! the zero-setup default; an OpenAI-compatible HTTP provider plugs in behind the same trait.

mod local;
#[cfg(feature = "minilm")]
pub mod minilm;
mod openai;

/// all-MiniLM-L6-v2's shape, which the settings check whether or not the `minilm` feature
/// (its implementation, [`minilm`]) is built.
pub mod minilm_shape {
    /// The model name recorded with every collection and record.
    pub const MODEL: &str = "all-MiniLM-L6-v2";
    pub const DIMENSION: usize = 384;
    /// The most word pieces one input is read to, [CLS] and [SEP] included.
    pub const MAX_WORD_PIECES: usize = 256;
    /// [CLS] and [SEP]: what the tokenizer adds to every input.
    pub const SPECIAL_TOKENS: usize = 2;
}

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{EmbeddingSettings, ProviderKind};

pub use local::HashingEmbedder;
#[cfg(feature = "minilm")]
pub use minilm::MiniLm;
pub use openai::{retry_after, OpenAiProvider};

/// A failed provider call, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EmbedError {
    pub transient: bool,
    /// What the provider asked us to wait before trying again (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl EmbedError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            retry_after: None,
            message: message.into(),
        }
    }

    pub fn transient(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            transient: true,
            retry_after,
            message: message.into(),
        }
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
    /// One vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The configured provider (settings are validated: the dimension is known).
///
/// Errors: the `minilm` model's files missing or unreadable, named.
pub fn from_settings(settings: &EmbeddingSettings) -> Result<Arc<dyn EmbeddingProvider>, String> {
    Ok(match settings.provider {
        ProviderKind::Local => Arc::new(HashingEmbedder::new(settings.dimension)),
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
        ProviderKind::OpenAi => Arc::new(OpenAiProvider::new(
            &settings.base_url,
            &settings.model,
            settings.dimensions,
            settings.vector_dimension().expect("validated at load"),
            settings.api_key.clone(),
            Duration::from_secs(settings.timeout_secs),
        )),
    })
}
