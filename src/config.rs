//! Settings: the checked-in `config.toml` defaults < a file given with `--config` <
//! the environment (`ENGINE__SECTION__KEY` and the customary `DATABASE_URL`, `REDIS_URL`,
//! `CHROMA_URL`, `OPENAI_API_KEY`) < command-line flags. A wrong, missing or unknown value
//! is refused at start, naming its key. The settings' shape is here; how they are loaded is in
//! `load`, how they are checked in `validate`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULTS_TOML: &str = include_str!("../config.toml");

/// Environment variables that deployments customarily set, and the key each one sets.
/// `ENGINE__...` variables win over them.
const CUSTOMARY_ENV: [(&str, &str); 5] = [
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("CELERY_RESULT_BACKEND", "results.url"),
    ("CHROMA_URL", "store.url"),
    ("OPENAI_API_KEY", "embedding.api_key"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_root: PathBuf,
    pub database: DatabaseSettings,
    pub embedding: EmbeddingSettings,
    pub store: StoreSettings,
    pub chunking: ChunkingSettings,
    #[serde(default)]
    pub sources: SourcesSettings,
    pub quotes: QuotesSettings,
    pub collections: CollectionSettings,
    pub ingest: IngestSettings,
    pub worker: WorkerSettings,
    pub redis: RedisSettings,
    pub results: ResultsSettings,
    pub tasks: TaskSettings,
    pub http: HttpSettings,
    pub events: EventSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Deterministic feature hashing, no network: see `embed::local`.
    Local,
    /// `POST {base_url}/embeddings`: see `embed::openai`.
    #[serde(rename = "openai")]
    OpenAi,
    /// all-MiniLM-L6-v2 in process: see `embed::minilm`.
    #[serde(rename = "minilm")]
    MiniLm,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSettings {
    pub provider: ProviderKind,
    /// The vectors' size: the local embedder's (unset: [`DEFAULT_LOCAL_DIMENSION`]); for the
    /// other providers what their vectors must measure (unset: known, or learned at start).
    #[serde(default)]
    pub dimension: Option<usize>,
    pub base_url: String,
    pub model: String,
    /// Sent to an OpenAI-compatible API to shorten its vectors (Matryoshka models); unset,
    /// nothing is sent (vLLM refuses it for other models).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Sent as `encoding_format` ("float" or "base64"); unset, nothing is sent.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Sends `"truncate": true` (text-embeddings-inference, Ollama): the server cuts an input
    /// longer than its model reads, so a long quote is no longer refused.
    #[serde(default)]
    pub truncate: bool,
    /// A Hugging Face `tokenizer.json` that counts tokens as the served model does; unset:
    /// OpenAI's tokenizer for OpenAI's models, else an estimate by script.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Calls a minute to the provider, shared by every daemon on the same Redis and key.
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Tokens a minute (as `tokens` counts them), shared likewise.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// What the provider charges, in any currency, for a million input tokens: what
    /// `ingest --dry-run` multiplies the tokens to embed by.
    #[serde(default)]
    pub price_per_million_tokens: Option<f64>,
    #[serde(default)]
    pub api_key: Option<String>,
    pub timeout_secs: u64,
    /// The model's input limit: a chunk or quote may not be longer.
    pub max_input_tokens: usize,
    pub max_batch_inputs: usize,
    pub max_batch_tokens: usize,
    pub max_in_flight: usize,
    /// Unset: 0 for the local embedder, `DEFAULT_HTTP_LINGER_MS` for an HTTP provider.
    #[serde(default)]
    pub linger_ms: Option<u64>,
    pub max_retries: u32,
    /// The `minilm` provider's folder of `model.safetensors`, `tokenizer.json`, `config.json`;
    /// unset: the Hugging Face cache, then the hub.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// Threads the `minilm` provider computes on; unset: one a core.
    #[serde(default)]
    pub threads: Option<usize>,
}

/// What the `minilm` provider changes in the defaults (a layer above `config.toml`'s, below
/// every setting a user makes): its vector size, its input limit (256 word pieces, [CLS] and
/// [SEP] included) and chunks that fit it.
const MINILM_DEFAULTS: &str = "
[embedding]
dimension = 384
max_input_tokens = 256
max_batch_inputs = 64
[chunking]
target_tokens = 200
overlap_tokens = 20
";

/// The local embedder's vector size unless `embedding.dimension` says.
pub const DEFAULT_LOCAL_DIMENSION: usize = 384;

/// How long an HTTP provider's partly filled batch waits for more texts, unless configured:
/// enough for the next windows of other jobs to arrive (measured in `benches/embedding_batching`).
pub const DEFAULT_HTTP_LINGER_MS: u64 = 25;

impl EmbeddingSettings {
    /// The linger time in force: configured, or the provider's default.
    pub fn linger(&self) -> std::time::Duration {
        let default = match self.provider {
            ProviderKind::Local | ProviderKind::MiniLm => 0,
            ProviderKind::OpenAi => DEFAULT_HTTP_LINGER_MS,
        };
        std::time::Duration::from_millis(self.linger_ms.unwrap_or(default))
    }

    /// The size of the vectors the configured provider gives, when settings say it: `None` for
    /// an OpenAI-compatible model of unknown size, learned at start from a probe call.
    pub fn vector_dimension(&self) -> Option<usize> {
        match self.provider {
            ProviderKind::Local => Some(self.dimension.unwrap_or(DEFAULT_LOCAL_DIMENSION)),
            ProviderKind::MiniLm => Some(crate::naming::minilm::DIMENSION),
            ProviderKind::OpenAi => self
                .dimensions
                .or(self.dimension)
                .or_else(|| crate::naming::known_dimension(&self.model)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One local file, see `store::embedded`.
    Embedded,
    /// A Chroma server over HTTP, see `store::chroma`.
    Chroma,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub path: PathBuf,
    pub url: String,
    pub tenant: String,
    pub database: String,
    #[serde(default)]
    pub auth_token: Option<String>,
    pub timeout_secs: u64,
    pub max_in_flight: usize,
    /// Transient store errors retried per call before the job fails.
    pub max_retries: u32,
    /// Chroma: the most bytes one upsert request carries (halved for the process on a 413).
    pub max_request_bytes: usize,
    /// Chroma: a collection made by other code (no model in its metadata) that is empty or
    /// holds vectors of the wanted size is adopted (its metadata stamped) instead of refused.
    pub adopt_collections: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingSettings {
    pub target_tokens: usize,
    pub overlap_tokens: usize,
}

/// How source files are read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSettings {
    /// The encoding of files without a byte-order mark, a WHATWG label (`windows-1252`,
    /// `latin1`, `shift_jis`...); unset for UTF-8. Files with a BOM are read as it says.
    #[serde(default)]
    pub encoding: Option<String>,
}

impl SourcesSettings {
    /// The encoding `encoding` names (checked when the settings load); `None` for UTF-8.
    pub fn encoding(&self) -> Option<&'static encoding_rs::Encoding> {
        self.encoding
            .as_deref()
            .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRecord {
    Fail,
    Skip,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotesSettings {
    pub on_bad_record: OnBadRecord,
    pub max_record_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSettings {
    pub name_template: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub window_chunks: usize,
    /// Unset: 4 with the local embedder, 16 with an HTTP provider (see `Settings::windows_in_flight`).
    #[serde(default)]
    pub windows_in_flight: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub soft_time_limit: u64,
    pub time_limit: u64,
    /// The Celery queues `persona-ingest run` serves, in order.
    pub queues: Vec<String>,
    /// Seconds a worker's lease lasts without renewal; then its messages are requeued.
    pub visibility_timeout: u64,
    /// Seconds running work gets to finish after SIGTERM before the rest is requeued.
    pub shutdown_grace: u64,
    /// Messages taken per concurrency slot (Celery's `worker_prefetch_multiplier`).
    pub prefetch: usize,
    /// Runs of a task whose failure was transient, after the first (Celery's `max_retries`).
    pub max_retries: u32,
    /// Seconds before the first retry; doubled for each next one, jittered, at most 600.
    pub retry_delay: f64,
    /// The worker's node name (Celery's `--hostname`), in its events and STARTED results;
    /// empty: `persona-ingest.<pid>@<host>`.
    pub name: String,
    /// Seconds a revocation is kept (Celery's `REVOKES_EXPIRES`, 3 hours): a revoked task that
    /// arrives later than that runs.
    pub revokes_expire: u64,
}

/// Celery events (`worker-*`, `task-*`) for Flower and `celery events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    pub enabled: bool,
}

/// The HTTP server of `persona-ingest run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port`; empty: no HTTP server.
    pub listen: String,
    /// When set, every endpoint but `/health` wants `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

/// The Celery task names served: the web app's, by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    pub full_persona: String,
    pub works: String,
    pub quotes: String,
    pub profile: String,
    /// When `ingest_full_persona` answers: once its run is accepted (the seed's contract,
    /// its sub-tasks then living on their own), or once the whole ingestion ended.
    pub full_persona_answers: FullPersonaAnswers,
}

/// See [`TaskSettings::full_persona_answers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FullPersonaAnswers {
    Dispatched,
    Completed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of the engine's own keys (in-flight lists, leases, dead letters).
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsSettings {
    /// Seconds a task's result is kept (Celery's `result_expires`, one day by default).
    pub expires: u64,
    /// The result backend's Redis (Celery's `result_backend`, `CELERY_RESULT_BACKEND`); unset:
    /// the broker's.
    #[serde(default)]
    pub url: Option<String>,
}

impl Settings {
    /// Windows one job keeps between reading and writing. A remote provider's latency needs more
    /// in flight to be hidden (measured in `benches/embedding_batching`: at 100 ms a call, 16
    /// windows bring ten personas within 1.2x of the ideal); locally, 4 is faster.
    pub fn windows_in_flight(&self) -> usize {
        self.ingest
            .windows_in_flight
            .unwrap_or(match self.embedding.provider {
                ProviderKind::Local | ProviderKind::MiniLm => 4,
                ProviderKind::OpenAi => 16,
            })
    }

    /// The collection of one persona and kind, from `collections.name_template`.
    pub fn collection_name(&self, persona: &str, kind: &str) -> String {
        collection_name(&self.collections.name_template, persona, kind)
    }

    /// `data_root`, made absolute against the working directory.
    pub fn data_root(&self) -> PathBuf {
        absolute(&self.data_root)
    }
}

pub use crate::naming::{check_collection_name, collection_name};

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

mod load;
mod validate;

pub use load::{ConfigError, ConfigInputs};

#[cfg(test)]
mod tests;
