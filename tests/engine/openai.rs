//! The OpenAI-compatible client against a local HTTP server speaking the protocol (wiremock):
//! the request it sends, retries on 429 (honouring Retry-After), 500 and timeouts, immediate
//! failure on 401, short answers refused, and batching across jobs through the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use persona_ingest::actors::embedding_batcher::{BatchLimits, EmbedTexts, EmbeddingBatcher};
use persona_ingest::actors::orchestrator::RunRequest;
use persona_ingest::embed::{EmbeddingProvider, OpenAiProvider};
use persona_ingest::Kind;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::common::*;

const DIMENSION: usize = 8;

/// Answers like the embeddings API: one vector per input (its length first), indexes shuffled
/// to prove the client puts them back in order.
pub fn embeddings_response(request: &Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let inputs = body["input"].as_array().unwrap();
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut vector = vec![0.0f32; DIMENSION];
            vector[0] = text.as_str().unwrap().len() as f32;
            json!({ "object": "embedding", "index": index, "embedding": vector })
        })
        .collect();
    data.reverse();
    ResponseTemplate::new(200).set_body_json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": { "prompt_tokens": 1, "total_tokens": 1 }
    }))
}

/// The server answers the first call with `first`, and every later one as the API does.
async fn answer_once_then_embed(server: &MockServer, first: ResponseTemplate) {
    Mock::given(path("/v1/embeddings"))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(embeddings_response)
        .mount(server)
        .await;
}

fn provider(server: &MockServer, timeout: Duration) -> Arc<OpenAiProvider> {
    Arc::new(
        OpenAiProvider::new(
            &format!("{}/v1", server.uri()),
            "text-embedding-3-small",
            Some("sk-test".into()),
            timeout,
        )
        .with_dimensions(Some(DIMENSION)),
    )
}

fn limits(max_retries: u32) -> BatchLimits {
    BatchLimits {
        max_inputs: 2048,
        max_tokens: 300_000,
        linger: Duration::ZERO,
        max_in_flight: 2,
        max_retries,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(5),
    }
}

async fn embed_through_batcher(
    provider: Arc<OpenAiProvider>,
    max_retries: u32,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, persona_ingest::embed::EmbedError> {
    let batcher = EmbeddingBatcher::new(provider, limits(max_retries)).start();
    batcher.send(EmbedTexts { texts }).await.unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (1..=n).map(|i| "w".repeat(i)).collect()
}

#[actix::test]
async fn sends_the_documented_request_and_reorders_by_index() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", "Bearer sk-test"))
        .respond_with(embeddings_response)
        .expect(1)
        .mount(&server)
        .await;
    let vectors = provider(&server, Duration::from_secs(5))
        .embed(texts(3))
        .await
        .unwrap();
    assert_eq!(
        vectors.iter().map(|v| v[0]).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0]
    );
    let request: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        request,
        json!({ "model": "text-embedding-3-small", "input": ["w", "ww", "www"], "dimensions": 8 })
    );
}

#[actix::test]
async fn calls_hold_at_most_max_batch_inputs() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(embeddings_response)
        .mount(&server)
        .await;
    let limits = BatchLimits {
        max_inputs: 2,
        ..limits(0)
    };
    let batcher = EmbeddingBatcher::new(provider(&server, Duration::from_secs(5)), limits).start();
    let vectors = batcher
        .send(EmbedTexts { texts: texts(5) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        vectors.iter().map(|v| v[0]).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let mut sizes: Vec<usize> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["input"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 2, 2]);
}

#[actix::test]
async fn a_429_is_retried_after_its_retry_after() {
    let server = MockServer::start().await;
    answer_once_then_embed(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(
                json!({ "error": { "message": "Rate limit reached", "type": "requests" } }),
            ),
    )
    .await;
    let started = Instant::now();
    let vectors = embed_through_batcher(provider(&server, Duration::from_secs(5)), 3, texts(2))
        .await
        .unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
}

#[actix::test]
async fn server_errors_are_retried_until_the_budget_is_spent() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({ "error": { "message": "The server had an error" } })),
        )
        .mount(&server)
        .await;
    let error = embed_through_batcher(provider(&server, Duration::from_secs(5)), 2, texts(2))
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .contains("500 Internal Server Error: The server had an error"),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with("(gave up after 3 attempts)"),
        "{}",
        error.message
    );
    // Three attempts, then each input alone, three times, in case one was at fault: none was (no
    // call succeeded), so the error stays the server's, transient.
    assert_eq!(server.received_requests().await.unwrap().len(), 3 + 2 * 3);
    assert!(error.is_transient() && error.input.is_none());
}

#[actix::test]
async fn a_timeout_is_retried_and_then_succeeds() {
    let server = MockServer::start().await;
    answer_once_then_embed(
        &server,
        ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
    )
    .await;
    let vectors = embed_through_batcher(provider(&server, Duration::from_millis(300)), 2, texts(2))
        .await
        .unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[actix::test]
async fn a_401_fails_at_once_with_the_providers_message() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({ "error": { "message": "Incorrect API key provided: sk-test.", "code": "invalid_api_key" } })))
        .mount(&server)
        .await;
    let error = embed_through_batcher(provider(&server, Duration::from_secs(5)), 5, texts(2))
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .ends_with("401 Unauthorized: Incorrect API key provided: sk-test."),
        "{}",
        error.message
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "no retry"
    );
}

#[actix::test]
async fn a_short_answer_is_refused() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{ "object": "embedding", "index": 0, "embedding": vec![0.0; DIMENSION] }],
            "model": "text-embedding-3-small"
        })))
        .mount(&server)
        .await;
    let error = provider(&server, Duration::from_secs(5))
        .embed(texts(2))
        .await
        .unwrap_err();
    assert!(
        error.message.ends_with("1 embeddings for 2 inputs"),
        "{}",
        error.message
    );
    assert!(!error.is_transient());
}

#[actix::test]
async fn three_jobs_of_ten_chunks_share_one_provider_call() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(embeddings_response)
        .mount(&server)
        .await;
    let world = World::new();
    let quotes: String = (0..10)
        .map(|i| format!("{{\"text\": \"quote number {i}\"}}\n"))
        .collect();
    for persona in ["a1", "b2", "c3"] {
        world.write(&format!("data/{persona}/quotes/all_quotes.jsonl"), &quotes);
    }
    let base_url = format!("{}/v1", server.uri());
    let engine = world
        .engine(&[
            ("embedding.provider", "openai"),
            ("embedding.base_url", &base_url),
            ("embedding.dimensions", "8"),
            ("embedding.max_batch_inputs", "30"),
            ("embedding.linger_ms", "500"),
        ])
        .await;
    let runs = ["a1", "b2", "c3"].map(|p| engine.run(RunRequest::new(persona(p), &[Kind::Quotes])));
    for outcome in futures::future::join_all(runs).await {
        assert!(outcome.unwrap().succeeded());
    }
    let requests: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect();
    assert_eq!(
        requests.len(),
        2,
        "the probe at start, then one call for three jobs"
    );
    let requests = &requests[1..];
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["input"].as_array().unwrap().len(), 30);
    for p in ["a1", "b2", "c3"] {
        assert_store_matches_rows(&engine, p).await;
    }
}
