//! Incremental re-ingestion measured against a real Chroma server through an OpenAI-compatible
//! stand-in that answers each call after `LATENCY`: persona-ingest's first run of a persona and
//! its re-run of the unchanged corpus (time, embedding calls, upserts), then LangChain's
//! `index()` with its SQL record manager doing the same on the same corpus, server and stand-in
//! (`benches/python/langchain_index.py`, in a virtualenv of its own made here when missing:
//! `.cache/langchain-venv`). Prints all four runs side by side; the target is a re-run under a
//! tenth of the first run's time, with no call and no upsert. It also prints the first run beside
//! its floor (`benches/python/chroma_floor.py`: the same records written again by Chroma's own
//! Python client in batches of the server's `max_batch_size`; the target is 1.05x), and the
//! persona's works ingested on the embedded defaults in MB/s (the target is 50 MB/s), so that one
//! run prints both of #15's speed figures.
//!
//!     cargo bench --bench incremental [-- PERSONA]   (default mark-twain)
//!
//! Needs `../shared/corpus`, the project's Chroma (`scripts/python-env`, or
//! `PERSONA_INGEST_CHROMA`) and PyPI for the first LangChain run.

#[path = "../tests/engine/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use persona_ingest::actors::store_writer::WriterCounters;
use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::pipeline::Engine;
use persona_ingest::{testkit, Kind, PersonaId};
use servers::Profile;
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request};

/// What each embedding call takes at the stand-in, as a nearby server would.
const LATENCY: Duration = Duration::from_millis(50);

fn main() {
    let persona = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "mark-twain".into());
    actix::System::new().block_on(run(PersonaId::parse(&persona).expect("a persona id")));
}

/// One run's figures.
struct Figures {
    seconds: f64,
    calls: usize,
    writes: String,
}

async fn run(persona: PersonaId) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = std::env::var_os("PERSONA_INGEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/corpus"));
    // Measured first, while no Chroma server or LangChain run shares the two cores.
    let (mb_per_s, seconds, mb) = embedded_defaults(&corpus, &persona).await;
    let scratch = tempfile::tempdir().unwrap();
    let (_chroma, port) = start_chroma(&root, scratch.path()).await;
    let stand_in = MockServer::start().await;
    Mock::given(path_regex("/embeddings$"))
        .respond_with(|request: &Request| Profile::OpenAi.answer(request).set_delay(LATENCY))
        .mount(&stand_in)
        .await;
    let base_url = format!("{}/v1", stand_in.uri());
    let settings = Settings::load(
        &ConfigInputs::default()
            .with_override("data_root", corpus.display().to_string())
            .with_override(
                "database.url",
                format!(
                    "sqlite://{}?mode=rwc",
                    scratch.path().join("jobs.db").display()
                ),
            )
            .with_override("store.kind", "chroma")
            .with_override("store.url", format!("http://127.0.0.1:{port}"))
            .with_override("embedding.provider", "openai")
            .with_override("embedding.base_url", base_url.clone())
            .with_override("embedding.model", Profile::OpenAi.model()),
    )
    .unwrap();
    let batch = settings.embedding.max_batch_inputs;
    let engine = Engine::start(settings).await.unwrap();
    let calls = || async { embedding_calls(&stand_in).await };

    let mut ours = Vec::new();
    for _ in 0..2 {
        let (calls_before, upserts_before) = (calls().await, upserts(&engine).await);
        let started = Instant::now();
        let outcome = engine.ingest(persona.clone(), &Kind::ALL).await.unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert!(outcome.succeeded(), "{:?}", outcome.error);
        let records: u64 = outcome
            .jobs
            .iter()
            .map(|j| j.result.as_ref().map_or(0, |s| s.counts.chunks_embedded))
            .sum();
        ours.push(Figures {
            seconds,
            calls: calls().await - calls_before,
            writes: format!(
                "{} upserts, {records} records",
                upserts(&engine).await - upserts_before
            ),
        });
    }

    // The floor: the records of the first run written again by Chroma's own client.
    let collections: Vec<String> = Kind::ALL
        .iter()
        .map(|k| engine.collection_name(&persona, *k))
        .collect();
    let floor = tokio::task::spawn_blocking({
        let python = root.join(".venv/bin/python");
        let script = root.join("benches/python/chroma_floor.py");
        move || {
            Command::new(python)
                .arg(script)
                .args(["127.0.0.1", &port.to_string()])
                .args(&collections)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        floor.status.success(),
        "{}",
        String::from_utf8_lossy(&floor.stderr)
    );
    let floor: serde_json::Value = serde_json::from_slice(&floor.stdout).unwrap();
    let floor_seconds = floor["seconds"].as_f64().unwrap();

    let python = langchain_venv(&root);
    let script = root.join("benches/python/langchain_index.py");
    let args = serde_json::json!({
        "corpus": corpus, "persona": persona.as_str(), "host": "127.0.0.1", "port": port,
        "base_url": base_url, "model": Profile::OpenAi.model(), "batch": batch,
    });
    let mut theirs = Vec::new();
    for cleanup in ["scoped_full", "incremental"] {
        let mut args = args.clone();
        args["cleanup"] = cleanup.into();
        args["record_db"] = scratch
            .path()
            .join(format!("{cleanup}.db"))
            .display()
            .to_string()
            .into();
        for _ in 0..2 {
            theirs.push(langchain_run(&python, &script, &args, &stand_in).await);
        }
    }

    println!(
        "{persona}: Chroma server, OpenAI-compatible stand-in answering after {} ms, batches of {batch}",
        LATENCY.as_millis()
    );
    println!(
        "| run | persona-ingest | LangChain index(), cleanup scoped_full | LangChain index(), cleanup incremental |"
    );
    println!("| --- | --- | --- | --- |");
    let cell = |f: &Figures| format!("{:.2} s, {} calls, {}", f.seconds, f.calls, f.writes);
    for (at, name) in ["first", "unchanged re-run"].iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} |",
            cell(&ours[at]),
            cell(&theirs[at]),
            cell(&theirs[2 + at])
        );
    }
    println!(
        "first run against the floor (the same {} records written by Chroma's Python client in batches of {}): {:.2} s / {floor_seconds:.2} s = {:.3}x (target 1.05x)",
        floor["records"],
        floor["batch"],
        ours[0].seconds,
        ours[0].seconds / floor_seconds
    );
    println!(
        "re-run / first run: persona-ingest {:.3} (target under 0.1); LangChain {:.3} (scoped_full), {:.3} (incremental)",
        ours[1].seconds / ours[0].seconds,
        theirs[1].seconds / theirs[0].seconds,
        theirs[3].seconds / theirs[2].seconds
    );
    println!(
        "first run of its works on the embedded defaults (local hashing, embedded store), median of 3: {mb:.2} MB in {seconds:.3} s = {mb_per_s:.1} MB/s (target 50 MB/s; ingest_throughput shows each stage)"
    );
}

