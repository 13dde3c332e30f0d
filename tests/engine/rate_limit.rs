//! One rate limit for every daemon sharing a provider key: two `persona-ingest run` processes on
//! one Redis, one OpenAI key with `embedding.tokens_per_minute` set, against a stand-in that
//! answers 429 to whatever goes over that rate as OpenAI counts it. How long the run took beside
//! what the limit requires is printed here and measured in `benches/rate_limit.rs`.

use std::time::Duration;

use crate::common::*;
use crate::servers::{Profile, RateLimited};
use crate::worker_kit::*;

#[actix::test]
async fn two_daemons_sharing_a_key_meet_no_429() {
    // The two books are about 2.7 million tokens: the limit, not the engine, sets the pace.
    let tokens_per_minute: u64 = 2_000_000;
    let (server, state) = RateLimited::start(Profile::OpenAi, tokens_per_minute).await;
    let world = World::reading(corpus_root());
    let names = Names::new();
    let base_url = format!("{}/v1", server.uri());
    let tpm = tokens_per_minute.to_string();
    let env = vars(&[
        ("ENGINE__EMBEDDING__PROVIDER", "openai"),
        ("ENGINE__EMBEDDING__BASE_URL", &base_url),
        ("ENGINE__EMBEDDING__MODEL", "text-embedding-3-small"),
        ("ENGINE__EMBEDDING__TOKENS_PER_MINUTE", &tpm),
        ("ENGINE__EMBEDDING__MAX_BATCH_TOKENS", "100000"),
        ("ENGINE__WORKER__CONCURRENCY", "1"),
        ("OPENAI_API_KEY", "sk-one-key"),
    ]);
    let _a = Daemon::start(&world, &names, &redis_url(), &env);
    let _b = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let tasks = [
        send_full_persona(&mut con, &names.queue, "mark-twain").await,
        send_full_persona(&mut con, &names.queue, "jane-austen").await,
    ];
    for task in &tasks {
        let result = final_result(&redis_url(), task, Duration::from_secs(600)).await;
        assert_eq!(result["status"], "SUCCESS", "{result}");
    }
    let state = state.lock().unwrap();
    assert_eq!(state.refused, 0, "no 429: {state:?}");
    let took = state.last.unwrap() - state.first.unwrap();
    let required = (state.tokens as f64 - tokens_per_minute as f64).max(0.0)
        / (tokens_per_minute as f64 / 60.0);
    eprintln!(
        "{} tokens at {tokens_per_minute} a minute: calls over {:.1} s, the limit requires {required:.1} s",
        state.tokens,
        took.as_secs_f64()
    );
}
