//! How many tokens a text is, as the configured model counts them: the chunker sizes chunks with
//! it and the quotes reader refuses a quote the model could not read whole. An embedder that
//! ships its tokenizer (the `minilm` provider) counts exactly; for the others the estimate is
//! OpenAI's rule of thumb for English, 4 bytes a token.

#[cfg(feature = "minilm")]
use std::sync::Arc;

#[cfg(feature = "minilm")]
use tokenizers::Tokenizer;

/// Bytes per token of the estimate.
pub const BYTES_PER_TOKEN: usize = 4;

#[derive(Clone, Default)]
pub enum TokenCounter {
    /// [`BYTES_PER_TOKEN`] bytes a token.
    #[default]
    Estimate,
    /// A Hugging Face tokenizer (`tokenizer.json`), counting without truncation; `special` is
    /// what it adds to every input ([CLS] and [SEP] for BERT's word pieces).
    #[cfg(feature = "minilm")]
    Tokenizer {
        tokenizer: Arc<Tokenizer>,
        special: usize,
    },
}

impl TokenCounter {
    /// Counts with `tokenizer`, its truncation and padding turned off.
    #[cfg(feature = "minilm")]
    pub fn exact(tokenizer: &Tokenizer, special: usize) -> Self {
        let mut tokenizer = tokenizer.clone();
        tokenizer.with_padding(None);
        let _ = tokenizer.with_truncation(None);
        Self::Tokenizer {
            tokenizer: Arc::new(tokenizer),
            special,
        }
    }

    /// The tokens of `text`, without the special tokens a model adds (at least 1).
    pub fn count(&self, text: &str) -> usize {
        match self {
            Self::Estimate => estimate(text),
            #[cfg(feature = "minilm")]
            Self::Tokenizer { tokenizer, .. } => tokenizer
                .encode_fast(text, false)
                .map_or_else(|_| estimate(text), |e| e.len())
                .max(1),
        }
    }

    /// Tokens the model adds to every input: what an input limit must leave room for.
    pub fn special_tokens(&self) -> usize {
        match self {
            Self::Estimate => 0,
            #[cfg(feature = "minilm")]
            Self::Tokenizer { special, .. } => *special,
        }
    }

    /// True when the count is the model's own, not an estimate.
    pub fn is_exact(&self) -> bool {
        !matches!(self, Self::Estimate)
    }
}

/// The estimate: [`BYTES_PER_TOKEN`] bytes a token, at least 1.
pub fn estimate(text: &str) -> usize {
    text.len().div_ceil(BYTES_PER_TOKEN).max(1)
}