/// The persona's works ingested on the embedded defaults from a fresh database and store, three
/// times: (MB/s, seconds, MB) of the median run.
async fn embedded_defaults(corpus: &Path, persona: &PersonaId) -> (f64, f64, f64) {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load(
            &ConfigInputs::default()
                .with_override("data_root", corpus.display().to_string())
                .with_override(
                    "database.url",
                    format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display()),
                )
                .with_override(
                    "store.path",
                    dir.path().join("vectors.db").display().to_string(),
                ),
        )
        .unwrap();
        let engine = Engine::start(settings).await.unwrap();
        let started = Instant::now();
        let outcome = engine
            .ingest(persona.clone(), &[Kind::Works])
            .await
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert!(outcome.succeeded(), "{:?}", outcome.error);
        let bytes = outcome.jobs[0].result.as_ref().unwrap().bytes as f64;
        runs.push((bytes / 1e6 / seconds, seconds, bytes / 1e6));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[1]
}

/// One run of `langchain_index.py`, with the calls it made at the stand-in.
async fn langchain_run(
    python: &Path,
    script: &Path,
    args: &serde_json::Value,
    stand_in: &MockServer,
) -> Figures {
    let before = embedding_calls(stand_in).await;
    let out = tokio::task::spawn_blocking({
        let (python, script, args) = (python.to_owned(), script.to_owned(), args.to_string());
        move || Command::new(python).arg(script).arg(args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = out.stdout.split(|b| *b == b'\n').next().unwrap();
    let result: serde_json::Value = serde_json::from_slice(line).unwrap();
    Figures {
        seconds: result["seconds"].as_f64().unwrap(),
        calls: embedding_calls(stand_in).await - before,
        writes: format!(
            "{} added, {} skipped, {} deleted",
            result["num_added"], result["num_skipped"], result["num_deleted"]
        ),
    }
}

async fn embedding_calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| !String::from_utf8_lossy(&r.body).contains("dimension probe"))
        .count()
}

async fn upserts(engine: &Engine) -> u64 {
    testkit::observe::<_, WriterCounters>(&engine.writer)
        .await
        .upserts
}

/// A Chroma server of the project's on a free port, stopped when the child is dropped.
struct Chroma(Child);

impl Drop for Chroma {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_chroma(root: &Path, dir: &Path) -> (Chroma, u16) {
    let binary = std::env::var_os("PERSONA_INGEST_CHROMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/chroma"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&binary)
        .args(["run", "--path"])
        .arg(dir.join("chroma"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/python-env)", binary.display()));
    let chroma = Chroma(child);
    let heartbeat = format!("http://127.0.0.1:{port}/api/v2/heartbeat");
    for _ in 0..200 {
        if reqwest::get(&heartbeat)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (chroma, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Chroma did not start on port {port}");
}

/// `.cache/langchain-venv`'s Python, the virtualenv made (or brought up to date) first.
fn langchain_venv(root: &Path) -> PathBuf {
    let venv = root.join(".cache/langchain-venv");
    let requirements = root.join("benches/python/langchain-requirements.txt");
    let stamp = venv.join(".requirements");
    let python = venv.join("bin/python");
    let wanted = std::fs::read(&requirements).unwrap();
    if std::fs::read(&stamp).ok().as_deref() != Some(&wanted[..]) {
        eprintln!("making {} (LangChain from PyPI)", venv.display());
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install -r {}",
            requirements.display()
        );
        std::fs::write(&stamp, wanted).unwrap();
    }
    python
}
