//! Every OpenAI-compatible server out of the box: the engine against stand-ins answering as vLLM,
//! text-embeddings-inference, Ollama, Gemini and OpenAI document (see `servers`), with nothing set
//! but the server's address and model.

use persona_ingest::actors::embedding_batcher::BatcherCounters;
use persona_ingest::pipeline::Engine;
use persona_ingest::{JobStatus, Kind};

use crate::common::*;
use crate::servers::{Profile, StandIn, POISON};

async fn engine_on(world: &World, stand_in: &StandIn, extra: &[(&str, &str)]) -> Engine {
    let mut settings: Vec<(&str, String)> = stand_in.settings();
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    world.engine(&pairs).await
}

fn small_persona(world: &World, id: &str) {
    world.write(
        &format!("personas/{id}/profile.md"),
        "# Someone\n\n## Life\nBorn, wrote, died.\n",
    );
    world.write(
        &format!("data/{id}/works/a.txt"),
        "A short work.\n\nWith two paragraphs of text in it.\n",
    );
    world.write(
        &format!("data/{id}/quotes/all_quotes.jsonl"),
        "{\"text\": \"one quote\"}\n{\"text\": \"another quote\"}\n",
    );
}

/// Case 1: vLLM serving a model without Matryoshka support. Nothing states the vector size: it
/// is learned from one probe call, and `dimensions` is never sent.
#[actix::test]
async fn vllm_without_matryoshka_works_with_no_dimension_set() {
    let vllm = Profile::Vllm.start().await;
    let world = World::new();
    small_persona(&world, "p");
    let engine = engine_on(&world, &vllm, &[]).await;
    assert_eq!(engine.provider.dimension(), 1024, "learned from the probe");
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let requests = vllm.embedding_requests().await;
    assert!(requests.iter().all(|r| r.get("dimensions").is_none()));
    assert!(requests.iter().all(|r| r.get("encoding_format").is_none()));
    let collection = engine.store.collection("p_works").await.unwrap().unwrap();
    assert_eq!(collection.dimension, 1024);
    assert_store_matches_rows(&engine, "p").await;

    // Asking it to shorten the vectors is refused at start, in vLLM's words.
    let error = persona_ingest::pipeline::Engine::start(world.settings(&[
        ("embedding.provider", "openai"),
        ("embedding.base_url", &vllm.base_url),
        ("embedding.model", "BAAI/bge-m3"),
        ("embedding.dimensions", "256"),
    ]))
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(error.starts_with("embedding.dimensions: "), "{error}");
    assert!(error.contains("does not support matryoshka"), "{error}");
}

/// Case 2: a server that leaves out `index` (Gemini's, for the zero index).
#[actix::test]
async fn a_server_that_leaves_out_the_index_is_read_by_position() {
    let gemini = Profile::Gemini.start().await;
    let world = World::new();
    small_persona(&world, "p");
    let engine = engine_on(&world, &gemini, &[("embedding.dimensions", "768")]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    assert_eq!(
        gemini.embedding_requests().await[0]["dimensions"],
        768,
        "sent when set"
    );
    assert_store_matches_rows(&engine, "p").await;
}

/// Case 3: text-embeddings-inference takes 32 inputs a call. It says so at `GET /info`, which is
/// read at start; a server that does not say so answers 413, and the batch is cut to the size it
/// states. mark-twain goes through with default settings either way.
#[actix::test]
async fn text_embeddings_inference_takes_mark_twain_with_default_settings() {
    let tei = Profile::Tei.start().await;
    let world = World::reading(corpus_root());
    let engine = engine_on(&world, &tei, &[]).await;
    let outcome = engine
        .ingest(persona("mark-twain"), &Kind::ALL)
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let requests = tei.embedding_requests().await;
    let largest = requests
        .iter()
        .map(|r| r["input"].as_array().unwrap().len())
        .max();
    assert_eq!(largest, Some(32), "at most what /info says, and full");
    assert_store_matches_rows(&engine, "mark-twain").await;

    // Without /info (an older server, or one behind a proxy): the first 413 sets the size.
    let silent = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/v1/embeddings"))
        .respond_with(|r: &wiremock::Request| Profile::Tei.answer(r))
        .mount(&silent)
        .await;
    let world = World::reading(corpus_root());
    let base_url = format!("{}/v1", silent.uri());
    let engine = world
        .engine(&[
            ("embedding.provider", "openai"),
            ("embedding.base_url", &base_url),
            ("embedding.model", "BAAI/bge-small-en-v1.5"),
        ])
        .await;
    let outcome = engine
        .ingest(persona("mark-twain"), &Kind::ALL)
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let counters: BatcherCounters = persona_ingest::testkit::observe(&engine.batcher).await;
    assert_eq!(counters.batch_cap, 32);
    let refused = silent
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|body| body["input"].as_array().is_some_and(|i| i.len() > 32))
        })
        .count();
    assert!(
        refused <= 2,
        "{refused} calls refused: the size is kept once learned"
    );
}

