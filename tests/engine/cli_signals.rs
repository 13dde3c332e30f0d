//! `persona-ingest ingest` stopped by a signal, as a user's Ctrl-C or a supervisor's SIGTERM
//! stops it: nothing left `processing`.

use std::process::Command;

use persona_ingest::JobStatus;

use crate::cli::text;
use crate::common::*;

/// `persona-ingest ingest twain-sampler` in `dir` against the slow stand-in `server`, in
/// batches of two; stderr piped.
fn ingest_twain_sampler(dir: &std::path::Path, server: &wiremock::MockServer) -> Command {
    let root = examples_root().to_str().unwrap().to_owned();
    let mut command = Command::new(env!("CARGO_BIN_EXE_persona-ingest"));
    command
        .current_dir(dir)
        .args(["ingest", "twain-sampler", "--json", "--data-root", &root])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ENGINE__EMBEDDING__PROVIDER", "openai")
        .env(
            "ENGINE__EMBEDDING__BASE_URL",
            format!("{}/v1", server.uri()),
        )
        .env("ENGINE__EMBEDDING__DIMENSIONS", "8")
        .env("ENGINE__EMBEDDING__MAX_BATCH_INPUTS", "2")
        .env("ENGINE__EMBEDDING__LINGER_MS", "0")
        .env("OPENAI_API_KEY", "sk-test")
        .stderr(std::process::Stdio::piped());
    command
}

/// Ctrl-C (or SIGTERM) on `ingest` mid-run: its jobs end failed naming the signal, none is left
/// `processing`, the persona's run lock is free for the next run; exit code 130.
#[actix::test]
async fn an_interrupted_ingest_leaves_no_job_processing() {
    for signal in ["INT", "TERM"] {
        let server = crate::worker_kit::slow_embedder(std::time::Duration::from_millis(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let child = ingest_twain_sampler(dir.path(), &server)
            // Windows of two chunks: some are written before the signal.
            .env("ENGINE__INGEST__WINDOW_CHUNKS", "2")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        crate::worker_kit::wait_for(
            "the run under way",
            std::time::Duration::from_secs(30),
            || {
                let server = &server;
                async move { (crate::worker_kit::embedding_calls(server).await >= 6).then_some(()) }
            },
        )
        .await;
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
        let db = jobs_database(dir.path()).await;
        let rows = latest_jobs(&db, "twain-sampler").await;
        assert!(!rows.is_empty());
        assert_nothing_processing(&db).await;
        let failed: Vec<_> = rows
            .iter()
            .filter(|r| r.status == JobStatus::Failed)
            .collect();
        assert!(!failed.is_empty(), "{rows:?}");
        let store = persona_ingest::store::EmbeddedStore::open(
            &dir.path().join("persona-ingest.vectors.db"),
        )
        .await
        .unwrap();
        for row in failed {
            let error = row.error_message.as_deref().unwrap_or_default();
            assert!(
                error.contains(&format!("interrupted by SIG{signal}")),
                "{error}"
            );
            // The row says what the store holds after the interruption.
            use persona_ingest::store::VectorStore;
            let collection = format!("twain-sampler_{}", row.kind);
            let held = match store.collection(&collection).await.unwrap() {
                Some(info) => store.count(&info).await.unwrap(),
                None => 0,
            };
            assert_eq!(row.total_vectors as u64, held, "{row:?}");
        }
    }
}

/// SIGKILL on `ingest` mid-run (nothing can be recorded): the next `ingest` of the persona on
/// this machine does not wait out the dead process's lock, marks the jobs it left processing
/// failed, and runs.
#[actix::test]
async fn the_next_ingest_after_a_killed_one_takes_over_at_once() {
    let server = crate::worker_kit::slow_embedder(std::time::Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let ingest = || {
        let mut command = ingest_twain_sampler(dir.path(), &server);
        command.stdout(std::process::Stdio::piped());
        command
    };
    let mut killed = ingest().spawn().unwrap();
    crate::worker_kit::wait_for(
        "the run under way",
        std::time::Duration::from_secs(30),
        || {
            let server = &server;
            async move { (crate::worker_kit::embedding_calls(server).await >= 2).then_some(()) }
        },
    )
    .await;
    let db = jobs_database(dir.path()).await;
    // Its jobs' starts are written with the next update somebody waits for, or the next
    // progress flush: killed once they are.
    crate::worker_kit::wait_for(
        "its jobs recorded processing",
        std::time::Duration::from_secs(30),
        || {
            let db = &db;
            async move {
                let rows = persona_ingest::jobs::jobs_of_persona(db, "twain-sampler")
                    .await
                    .unwrap();
                rows.iter()
                    .any(|r| r.status == JobStatus::Processing)
                    .then_some(())
            }
        },
    )
    .await;
    killed.kill().unwrap();
    killed.wait().unwrap();

    let mut next = ingest();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || next.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("whose process is gone: taking over"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < persona_ingest::run_lock::LEASE - std::time::Duration::from_secs(5),
        "it waited for the dead process's lease: {:?}",
        started.elapsed()
    );
    assert_nothing_processing(&db).await;
    let rows = persona_ingest::jobs::jobs_of_persona(&db, "twain-sampler")
        .await
        .unwrap();
    assert!(
        rows.iter().any(|r| r
            .error_message
            .as_deref()
            .is_some_and(|e| e.contains("stopped before it ended"))),
        "{rows:?}"
    );
}

/// The jobs database `ingest` writes in `dir`.
async fn jobs_database(dir: &std::path::Path) -> sea_orm::DatabaseConnection {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.join("persona-ingest.db").display()
    );
    persona_ingest::db::connect(&persona_ingest::config::DatabaseSettings {
        url,
        ..World::new().settings(&[]).database
    })
    .await
    .unwrap()
}
