//! The local hashing embedder: deterministic, no network, no model weights.
//!
//! It is lexical, not semantic: each lower-cased word and each pair of adjacent words is
//! hashed (xxh3) to one of `dimension` signed buckets, and the sum is L2-normalised. Texts
//! that share words get close vectors; synonyms do not. It makes the whole pipeline (and
//! `query`) work anywhere, and is the baseline the benchmarks measure the engine with.

use async_trait::async_trait;
use xxhash_rust::xxh3::xxh3_64;

use super::{EmbedError, EmbeddingProvider};

pub const MODEL: &str = "local-hash-v1";

const BIGRAM_WEIGHT: f32 = 0.5;

pub struct HashingEmbedder {
    dimension: usize,
}

impl HashingEmbedder {
    pub fn new(dimension: usize) -> Self {
        Self { dimension }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimension];
        let mut previous: Option<u64> = None;
        let mut add = |hash: u64, weight: f32| {
            let bucket = (hash % self.dimension as u64) as usize;
            vector[bucket] += if hash >> 63 == 1 { -weight } else { weight };
        };
        let mut each_word = |word: &[u8]| {
            let hash = xxh3_64(word);
            add(hash, 1.0);
            if let Some(prev) = previous {
                add(
                    prev.rotate_left(17) ^ hash.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    BIGRAM_WEIGHT,
                );
            }
            previous = Some(hash);
        };
        let mut word = String::new();
        for piece in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            word.clear();
            if piece.is_ascii() {
                // The same as `to_lowercase` for ASCII, without decoding each character.
                word.push_str(piece);
                word.make_ascii_lowercase();
            } else {
                word.extend(piece.chars().flat_map(char::to_lowercase));
            }
            each_word(word.as_bytes());
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        } else {
            // No word at all: a fixed unit vector keeps every vector normalised.
            vector[0] = 1.0;
        }
        vector
    }
}

/// Texts of at most this many bytes in all are hashed on the caller's thread: about 0.1 ms of
/// work at the embedder's ~190 MB/s, less than two thread switches to the blocking pool and back.
const INLINE_BYTES: usize = 16 * 1024;

#[async_trait]
impl EmbeddingProvider for HashingEmbedder {
    fn model(&self) -> &str {
        MODEL
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let embedder = Self::new(self.dimension);
        // Hashing is CPU work: kept off the actor threads, unless there is so little of it
        // (microseconds) that the hand-off to the blocking pool and back would cost more.
        if texts.iter().map(String::len).sum::<usize>() <= INLINE_BYTES {
            return Ok(texts.iter().map(|t| embedder.embed_one(t)).collect());
        }
        tokio::task::spawn_blocking(move || texts.iter().map(|t| embedder.embed_one(t)).collect())
            .await
            .map_err(|e| EmbedError::permanent(format!("local embedder failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_deterministic_and_normalised() {
        let e = HashingEmbedder::new(64);
        let a = e.embed_one("The river was wide and muddy.");
        assert_eq!(a, e.embed_one("The river was wide and muddy."));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(e.embed_one("!!!").iter().filter(|x| **x != 0.0).count(), 1);
    }

    proptest::proptest! {
        /// Lower-casing ASCII words without decoding them makes the same vectors as before
        /// (collections hold them: another vector for the same text would be another model).
        #[test]
        fn the_ascii_fast_path_makes_the_same_vectors(text in "[ -~]{0,80}|[ -~\\PC]{0,80}") {
            let e = HashingEmbedder::new(32);
            let mut by_chars = vec![0f32; 32];
            let mut previous: Option<u64> = None;
            let mut add = |hash: u64, weight: f32| {
                let bucket = (hash % 32) as usize;
                by_chars[bucket] += if hash >> 63 == 1 { -weight } else { weight };
            };
            for piece in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                let word: String = piece.chars().flat_map(char::to_lowercase).collect();
                let hash = xxh3_64(word.as_bytes());
                add(hash, 1.0);
                if let Some(prev) = previous {
                    add(prev.rotate_left(17) ^ hash.wrapping_mul(0x9E37_79B9_7F4A_7C15), BIGRAM_WEIGHT);
                }
                previous = Some(hash);
            }
            let norm = by_chars.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                by_chars.iter_mut().for_each(|x| *x /= norm);
            } else {
                by_chars[0] = 1.0;
            }
            proptest::prop_assert_eq!(e.embed_one(&text), by_chars);
        }
    }

    #[test]
    fn shared_words_mean_closer_vectors() {
        let e = HashingEmbedder::new(384);
        let river = e.embed_one("the Mississippi river steamboat pilot");
        let close = e.embed_one("a steamboat pilot on the Mississippi");
        let far = e.embed_one("tea and conversation in a Bath drawing room");
        assert!(cosine(&river, &close) > cosine(&river, &far) + 0.3);
    }
}
