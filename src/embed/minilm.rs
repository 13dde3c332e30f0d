//! A local semantic embedder (`embedding.provider = "minilm"`): sentence-transformers'
//! all-MiniLM-L6-v2, the model behind Chroma's default embedding function, run in process by
//! candle's BERT with the Hugging Face `tokenizers` crate. Its vectors are the model's: the last
//! hidden states mean-pooled over the attention mask, L2-normalised, 384 floats; an input is read
//! up to 256 word pieces, [CLS] and [SEP] included (sentence-transformers' `max_seq_length`),
//! and the chunker sizes chunks with the same tokenizer so that no chunk is cut there.
//!
//! The weights, tokenizer and config come from `embedding.model_path` (a folder holding
//! `model.safetensors`, `tokenizer.json` and `config.json`), else from the Hugging Face cache,
//! else from the hub. Inference runs on a pool of `embedding.threads` threads of its own, off
//! the async runtime, a group of inputs on each thread at once; the encoder is in `bert`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use self::bert::Encoder;
use super::{EmbedError, EmbeddingProvider};
use crate::tokens::TokenCounter;

pub use crate::naming::minilm::{DIMENSION, MAX_WORD_PIECES, MODEL, SPECIAL_TOKENS};

/// Its hub repository, for the cache and the download.
pub const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Inputs run through the model together: padded to the longest of them, so the batcher's
/// batch is sorted by length and cut into groups of this size, a group to a thread at a time.
/// Groups of 1 and 2 ran fastest (9.1 and 9.4 inputs a second on one thread), 4 and 16 slower
/// (8.1, 6.2): their activations outgrow the caches.
const GROUP: usize = 2;
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

#[derive(Clone)]
pub struct MiniLm {
    model: Arc<Encoder>,
    tokenizer: Arc<Tokenizer>,
    counter: TokenCounter,
    pool: Arc<rayon::ThreadPool>,
}

impl MiniLm {
    /// Loads the model from `dir` (see [`model_dir`]) to run on `threads` threads.
    ///
    /// Errors name the file that is missing or unreadable.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let tokenizer = tokenizer(dir)?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        let model = Encoder::load(vb, &config)
            .map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        if config.hidden_size != DIMENSION {
            return Err(format!(
                "{}: hidden_size {} is not all-MiniLM-L6-v2's {DIMENSION}",
                dir.join("config.json").display(),
                config.hidden_size
            ));
        }
        keep_freed_memory();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("minilm-{i}"))
            .build()
            .map_err(|e| format!("embedding.threads: {e}"))?;
        Ok(Self {
            model: Arc::new(model),
            counter: TokenCounter::exact(&tokenizer, SPECIAL_TOKENS),
            tokenizer: Arc::new(tokenizer),
            pool: Arc::new(pool),
        })
    }

    /// One vector per text, in order, computed on the calling thread's pool.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        // Padding costs what the longest input of a group costs: group inputs of like length.
        order.sort_by_key(|&i| texts[i].len());
        let groups: Vec<&[usize]> = order.chunks(GROUP).collect();
        let vectors = self.pool.install(|| {
            use rayon::prelude::*;
            groups
                .par_iter()
                .map(|group| {
                    let inputs: Vec<&str> = group.iter().map(|&i| texts[i].as_str()).collect();
                    self.forward(&inputs).map_err(|e| {
                        EmbedError::permanent(format!("all-MiniLM-L6-v2 inference failed: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut out = vec![Vec::new(); texts.len()];
        for (group, vectors) in groups.iter().zip(vectors) {
            for (&i, vector) in group.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn forward(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error>> {
        let encodings = self
            .tokenizer
            .encode_batch(inputs.to_vec(), true)
            .map_err(|e| e.to_string())?;
        let rows = encodings.len();
        let width = encodings[0].get_ids().len();
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).to_vec()).collect()
        };
        let device = &Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, width), device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, width), device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, width), device)?;
        let hidden = self.model.forward(&ids, &types, &mask)?;
        // Mean over the real tokens only, then unit length: sentence-transformers' pooling
        // and its Normalize module.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }

    /// The tokenizer, for sizing chunks with the model's own word pieces.
    pub fn tokenizer(&self) -> Arc<Tokenizer> {
        self.tokenizer.clone()
    }
}

/// Turns off candle's own pool for element-wise work. The embedder runs a group of inputs on
/// each of its `embedding.threads` threads at once, and that pool takes one caller at a time:
/// with it, two threads embedded 15 inputs a second instead of 22 (`benches/minilm_throughput`).
/// Candle reads `CANDLE_NUM_THREADS` once, when it first needs the pool, and setting a variable
/// is only sound before other threads start: call this first thing in `main`. A value the user
/// set is kept.
pub fn turn_off_candles_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Every layer frees and allocates activations of megabytes (13 MB for a group of 4 inputs, half
/// that for a group of 2 on each thread); glibc's
/// allocator hands blocks that large back to the system at once and takes fresh pages for the
/// next, and a fifth of the embedder's time went to those page faults (`perf` on
/// `benches/minilm_throughput`). Raising its thresholds to their maximum (32 MB) keeps them for
/// reuse. Process-wide, so only done when this embedder is loaded; mimalloc did the same for
/// the whole binary but held 60 MB where the streaming reader needs 35.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; a value it refuses leaves them as they were.
    unsafe {
        const MAX: libc::c_int = 32 * 1024 * 1024;
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MAX);
    }
}

/// The model's tokenizer from `dir`, reading at most [`MAX_WORD_PIECES`] and padding a batch
/// to its longest input.
pub fn tokenizer(dir: &Path) -> Result<Tokenizer, String> {
    let path = dir.join("tokenizer.json");
    let mut tokenizer =
        Tokenizer::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_WORD_PIECES,
            ..TruncationParams::default()
        }))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        ..PaddingParams::default()
    }));
    Ok(tokenizer)
}

