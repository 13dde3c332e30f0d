//! How close the EmbeddingBatcher comes to the ideal when ten personas ingest at once against
//! an embedding endpoint that answers each call after a fixed latency (a local server speaking
//! the OpenAI protocol). The ideal is `ceil(chunks / max_batch) * latency / max_in_flight`:
//! every call full, every slot busy, nothing else costing time. Prints the ratio.
//!
//!     cargo bench --bench embedding_batching [-- LATENCY_MS]   (default 100)
//!
//! Ten books of `../shared/corpus` (or `PERSONA_INGEST_CORPUS`), one persona each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use persona_ingest::actors::orchestrator::RunRequest;
use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::pipeline::Engine;
use persona_ingest::{Kind, PersonaId};
use serde_json::{json, Value};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PERSONAS: usize = 10;
const MAX_BATCH: usize = 256;
const MAX_IN_FLIGHT: usize = 4;
const DIMENSION: usize = 32;

fn main() {
    let latency_ms: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let corpus = std::env::var_os("PERSONA_INGEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    actix::System::new().block_on(run(corpus, Duration::from_millis(latency_ms)));
}

/// Ten books, one persona each, in a data root of its own.
fn lay_out(corpus: &Path, root: &Path) -> Vec<PersonaId> {
    let mut books: Vec<PathBuf> = ["mark-twain", "jane-austen"]
        .iter()
        .flat_map(|author| {
            std::fs::read_dir(corpus.join("data").join(author).join("works")).unwrap()
        })
        .map(|entry| entry.unwrap().path())
        .collect();
    books.sort();
    books
        .iter()
        .take(PERSONAS)
        .enumerate()
        .map(|(i, book)| {
            let id = format!("reader-{i:02}");
            let dir = root.join("data").join(&id).join("works");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(book, dir.join(book.file_name().unwrap())).unwrap();
            PersonaId::parse(&id).unwrap()
        })
        .collect()
}

fn answer(request: &Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let data: Vec<Value> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, _)| json!({ "object": "embedding", "index": index, "embedding": vec![0.5f32; DIMENSION] }))
        .collect();
    ResponseTemplate::new(200)
        .set_body_json(json!({ "object": "list", "data": data, "model": body["model"] }))
}

async fn run(corpus: PathBuf, latency: Duration) {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(move |request: &Request| answer(request).set_delay(latency))
        .mount(&server)
        .await;
    println!(
        "endpoint: {} ms a call; batches of at most {MAX_BATCH}, {MAX_IN_FLIGHT} calls in flight; {PERSONAS} personas at once",
        latency.as_millis()
    );
    for linger_ms in [None, Some(0), Some(50)] {
        let scratch = tempfile::tempdir().unwrap();
        let personas = lay_out(&corpus, &scratch.path().join("corpus"));
        let base_url = format!("{}/v1", server.uri());
        // `ENGINE__...` variables apply too, to try other settings.
        let inputs = ConfigInputs {
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("ENGINE__"))
                .collect(),
            ..ConfigInputs::default()
        };
        let mut inputs = inputs;
        if let Some(ms) = linger_ms {
            inputs = inputs.with_override("embedding.linger_ms", ms.to_string());
        }
        let settings = Settings::load(
            &inputs
                .with_override(
                    "data_root",
                    scratch.path().join("corpus").display().to_string(),
                )
                .with_override(
                    "database.url",
                    format!(
                        "sqlite://{}?mode=rwc",
                        scratch.path().join("jobs.db").display()
                    ),
                )
                .with_override(
                    "store.path",
                    scratch.path().join("vectors.db").display().to_string(),
                )
                .with_override("embedding.provider", "openai")
                .with_override("embedding.base_url", base_url)
                .with_override("embedding.dimensions", DIMENSION.to_string())
                .with_override("embedding.max_batch_inputs", MAX_BATCH.to_string())
                .with_override("embedding.max_in_flight", MAX_IN_FLIGHT.to_string())
                .with_override("worker.concurrency", PERSONAS.to_string()),
        )
        .unwrap();
        let linger = settings.embedding.linger();
        let engine = Engine::start(settings).await.unwrap();
        let calls_before = server.received_requests().await.unwrap_or_default().len();
        let started = Instant::now();
        let runs = personas
            .iter()
            .map(|p| engine.run(RunRequest::new(p.clone(), &[Kind::Works])));
        let outcomes = futures::future::join_all(runs).await;
        let elapsed = started.elapsed();
        let mut chunks = 0u64;
        for outcome in outcomes {
            let outcome = outcome.unwrap();
            assert!(outcome.succeeded(), "{outcome:#?}");
            chunks += outcome
                .jobs
                .iter()
                .map(|j| j.result.as_ref().unwrap().vectors)
                .sum::<u64>();
        }
        let requests = server.received_requests().await.unwrap_or_default();
        let calls = requests.len() - calls_before;
        if std::env::var_os("SHOW_CALLS").is_some() {
            let sizes: Vec<usize> = requests[calls_before..]
                .iter()
                .map(|r| {
                    serde_json::from_slice::<Value>(&r.body).unwrap()["input"]
                        .as_array()
                        .unwrap()
                        .len()
                })
                .collect();
            println!("call sizes: {sizes:?}");
        }
        let ideal_calls = (chunks as usize).div_ceil(MAX_BATCH);
        let ideal = latency.mul_f64(ideal_calls as f64 / MAX_IN_FLIGHT as f64);
        println!(
            "linger {:>2} ms{}: {chunks} chunks in {calls} calls (ideal {ideal_calls}), {:.3} s vs ideal {:.3} s: ratio {:.2} (target 1.25)",
            linger.as_millis(),
            if linger_ms.is_none() { " (default)" } else { "" },
            elapsed.as_secs_f64(),
            ideal.as_secs_f64(),
            elapsed.as_secs_f64() / ideal.as_secs_f64()
        );
    }
}
