//! The `persona-ingest` binary as a newcomer runs it: in an empty directory, on the embedded
//! defaults, with no server.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

/// The binary in `dir`, with an environment of nothing but PATH and HOME.
pub fn persona_ingest(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_persona-ingest"));
    command.current_dir(dir).args(args).env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(var) {
            command.env(var, value);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ingest_status_and_query_the_example_persona() {
    let dir = tempfile::tempdir().unwrap();
    let examples = examples_root();
    let root = examples.to_str().unwrap();

    let out = persona_ingest(dir.path(), &["ingest", "--data-root", root, "--all"], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("twain-sampler_works") && stdout.contains("1 persona(s)"),
        "{stdout}"
    );
    assert!(
        dir.path().join("persona-ingest.db").exists(),
        "SQLite in the working directory"
    );
    assert!(
        dir.path().join("persona-ingest.vectors.db").exists(),
        "the embedded store too"
    );

    let out = persona_ingest(dir.path(), &["status"], &[]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("twain-sampler   active"),
        "{}",
        text(&out.stdout)
    );

    let out = persona_ingest(dir.path(), &["status", "twain-sampler", "--json"], &[]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = status["jobs"][0]["id"].as_str().unwrap().to_owned();
    let out = persona_ingest(dir.path(), &["status", &job_id], &[]);
    assert!(
        text(&out.stdout).contains("status        completed"),
        "{}",
        text(&out.stdout)
    );

    let out = persona_ingest(
        dir.path(),
        &[
            "query",
            "twain-sampler",
            "When in doubt",
            "--kind",
            "quotes",
            "-k",
            "1",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("When in doubt, tell the truth."),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn json_summary_reports_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let root = examples_root();
    let out = persona_ingest(
        dir.path(),
        &[
            "ingest",
            "twain-sampler",
            "--only",
            "quotes,profile",
            "--json",
            "--data-root",
            root.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["succeeded"], true);
    let jobs = summary["personas"][0]["jobs"].as_array().unwrap();
    let kinds: Vec<&str> = jobs.iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["profile", "quotes"]);
    assert_eq!(jobs[1]["vectors"], 12);
}

#[test]
fn bad_ids_and_bad_settings_exit_2_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = persona_ingest(dir.path(), &["ingest", "../../etc"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid persona id \"../../etc\""),
        "{}",
        text(&out.stderr)
    );

    let out = persona_ingest(
        dir.path(),
        &["status"],
        &[("ENGINE__CHUNKING__TARGET_TOKENS", "lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("chunking.target_tokens"),
        "{}",
        text(&out.stderr)
    );

    let out = persona_ingest(
        dir.path(),
        &["status"],
        &[("ENGINE__EMBEDDING__PROVIDER", "telepathy")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("embedding.provider"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_failed_persona_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = persona_ingest(dir.path(), &["ingest", "nobody", "--data-root", "."], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("error: nobody failed: failed: profile (persona nobody not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_50_mb_single_line_file_is_ingested_in_bounded_memory() {
    let world = World::new();
    let line: String = (0..10_000_000)
        .map(|i| ["river ", "pilot ", "fog "][i % 3])
        .collect();
    assert!(line.len() >= 50_000_000);
    world.write("data/huge/works/one-line.txt", &line);
    drop(line);
    let db = world.db_url();
    let store = world.store_path();
    let out = persona_ingest(
        world.dir.path(),
        &[
            "ingest",
            "huge",
            "--only",
            "works",
            "--json",
            "--data-root",
            world.data_root.to_str().unwrap(),
        ],
        &[
            ("DATABASE_URL", &db),
            ("ENGINE__STORE__PATH", store.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vectors = summary["personas"][0]["jobs"][0]["vectors"]
        .as_u64()
        .unwrap();
    assert!(vectors > 33_000, "{vectors} chunks of at most 1600 bytes");
    // A copy of the whole file would take 50 MB on its own. The binary alone (with the minilm
    // embedder's runtime linked in) measured 34.3 MB here, a little more beside the rest of the
    // suite; the manifest row of this one file (33,000 chunk hashes, 0.9 MB as JSON, copied on
    // its way into SQLite) took it to 41-42 MB; with the dashboard and its monitor linked in,
    // 44.1-44.7 MB alone and 46.0-46.4 MB beside other tests on the two cores (2026-12-04).
    // 48 MB leaves that room and still proves the file is streamed (a copy would add 50).
    let peak = summary["peak_rss_bytes"].as_u64().unwrap();
    eprintln!("peak resident memory: {peak} bytes");
    assert!(peak < 48_000_000, "peak resident memory {peak} bytes");
}

#[test]
fn processes_starting_at_once_on_a_new_database_all_start() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = ["migrate", "status", "migrate", "status"]
            .iter()
            .map(|command| {
                let mut c = Command::new(env!("CARGO_BIN_EXE_persona-ingest"));
                c.current_dir(dir.path()).arg(command).env_clear();
                c.env("PATH", std::env::var("PATH").unwrap_or_default());
                c.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    }
}

#[test]
fn json_logs_carry_the_persona_kind_and_job_id_of_each_job_line() {
    let dir = tempfile::tempdir().unwrap();
    let examples = examples_root();
    let args = [
        "--log",
        "info",
        "--log-format",
        "json",
        "ingest",
        "--data-root",
        examples.to_str().unwrap(),
        "--json",
        "twain-sampler",
    ];
    let out = persona_ingest(dir.path(), &args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let completed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "job completed")
        .collect();
    assert_eq!(completed.len(), 3, "{lines:#?}");
    for job in summary["personas"][0]["jobs"].as_array().unwrap() {
        let line = completed
            .iter()
            .find(|l| l["span"]["job_id"] == job["job_id"])
            .unwrap_or_else(|| panic!("no line for {job}"));
        assert_eq!(line["span"]["persona"], "twain-sampler");
        assert_eq!(line["span"]["kind"], job["kind"]);
        assert_eq!(line["vectors"], job["vectors"]);
        assert_eq!(line["level"], "INFO");
    }
    // A closed stderr (`2>&1 | head`) is not a reason to fail.
    let mut command = Command::new(env!("CARGO_BIN_EXE_persona-ingest"));
    let mut child = command
        .current_dir(dir.path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[actix::test]
async fn ingest_retries_jobs_that_failed_only_transiently_when_asked() {
    let root = examples_root().to_str().unwrap().to_owned();
    for (retries, succeeds) in [("0", false), ("2", true)] {
        let server = crate::worker_kit::embedder_down_for(1).await;
        let base = format!("{}/v1", server.uri());
        let root = root.clone();
        let out = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let args = [
                "ingest",
                "twain-sampler",
                "--only",
                "profile",
                "--json",
                "--retries",
                retries,
                "--data-root",
                &root,
            ];
            let env = [
                ("ENGINE__EMBEDDING__PROVIDER", "openai"),
                ("ENGINE__EMBEDDING__BASE_URL", base.as_str()),
                ("ENGINE__EMBEDDING__DIMENSIONS", "8"),
                ("ENGINE__EMBEDDING__MAX_RETRIES", "0"),
                ("ENGINE__WORKER__RETRY_DELAY", "0.2"),
                ("OPENAI_API_KEY", "sk-test"),
            ];
            persona_ingest(dir.path(), &args, &env)
        })
        .await
        .unwrap();
        assert_eq!(
            out.status.success(),
            succeeds,
            "--retries {retries}: {}",
            text(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["succeeded"], succeeds, "{summary}");
        if succeeds {
            assert!(text(&out.stderr).contains("running the failed jobs again"));
            assert_eq!(summary["personas"][0]["jobs"][0]["vectors"], 4);
        }
    }
}

#[actix::test]
async fn two_ingests_of_one_persona_take_turns_and_no_wait_exits_3() {
    let server = crate::worker_kit::slow_embedder(std::time::Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let root = examples_root().to_str().unwrap().to_owned();
    let base = format!("{}/v1", server.uri());
    let spawn = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_persona-ingest"));
        command
            .current_dir(dir.path())
            .args(["ingest", "twain-sampler", "--data-root", &root])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ENGINE__EMBEDDING__PROVIDER", "openai")
            .env("ENGINE__EMBEDDING__BASE_URL", &base)
            .env("ENGINE__EMBEDDING__DIMENSIONS", "8")
            .env("ENGINE__EMBEDDING__MAX_BATCH_INPUTS", "2")
            .env("ENGINE__EMBEDDING__LINGER_MS", "0")
            .env("ENGINE__INGEST__WINDOW_CHUNKS", "2")
            .env("ENGINE__INGEST__WINDOWS_IN_FLIGHT", "1")
            .env("OPENAI_API_KEY", "sk-test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command.spawn().unwrap()
    };
    let first = spawn(&["--json"]);
    // Once the first holds the lock (its run under way), a second waits, a third will not.
    crate::worker_kit::wait_for(
        "the first run under way",
        std::time::Duration::from_secs(30),
        || async { (crate::worker_kit::embedding_calls(&server).await >= 2).then_some(()) },
    )
    .await;
    let second = spawn(&["--json"]);
    let third = spawn(&["--no-wait"]);
    let outputs = tokio::task::spawn_blocking(move || {
        [first, second, third].map(|child| child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let [first, second, third] = outputs;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        second.status.success(),
        "no false failure: {}",
        text(&second.stderr)
    );
    assert!(
        text(&second.stderr).contains("twain-sampler is being ingested by ingest:"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(third.status.code(), Some(3), "{}", text(&third.stderr));
    assert!(text(&third.stderr).contains("is being ingested by ingest:"));
}