/// Where the model's files are: `model_path` when set (nothing is downloaded then), else the
/// Hugging Face cache (`HF_HOME`, `~/.cache/huggingface`), else the hub, which fills the cache.
///
/// Errors say what was looked for and how to get the files.
pub fn model_dir(model_path: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(dir) = model_path {
        return match FILES.iter().find(|f| !dir.join(f).is_file()) {
            None => Ok(dir.to_owned()),
            Some(missing) => Err(format!(
                "embedding.model_path: {} has no {missing} (it needs {})",
                dir.display(),
                FILES.join(", ")
            )),
        };
    }
    let cache = hf_hub::Cache::from_env().model(REPO.to_owned());
    if let Some(paths) = FILES
        .iter()
        .map(|f| cache.get(f))
        .collect::<Option<Vec<_>>>()
    {
        return Ok(paths[0].parent().expect("a file in a folder").to_owned());
    }
    let api = hf_hub::api::sync::Api::new().map_err(|e| e.to_string())?;
    let repo = api.model(REPO.to_owned());
    let mut dir = None;
    for file in FILES {
        let path = repo.get(file).map_err(|e| {
            format!(
                "embedding.model_path is not set, {file} of {REPO} is not in the Hugging Face \
                 cache, and the hub could not be reached ({e}); set embedding.model_path to a \
                 folder holding {} (see the README)",
                FILES.join(", ")
            )
        })?;
        dir = path.parent().map(Path::to_owned);
    }
    Ok(dir.expect("three files fetched"))
}

mod bert;

#[async_trait]
impl EmbeddingProvider for MiniLm {
    fn model(&self) -> &str {
        MODEL
    }

    fn dimension(&self) -> usize {
        DIMENSION
    }

    fn token_counter(&self) -> TokenCounter {
        self.counter.clone()
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.embed_blocking(&texts))
            .await
            .map_err(|e| EmbedError::permanent(format!("all-MiniLM-L6-v2 inference: {e}")))?
    }
}
