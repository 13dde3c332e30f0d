//! Ingestion throughput on the embedded defaults (SQLite jobs database, embedded vector store,
//! local hashing embedder): the whole pipeline on a real corpus, and each stage alone, so the
//! figures say where the time goes. Prints MB/s, chunks/s and peak memory.
//!
//!     cargo bench --bench ingest_throughput [-- PERSONA]   (default mark-twain)
//!
//! The corpus is `../shared/corpus` beside the checkout, or `PERSONA_INGEST_CORPUS`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::embed::{EmbeddingProvider, HashingEmbedder};
use persona_ingest::pipeline::Engine;
use persona_ingest::record::Record;
use persona_ingest::sources::{Chunk, FileSources, SourceFactory};
use persona_ingest::store::{CollectionSpec, EmbeddedStore, VectorStore};
use persona_ingest::{Kind, PersonaId};

const RUNS: usize = 3;

fn main() {
    let persona = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "mark-twain".into());
    let corpus = std::env::var_os("PERSONA_INGEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let persona = PersonaId::parse(&persona).expect("a persona id");
    actix::System::new().block_on(run(corpus, persona));
}

/// The defaults, `ENGINE__...` variables (to try other settings), and this run's paths.
fn bench_settings(corpus: &std::path::Path, dir: &std::path::Path) -> Settings {
    let env = ConfigInputs {
        env: std::env::vars()
            .filter(|(k, _)| k.starts_with("ENGINE__"))
            .collect(),
        ..ConfigInputs::default()
    };
    Settings::load(
        &env.with_override("data_root", corpus.display().to_string())
            .with_override(
                "database.url",
                format!("sqlite://{}?mode=rwc", dir.join("jobs.db").display()),
            )
            .with_override("store.path", dir.join("vectors.db").display().to_string()),
    )
    .expect("settings")
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

async fn run(corpus: PathBuf, persona: PersonaId) {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let settings = bench_settings(&corpus, scratch.path());
    let sources = FileSources::new(Arc::new(settings.clone()));
    let works = sources.source(&persona, Kind::Works).expect("works source");
    let plan = works.plan().expect("the works are listed");
    let bytes = plan.total_bytes();
    println!(
        "corpus: {persona} works, {} files, {:.2} MB, in {}",
        plan.files.len(),
        bytes as f64 / 1e6,
        corpus.display()
    );

    // Stage 1: read, decode and chunk (one thread).
    let started = Instant::now();
    let mut chunks: Vec<Chunk> = Vec::new();
    for file in &plan.files {
        works.read(file, &mut chunks).expect("readable");
    }
    let read = started.elapsed();
    println!(
        "read+chunk      {:>8.1} MB/s  {:>6} chunks in {:>6.3} s (one thread)",
        mb_per_s(bytes, read),
        chunks.len(),
        read.as_secs_f64()
    );

    // Stage 2: embed with the local hashing embedder (one thread).
    let embedder = HashingEmbedder::new(settings.embedding.vector_dimension().unwrap());
    let started = Instant::now();
    let vectors: Vec<Vec<f32>> = chunks.iter().map(|c| embedder.embed_one(&c.text)).collect();
    let embed = started.elapsed();
    println!(
        "embed           {:>8.1} MB/s  {:>6.0} chunks/s (one thread, dimension {})",
        mb_per_s(bytes, embed),
        chunks.len() as f64 / embed.as_secs_f64(),
        embedder.dimension()
    );

    // Stage 3: upsert into the embedded store, in the writer's batch size.
    let store = EmbeddedStore::open(&scratch.path().join("stage.db"))
        .await
        .expect("store");
    let spec = CollectionSpec {
        name: "bench_works".into(),
        embedding_model: embedder.model().into(),
        dimension: embedder.dimension(),
    };
    let collection = store.ensure_collection(&spec).await.expect("collection");
    let records: Vec<Record> = chunks
        .iter()
        .zip(vectors)
        .map(|(c, v)| Record {
            id: format!("{}:{}", c.source, c.chunk_index),
            document: c.text.clone(),
            metadata: c.metadata.clone(),
            embedding: v,
        })
        .collect();
    let started = Instant::now();
    for batch in records.chunks(settings.ingest.window_chunks) {
        store.upsert(&collection, batch).await.expect("upsert");
    }
    let upsert = started.elapsed();
    println!(
        "store upsert    {:>8.1} MB/s  {:>6.0} records/s (batches of {})",
        mb_per_s(bytes, upsert),
        records.len() as f64 / upsert.as_secs_f64(),
        settings.ingest.window_chunks
    );
    drop(records);
    drop(chunks);

    // The whole pipeline, from a fresh database and store each run.
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::start(bench_settings(&corpus, dir.path()))
            .await
            .expect("engine");
        let started = Instant::now();
        let outcome = engine
            .ingest(persona.clone(), &[Kind::Works])
            .await
            .expect("outcome");
        let elapsed = started.elapsed();
        assert!(outcome.succeeded(), "{outcome:#?}");
        let vectors = outcome.jobs[0].result.as_ref().expect("completed").vectors;
        println!(
            "pipeline run {}  {:>8.1} MB/s  {:>6.0} chunks/s  {:>6} vectors in {:.3} s",
            run + 1,
            mb_per_s(bytes, elapsed),
            vectors as f64 / elapsed.as_secs_f64(),
            vectors,
            elapsed.as_secs_f64()
        );
        runs.push(elapsed);
    }
    runs.sort();
    let median = runs[runs.len() / 2];
    println!(
        "\nend to end (median of {RUNS}): {:.1} MB/s ({:.3} s for {:.2} MB) on {} cores; target 50 MB/s",
        mb_per_s(bytes, median),
        median.as_secs_f64(),
        bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(peak) = persona_ingest::cli::peak_rss_bytes() {
        println!("peak resident memory of this process: {:.1} MB (stage 1 holds every chunk at once; the pipeline does not)", peak as f64 / 1e6);
    }
}