/// Case 4: Ollama fails on one input, always. Persona `a` holds it in a work, ingested beside
/// persona `b`: only `a`'s works job fails, naming the file and chunk; `b` completes; the search
/// costs a few calls, and the failure is not retried as transient.
#[actix::test]
async fn an_input_ollama_always_fails_on_fails_only_its_job() {
    let ollama = Profile::Ollama.start().await;
    let world = World::new();
    small_persona(&world, "a");
    small_persona(&world, "b");
    let mut text: String = (0..30)
        .map(|i| {
            format!("Paragraph {i} of a long work, with words enough to fill a chunk of its own. ")
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    text.push_str(&format!("\n\nA last paragraph that says {POISON}.\n"));
    world.write("data/a/works/poisoned.txt", text);
    let engine = engine_on(
        &world,
        &ollama,
        &[
            ("chunking.target_tokens", "40"),
            ("chunking.overlap_tokens", "4"),
            ("embedding.max_retries", "1"),
            ("worker.max_retries", "3"),
            ("worker.retry_delay", "0.1"),
        ],
    )
    .await;
    let (a, b) = futures::join!(
        engine.run_retrying(persona_ingest::actors::orchestrator::RunRequest::new(
            persona("a"),
            &Kind::ALL
        )),
        engine.run_retrying(persona_ingest::actors::orchestrator::RunRequest::new(
            persona("b"),
            &Kind::ALL
        )),
    );
    assert!(b.unwrap().succeeded());
    assert!(!a.unwrap().succeeded());
    let rows = latest_jobs(&engine.db, "a").await;
    let works = job_of(&rows, Kind::Works);
    assert_eq!(works.status, JobStatus::Failed);
    assert_eq!(works.attempts, 1, "a proven bad input is not retried");
    let error = works.error_message.as_deref().unwrap();
    assert!(
        error.contains("data/a/works/poisoned.txt chunk ")
            && error.contains("unsupported value: NaN"),
        "{error}"
    );
    assert_eq!(job_of(&rows, Kind::Quotes).status, JobStatus::Completed);
    assert_eq!(job_of(&rows, Kind::Profile).status, JobStatus::Completed);
    let counters: BatcherCounters = persona_ingest::testkit::observe(&engine.batcher).await;
    assert_eq!(counters.bad_inputs, 1);
    eprintln!(
        "the poisoned input found in {} calls ({} calls in all, {} texts)",
        counters.isolation_calls, counters.calls, counters.texts
    );
    assert!(counters.isolation_calls <= 2 * 7, "{counters:?}");
    assert_store_matches_rows(&engine, "b").await;
    assert_nothing_processing(&engine.db).await;
}

/// Case 5: tokens as the model counts them. Chinese chunks sized at a token a character fit a
/// 512-token model; a 600-character quote is a bad record at reading, not a failed call.
#[actix::test]
async fn chinese_text_fits_a_512_token_model() {
    let vllm = Profile::Vllm.start().await;
    let world = World::new();
    world.write(
        "data/p/works/poems.txt",
        "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。".repeat(200),
    );
    world.write(
        "data/p/quotes/all_quotes.jsonl",
        format!(
            "{{\"text\": \"床前明月光\"}}\n{{\"text\": \"{}\"}}\n",
            "长".repeat(600)
        ),
    );
    let engine = engine_on(
        &world,
        &vllm,
        &[
            ("embedding.max_input_tokens", "512"),
            ("quotes.on_bad_record", "skip"),
        ],
    )
    .await;
    let outcome = engine
        .ingest(persona("p"), &[Kind::Works, Kind::Quotes])
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let rows = latest_jobs(&engine.db, "p").await;
    let quotes = job_of(&rows, Kind::Quotes);
    assert_eq!(quotes.total_vectors, 1);
    let warning = quotes.warning_message.as_deref().unwrap_or_default();
    assert!(
        warning.contains(":2: `text` of 600 tokens (estimated)"),
        "{warning}"
    );
    assert!(store_count(&engine, "p_works").await > 10);
}

/// Every server's answer is read by the same client: one persona through each.
#[actix::test]
async fn every_profile_ingests_a_persona() {
    for profile in Profile::ALL {
        let stand_in = profile.start().await;
        let world = World::new();
        small_persona(&world, "p");
        let engine = engine_on(&world, &stand_in, &[]).await;
        let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
        assert!(outcome.succeeded(), "{profile:?}: {:?}", outcome.error);
        assert_eq!(
            engine.provider.dimension(),
            profile.dimension(),
            "{profile:?}"
        );
        assert_store_matches_rows(&engine, "p").await;
    }
}

/// The provider suite every embedder passes (see `testkit::conformance`), by the OpenAI-compatible
/// client against each server's stand-in.
#[actix::test]
async fn the_openai_compatible_client_conforms_against_every_server() {
    for profile in Profile::ALL {
        let stand_in = profile.start().await;
        let provider = persona_ingest::embed::OpenAiProvider::new(
            &stand_in.base_url,
            profile.model(),
            Some("sk-test".into()),
            std::time::Duration::from_secs(10),
        )
        .connect(1, None)
        .await
        .unwrap();
        persona_ingest::testkit::conformance::embedding_provider(
            &format!("{profile:?}"),
            &provider,
        )
        .await;
    }
}
