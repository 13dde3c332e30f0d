//! The engine's Prometheus metrics: counters and histograms the actors and the trigger update as
//! they work, in one registry that `GET /metrics` renders. Gauges that describe a state (jobs by
//! status, queue lengths, running personas) are read when scraped, by the HTTP layer.
//!
//! One registry for the process, like the `prometheus` crate's own default registry: metrics
//! are process-wide by nature, and a value passed down to every actor would buy nothing.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    /// Records written to the vector store.
    pub vectors_written: IntCounter,
    /// Texts the embedding provider turned into vectors.
    pub chunks_embedded: IntCounter,
    /// Embedding provider calls, by outcome (`ok`, `error`).
    pub embedding_calls: IntCounterVec,
    pub embedding_latency: Histogram,
    pub embedding_batch_size: Histogram,
    /// Upsert calls to the vector store.
    pub store_writes: IntCounter,
    /// Retries, by what was retried (`embedding`, `store`, `task`).
    pub retries: IntCounterVec,
    pub dead_letters: IntCounter,
    /// Task messages answered, by final state (`SUCCESS`, `FAILURE`).
    pub tasks: IntCounterVec,
    /// Source files of completed jobs, by what was done (`read`, `skipped` as unchanged).
    pub files: IntCounterVec,
    /// Chunks of completed jobs left as they were (`unchanged`) or whose records were
    /// `deleted`; the embedded ones are `chunks_embedded`.
    pub chunks: IntCounterVec,
    /// Tokens of the chunks embedded by completed jobs, as the model's tokenizer counts them
    /// where it is known, else as estimated.
    pub tokens_embedded: IntCounter,
    /// Input tokens the provider says it billed (an answer's `usage.prompt_tokens`), where it
    /// says.
    pub provider_tokens: IntCounter,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a valid metric")
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric")
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            registry: Registry::new(),
            vectors_written: counter(
                "persona_ingest_vectors_written_total",
                "Records written to the vector store.",
            ),
            chunks_embedded: counter(
                "persona_ingest_chunks_embedded_total",
                "Texts turned into vectors by the embedding provider.",
            ),
            embedding_calls: counter_vec(
                "persona_ingest_embedding_calls_total",
                "Embedding provider calls, by outcome.",
                "outcome",
            ),
            embedding_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "persona_ingest_embedding_call_seconds",
                    "Embedding provider call latency, retries included.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
            )
            .expect("a valid metric"),
            embedding_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "persona_ingest_embedding_batch_size",
                    "Texts per embedding provider call.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
            )
            .expect("a valid metric"),
            store_writes: counter(
                "persona_ingest_store_writes_total",
                "Upsert calls to the vector store.",
            ),
            retries: counter_vec(
                "persona_ingest_retries_total",
                "Retries of transient failures, by what was retried.",
                "of",
            ),
            dead_letters: counter(
                "persona_ingest_dead_letters_total",
                "Task messages dead-lettered (undecodable or unknown).",
            ),
            tasks: counter_vec(
                "persona_ingest_tasks_total",
                "Task messages answered, by final state.",
                "state",
            ),
            files: counter_vec(
                "persona_ingest_files_total",
                "Source files of completed jobs, read or skipped as unchanged.",
                "outcome",
            ),
            chunks: counter_vec(
                "persona_ingest_chunks_total",
                "Chunks of completed jobs left unchanged, or whose records were deleted.",
                "outcome",
            ),
            tokens_embedded: counter(
                "persona_ingest_tokens_embedded_total",
                "Tokens of the chunks embedded by completed jobs.",
            ),
            provider_tokens: counter(
                "persona_ingest_provider_tokens_total",
                "Input tokens the embedding provider says it billed (its usage.prompt_tokens).",
            ),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(metrics.vectors_written.clone()),
            Box::new(metrics.chunks_embedded.clone()),
            Box::new(metrics.embedding_calls.clone()),
            Box::new(metrics.embedding_latency.clone()),
            Box::new(metrics.embedding_batch_size.clone()),
            Box::new(metrics.store_writes.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.tasks.clone()),
            Box::new(metrics.files.clone()),
            Box::new(metrics.chunks.clone()),
            Box::new(metrics.tokens_embedded.clone()),
            Box::new(metrics.provider_tokens.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("each metric registered once");
        }
        metrics
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    /// Counts what a completed job did.
    pub fn job_completed(&self, counts: &crate::counts::JobCounts) {
        self.files
            .with_label_values(&["read"])
            .inc_by(counts.files_read);
        self.files
            .with_label_values(&["skipped"])
            .inc_by(counts.files_skipped);
        self.chunks
            .with_label_values(&["unchanged"])
            .inc_by(counts.chunks_unchanged);
        self.chunks
            .with_label_values(&["deleted"])
            .inc_by(counts.chunks_deleted);
        self.tokens_embedded.inc_by(counts.tokens_embedded);
    }
}
