//! How long a rate-limited run takes beside what the limit requires: two engines (as two daemons
//! would) share one provider key's `embedding.tokens_per_minute` through Redis, ingesting
//! mark-twain and jane-austen against a stand-in that answers 429 over that rate as OpenAI
//! counts it. The least time the limit allows is `(tokens - one minute's allowance) / rate`:
//! the buckets start full. Prints both, the ratio and the 429s (the target: none, within 10 %).
//!
//!     cargo bench --bench rate_limit [-- TOKENS_PER_MINUTE]   (default 2000000)
//!
//! Needs Redis at `REDIS_URL` (default 127.0.0.1:6379) and `../shared/corpus`.

#[path = "../tests/engine/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::path::PathBuf;
use std::sync::Arc;

use persona_ingest::actors::orchestrator::RunRequest;
use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::embed::rate_limit::{RateLimiter, RedisLimiter};
use persona_ingest::pipeline::Engine;
use persona_ingest::{Kind, PersonaId};
use servers::{Profile, RateLimited};

fn main() {
    let tokens_per_minute: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    actix::System::new().block_on(run(tokens_per_minute));
}

async fn run(tokens_per_minute: u64) {
    let corpus = std::env::var_os("PERSONA_INGEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let (server, state) = RateLimited::start(Profile::OpenAi, tokens_per_minute).await;
    let prefix = format!("pi-bench-{}", uuid::Uuid::new_v4().simple());
    let scratch = tempfile::tempdir().unwrap();
    let mut engines = Vec::new();
    for name in ["a", "b"] {
        let settings = Settings::load(
            &ConfigInputs::default()
                .with_override("data_root", corpus.display().to_string())
                .with_override(
                    "database.url",
                    format!(
                        "sqlite://{}?mode=rwc",
                        scratch.path().join(format!("{name}.db")).display()
                    ),
                )
                .with_override(
                    "store.path",
                    scratch
                        .path()
                        .join(format!("{name}.vectors"))
                        .display()
                        .to_string(),
                )
                .with_override("embedding.provider", "openai")
                .with_override("embedding.base_url", format!("{}/v1", server.uri()))
                .with_override("embedding.model", "text-embedding-3-small")
                .with_override("embedding.api_key", "sk-one-key")
                .with_override("embedding.tokens_per_minute", tokens_per_minute.to_string())
                .with_override("embedding.max_batch_tokens", "100000"),
        )
        .unwrap();
        let client = redis::Client::open(redis.as_str()).unwrap();
        let con = redis::aio::ConnectionManager::new(client).await.unwrap();
        let limiter: Arc<dyn RateLimiter> =
            Arc::new(RedisLimiter::new(con, &prefix, &settings.embedding));
        engines.push(
            Engine::start_sharing(settings, Some(limiter))
                .await
                .unwrap(),
        );
    }
    let runs = engines
        .iter()
        .zip(["mark-twain", "jane-austen"])
        .map(|(engine, persona)| {
            engine.run(RunRequest::new(
                PersonaId::parse(persona).unwrap(),
                &Kind::ALL,
            ))
        });
    for outcome in futures::future::join_all(runs).await {
        assert!(outcome.unwrap().succeeded());
    }
    let state = state.lock().unwrap();
    let took = (state.last.unwrap() - state.first.unwrap()).as_secs_f64();
    let required = (state.tokens as f64 - tokens_per_minute as f64).max(0.0)
        / (tokens_per_minute as f64 / 60.0);
    println!(
        "{} tokens at {tokens_per_minute} a minute, two engines sharing the limit on Redis: \
         calls over {took:.1} s; the limit allows no less than {required:.1} s: {:.3}x; {} 429s",
        state.tokens,
        took / required,
        state.refused
    );
}
