//! The embedding seam: a provider turns texts into vectors. The local hashing embedder is
//! the zero-setup default; an OpenAI-compatible HTTP provider plugs in behind the same trait.

mod local;
mod openai;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{EmbeddingSettings, ProviderKind};

pub use local::HashingEmbedder;
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
    /// One vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The configured provider (settings are validated: the dimension is known).
pub fn from_settings(settings: &EmbeddingSettings) -> Arc<dyn EmbeddingProvider> {
    match settings.provider {
        ProviderKind::Local => Arc::new(HashingEmbedder::new(settings.dimension)),
        ProviderKind::OpenAi => Arc::new(OpenAiProvider::new(
            &settings.base_url,
            &settings.model,
            settings.dimensions,
            settings.vector_dimension().expect("validated at load"),
            settings.api_key.clone(),
            Duration::from_secs(settings.timeout_secs),
        )),
    }
}
