//! How many tokens a text is, as the configured model counts them: the chunker sizes chunks with
//! it, the start-up check compares `chunking.target_tokens` with the model's limit, and the quotes
//! reader refuses a quote the model could not read whole.
//!
//! Exact where the model's tokenizer is at hand: OpenAI's models through `tiktoken-rs` (which
//! ships their encodings), a Hugging Face `tokenizer.json` through `tokenizers` (the `minilm`
//! provider's own, or `embedding.tokenizer`). Otherwise an estimate by script that errs long: 4
//! bytes a token for English prose (OpenAI's rule of thumb), a token a word or punctuation mark
//! where ASCII is denser in them (numbers, code), a token a character of every other script
//! (tokenizers seldom do better for CJK, Devanagari or Cyrillic), 2 for one outside the BMP.

#[cfg(feature = "minilm")]
use std::sync::Arc;

#[cfg(feature = "minilm")]
use tokenizers::Tokenizer;

/// Bytes per token of the estimate for ASCII text: chunks of English are cut by bytes at this
/// rate before any count.
pub const BYTES_PER_TOKEN: usize = 4;

#[derive(Clone, Default)]
pub enum TokenCounter {
    /// [`estimate`]: by script, erring long.
    #[default]
    Estimate,
    /// OpenAI's byte-pair encoding for its models (cl100k_base for the embedding models), built
    /// once a process.
    Bpe(&'static tiktoken_rs::CoreBPE),
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

    /// The tokenizer of a `tokenizer.json` file (`embedding.tokenizer`); the special tokens
    /// are what it adds to an input.
    ///
    /// Errors: the file unreadable or not a tokenizer, named.
    #[cfg(feature = "minilm")]
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| format!("embedding.tokenizer: {}: {e}", path.display()))?;
        let with = tokenizer.encode_fast("a", true).map(|e| e.len());
        let without = tokenizer.encode_fast("a", false).map(|e| e.len());
        let special = match (with, without) {
            (Ok(with), Ok(without)) => with.saturating_sub(without),
            _ => 0,
        };
        Ok(Self::exact(&tokenizer, special))
    }

    /// OpenAI's tokenizer for OpenAI's embedding models (`text-embedding-3-*`, `-ada-002`);
    /// the estimate for any other model name.
    pub fn for_model(model: &str) -> Self {
        if model.starts_with("text-embedding-3") || model == "text-embedding-ada-002" {
            return Self::Bpe(tiktoken_rs::cl100k_base_singleton());
        }
        Self::Estimate
    }

    /// The tokens of `text`, without the special tokens a model adds (at least 1).
    pub fn count(&self, text: &str) -> usize {
        match self {
            Self::Estimate => estimate(text),
            Self::Bpe(bpe) => bpe.encode_ordinary(text).len().max(1),
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
            Self::Estimate | Self::Bpe(_) => 0,
            #[cfg(feature = "minilm")]
            Self::Tokenizer { special, .. } => *special,
        }
    }

    /// True when the count is the model's own, not an estimate.
    pub fn is_exact(&self) -> bool {
        !matches!(self, Self::Estimate)
    }

    /// For messages: how the count was made.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Estimate => "estimated",
            Self::Bpe(_) => "counted by OpenAI's tokenizer",
            #[cfg(feature = "minilm")]
            Self::Tokenizer { .. } => "counted by the model's tokenizer",
        }
    }
}

