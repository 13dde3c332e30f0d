//! The `minilm` embedder's speed against this machine's physical limit: chunks of 256 word
//! pieces embedded a second, the floating-point operations a second that makes (counted from
//! the model's shape), beside the best matrix multiply of the same library on the same threads,
//! measured in the same run (the peak the model's matmuls could reach at best).
//!
//!     scripts/model-env && cargo bench --bench minilm_throughput [-- THREADS]   (default: all)
//!
//! The model from `PERSONA_INGEST_MINILM` or `.cache/models/all-MiniLM-L6-v2`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use persona_ingest::embed::minilm::{MiniLm, MAX_WORD_PIECES};

const HIDDEN: f64 = 384.0;
const INTERMEDIATE: f64 = 1536.0;
const LAYERS: f64 = 6.0;
const BATCH: usize = 64;

/// Multiply-adds of one input of `len` word pieces through the encoder, as 2 flops each:
/// Q, K, V and output projections, the feed-forward pair, attention scores and context.
fn flops_per_input(len: f64) -> f64 {
    let projections = 4.0 * 2.0 * len * HIDDEN * HIDDEN;
    let feed_forward = 2.0 * 2.0 * len * HIDDEN * INTERMEDIATE;
    let attention = 2.0 * 2.0 * len * len * HIDDEN;
    LAYERS * (projections + feed_forward + attention)
}

fn main() {
    // As `persona-ingest` does: the embedder's threads each run a group of inputs.
    persona_ingest::embed::minilm::turn_off_candles_pool();
    let threads: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let dir = std::env::var_os("PERSONA_INGEST_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2")
        });
    let model =
        MiniLm::load(&dir, threads).unwrap_or_else(|e| panic!("{e}: run scripts/model-env"));

    // Inputs the tokenizer fills to the limit: 256 word pieces each, [CLS] and [SEP] included.
    let corpus = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/corpus/data/mark-twain/works/adventures-of-huckleberry-finn_pg76.txt"),
    )
    .expect("../shared/corpus");
    let words: Vec<&str> = corpus.split_whitespace().skip(10_000).collect();
    let texts: Vec<String> = words.chunks(400).take(BATCH).map(|w| w.join(" ")).collect();
    let counter = persona_ingest::embed::EmbeddingProvider::token_counter(&model);
    assert!(texts
        .iter()
        .all(|t| counter.count(t) + 2 >= MAX_WORD_PIECES));

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // The peak before and after the model, the higher: one measure alone swung by a third with
    // what else the machine did.
    let measure_peak = || {
        pool.install(|| {
            [512usize, 1024, 2048]
                .into_iter()
                .map(|n| {
                    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
                    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
                    a.matmul(&b).unwrap();
                    let mut best = Duration::MAX;
                    for _ in 0..5 {
                        let started = Instant::now();
                        a.matmul(&b).unwrap();
                        best = best.min(started.elapsed());
                    }
                    2.0 * (n as f64).powi(3) / best.as_secs_f64()
                })
                .fold(0.0, f64::max)
        })
    };
    let before = measure_peak();
    model.embed_blocking(&texts[..8]).unwrap(); // warm up
    let rounds = 5;
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        model.embed_blocking(&texts).unwrap();
        best = best.min(started.elapsed());
    }
    let chunks_per_sec = BATCH as f64 / best.as_secs_f64();
    let model_flops = chunks_per_sec * flops_per_input(MAX_WORD_PIECES as f64);

    let peak = before.max(measure_peak());
    println!("all-MiniLM-L6-v2 on {threads} thread(s), batches of {BATCH} inputs of {MAX_WORD_PIECES} word pieces:");
    println!(
        "  embedding      {chunks_per_sec:>8.1} chunks/s   {:>6.1} GFLOP/s",
        model_flops / 1e9
    );
    println!("  matmul peak                       {:>6.1} GFLOP/s (candle f32, best of 512..2048 squared)", peak / 1e9);
    println!(
        "  embedding at {:.0} % of the peak",
        100.0 * model_flops / peak
    );
}