/// The estimate (at least 1): ASCII at [`BYTES_PER_TOKEN`] bytes a token, or a token a word and
/// a token a punctuation mark where that is more (tables of numbers, code); a token a character
/// of any other script (Cyrillic, Greek, CJK, Indic...), two for one outside the BMP (emoji).
pub fn estimate(text: &str) -> usize {
    // By bytes, branch-free, each byte's class looked up: a character's length is told by its
    // first byte, and a word starts at an ASCII letter or digit whose previous byte is not one
    // (a continuation byte never is). Decoding each character was most of this function's
    // time, and it runs on every chunk.
    let (mut ascii_bytes, mut pieces, mut others) = (0usize, 0usize, 0usize);
    let mut previous_in_word = 0usize;
    for &b in text.as_bytes() {
        let class = BYTE_CLASS[usize::from(b)];
        let in_word = usize::from(class & IN_WORD != 0);
        pieces += (in_word & !previous_in_word & 1) + usize::from(class & PUNCTUATION != 0);
        ascii_bytes += usize::from(class & ASCII != 0);
        others += usize::from(class & LEADS_2_OR_3 != 0) + 2 * usize::from(class & LEADS_4 != 0);
        previous_in_word = in_word;
    }
    (ascii_bytes.div_ceil(BYTES_PER_TOKEN).max(pieces) + others).max(1)
}

const ASCII: u8 = 1;
const IN_WORD: u8 = 2;
const PUNCTUATION: u8 = 4;
const LEADS_2_OR_3: u8 = 8;
const LEADS_4: u8 = 16;

/// What [`estimate`] needs of each byte value.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = if byte.is_ascii() {
            ASCII
                | if byte.is_ascii_alphanumeric() {
                    IN_WORD
                } else {
                    0
                }
                | if byte.is_ascii_punctuation() {
                    PUNCTUATION
                } else {
                    0
                }
        } else if byte >= 0xF0 {
            LEADS_4
        } else if byte >= 0xC0 {
            LEADS_2_OR_3
        } else {
            0
        };
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_errs_long_for_every_script() {
        assert_eq!(estimate(&"a".repeat(2000)), 500, "English: 4 bytes a token");
        assert_eq!(estimate(&"春".repeat(600)), 600, "CJK: a token a character");
        assert_eq!(
            estimate(&"д".repeat(600)),
            600,
            "Cyrillic: a token a character"
        );
        assert_eq!(
            estimate(&"1 2 3 4 5 6 7 8 9 10 ".repeat(10)),
            100,
            "a token a number, not 4 bytes"
        );
        assert_eq!(estimate("Call me Ishmael."), 4);
        assert_eq!(estimate(&"😀".repeat(10)), 20);
        assert_eq!(estimate(""), 1);
        // OpenAI's encoding spends about 1.5 tokens a Chinese character, more than any estimate
        // a BERT-style tokenizer needs: OpenAI's models are counted by it, not estimated.
        let chinese = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。".repeat(20);
        let bpe = TokenCounter::for_model("text-embedding-3-small");
        assert!(bpe.is_exact());
        assert_eq!((bpe.count(&chinese), estimate(&chinese)), (740, 480));
    }

    /// The estimate as first written, by characters.
    fn by_chars(text: &str) -> usize {
        let (mut ascii_bytes, mut pieces, mut others) = (0usize, 0usize, 0usize);
        let mut in_word = false;
        for c in text.chars() {
            match c.len_utf8() {
                1 => {
                    ascii_bytes += 1;
                    let word = c.is_ascii_alphanumeric();
                    if (word && !in_word) || c.is_ascii_punctuation() {
                        pieces += 1;
                    }
                    in_word = word;
                }
                4 => {
                    others += 2;
                    in_word = false;
                }
                _ => {
                    others += 1;
                    in_word = false;
                }
            }
        }
        (ascii_bytes.div_ceil(BYTES_PER_TOKEN).max(pieces) + others).max(1)
    }

    proptest::proptest! {
        #[test]
        fn counting_by_bytes_agrees_with_counting_by_characters(text in "\\PC*") {
            proptest::prop_assert_eq!(estimate(&text), by_chars(&text));
        }
    }

    #[test]
    fn openai_models_are_counted_by_their_encoding() {
        let bpe = TokenCounter::for_model("text-embedding-3-large");
        assert_eq!(bpe.count("hello world"), 2);
        assert!(!TokenCounter::for_model("bge-m3").is_exact());
    }
}
