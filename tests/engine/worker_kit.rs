//! What the daemon tests share: `persona-ingest run` as a child process, a Redis server of a
//! test's own (to restart it), a slow embeddings endpoint (to catch work in the middle), the
//! result backend read as Celery's client reads it, and cleanup of a test's Redis keys. (Long
//! because every daemon test file shares it: one place for what they would each repeat.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;
use crate::openai::embeddings_response;

pub fn redis_url() -> String {
    std::env::var("PERSONA_INGEST_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

pub fn python() -> PathBuf {
    std::env::var_os("PERSONA_INGEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
        })
}

pub async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Runs a Python snippet of the web app's side with `args`; answers its JSON on stdout.
pub fn client(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Names of a test's own: its key prefix and queue.
pub struct Names {
    pub prefix: String,
    pub queue: String,
}

impl Names {
    pub fn new() -> Self {
        let prefix = format!("pi-test-{}", uuid::Uuid::new_v4().simple());
        let queue = format!("{prefix}-celery");
        Self { prefix, queue }
    }
}

/// `persona-ingest run` as a child process; killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// What it writes to stderr, read as it comes: a pipe nobody reads fills up and blocks
    /// the daemon's logging, and with it the daemon.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Daemon {
    /// Serves `names.queue` on `redis` for `world`, with `extra` environment variables.
    pub fn start(world: &World, names: &Names, redis: &str, extra: &[(String, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
            .args(["run", "--data-root", world.data_root.to_str().unwrap()])
            .env_clear()
            .envs(daemon_env(world, names, redis))
            .envs(extra.iter().cloned())
            .current_dir(world.dir.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        Self {
            child,
            stderr: Some(stderr),
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM; answers the exit code and what it wrote to stderr.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.code(), stderr)
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon whose embedding calls take `delay` each (so a run of the example persona lasts
/// seconds), serving HTTP on a port of its own (answered), with `extra` settings (a token...).
pub async fn slow_daemon_with_http(
    world: &World,
    names: &Names,
    delay: Duration,
    extra: &[(&str, &str)],
) -> (Daemon, MockServer, u16) {
    let embedder = slow_embedder(delay).await;
    let port = crate::common::free_port();
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[(
        "ENGINE__HTTP__LISTEN",
        &format!("127.0.0.1:{port}"),
    )]));
    env.extend(vars(extra));
    let daemon = Daemon::start(world, names, &redis_url(), &env);
    http_up(port).await;
    (daemon, embedder, port)
}

/// Waits until a daemon's HTTP server on `port` answers `/health`.
pub async fn http_up(port: u16) {
    wait_for(
        "the daemon's HTTP server",
        Duration::from_secs(30),
        || async {
            reqwest::get(format!("http://127.0.0.1:{port}/health"))
                .await
                .ok()
        },
    )
    .await;
}

/// Environment variables from pairs of names and values.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn daemon_env(world: &World, names: &Names, redis: &str) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("DATABASE_URL".into(), world.db_url()),
        (
            "ENGINE__STORE__PATH".into(),
            world.store_path().display().to_string(),
        ),
        ("REDIS_URL".into(), redis.into()),
        ("ENGINE__WORKER__QUEUES".into(), names.queue.clone()),
        ("ENGINE__REDIS__KEY_PREFIX".into(), names.prefix.clone()),
        // Tests run side by side: a test that wants the HTTP server gives it a port of its own.
        ("ENGINE__HTTP__LISTEN".into(), String::new()),
    ]
}

/// An embeddings endpoint answering every call after `delay`, so that a run of the example
/// persona takes seconds: `slow_embedder_env` makes the daemon send two texts a call.
pub async fn slow_embedder(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    answer_the_probe(&server).await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(move |request: &wiremock::Request| -> ResponseTemplate {
            embeddings_response(request).set_delay(delay)
        })
        .mount(&server)
        .await;
    server
}

/// The engine's start-up probe is answered at once, so that the calls a test counts or delays
/// are the jobs' own.
pub async fn answer_the_probe(server: &MockServer) {
    Mock::given(path("/v1/embeddings"))
        .and(wiremock::matchers::body_string_contains(PROBE))
        .respond_with(embeddings_response)
        .with_priority(1)
        .mount(server)
        .await;
}

/// The input of the engine's start-up probe.
const PROBE: &str = "dimension probe";

/// The embedding calls a stand-in received, the start-up probe and `GET /info` left out.
pub async fn embedding_calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .filter(|r| !String::from_utf8_lossy(&r.body).contains(PROBE))
        .count()
}

/// An embeddings endpoint down (503) for its first `down` calls, whatever they carry, then
/// answering at once.
pub async fn embedder_down_for(down: u64) -> MockServer {
    let server = MockServer::start().await;
    answer_the_probe(&server).await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(down)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(embeddings_response)
        .mount(&server)
        .await;
    server
}

pub fn slow_embedder_env(server: &MockServer) -> Vec<(String, String)> {
    [
        ("ENGINE__EMBEDDING__PROVIDER", "openai".to_owned()),
        (
            "ENGINE__EMBEDDING__BASE_URL",
            format!("{}/v1", server.uri()),
        ),
        ("ENGINE__EMBEDDING__DIMENSIONS", "8".into()),
        ("ENGINE__EMBEDDING__MAX_BATCH_INPUTS", "2".into()),
        ("ENGINE__EMBEDDING__LINGER_MS", "0".into()),
        ("ENGINE__INGEST__WINDOW_CHUNKS", "2".into()),
        ("ENGINE__INGEST__WINDOWS_IN_FLIGHT", "1".into()),
        ("OPENAI_API_KEY", "sk-test".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Sends `ingest_full_persona` for `persona` as the web app does, with new job ids; answers
/// the task id.
pub async fn send_full_persona(
    con: &mut MultiplexedConnection,
    queue: &str,
    persona: &str,
) -> String {
    let task_id = uuid::Uuid::new_v4().to_string();
    send_full_persona_as(con, queue, persona, &task_id).await;
    task_id
}

/// The same with `force=True`: everything is embedded again, changed or not.
pub async fn send_full_persona_forced(
    con: &mut MultiplexedConnection,
    queue: &str,
    persona: &str,
) -> String {
    let task_id = uuid::Uuid::new_v4().to_string();
    send_full_persona_with(con, queue, persona, &task_id, true).await;
    task_id
}

/// The same, under a task id of the caller's.
pub async fn send_full_persona_as(
    con: &mut MultiplexedConnection,
    queue: &str,
    persona: &str,
    task_id: &str,
) {
    send_full_persona_with(con, queue, persona, task_id, false).await
}

async fn send_full_persona_with(
    con: &mut MultiplexedConnection,
    queue: &str,
    persona: &str,
    task_id: &str,
    force: bool,
) {
    let mut kwargs = full_persona_kwargs(persona);
    if force {
        kwargs.insert("force".into(), Value::Bool(true));
    }
    let raw = persona_ingest::trigger::celery::encode(
        "workers.tasks.ingest_full_persona",
        task_id,
        &[],
        &kwargs,
        queue,
        "test@host",
    );
    push(con, queue, &[raw]).await;
}

/// `ingest_full_persona`'s keyword arguments as the web app sends them, with new job ids.
fn full_persona_kwargs(persona: &str) -> Map<String, Value> {
    let job_ids: Map<String, Value> = persona_ingest::Kind::ALL
        .iter()
        .map(|k| (k.to_string(), Value::from(uuid::Uuid::new_v4().to_string())))
        .collect();
    let mut kwargs = Map::new();
    kwargs.insert("persona_id".into(), persona.into());
    kwargs.insert("job_ids".into(), Value::Object(job_ids));
    kwargs
}

/// An `ingest_full_persona` message for `persona` due in `seconds` (a `countdown`), pushed as
/// the web app's client would; answers its task id.
pub async fn send_full_persona_in(
    con: &mut MultiplexedConnection,
    queue: &str,
    persona: &str,
    seconds: i64,
) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let kwargs = full_persona_kwargs(persona);
    let options = persona_ingest::trigger::celery::Options {
        eta: Some(chrono::Utc::now() + chrono::Duration::seconds(seconds)),
        ..Default::default()
    };
    let raw = persona_ingest::trigger::celery::encode_with(
        "workers.tasks.ingest_full_persona",
        &id,
        &[],
        &kwargs,
        queue,
        "test@host",
        &options,
    );
    push(con, queue, &[raw]).await;
    id
}

pub async fn push(con: &mut MultiplexedConnection, queue: &str, raws: &[String]) {
    let _: () = redis::cmd("LPUSH")
        .arg(queue)
        .arg(raws)
        .query_async(con)
        .await
        .unwrap();
}

/// The stored result of a task, as `AsyncResult` reads it.
pub async fn result_of(con: &mut MultiplexedConnection, task_id: &str) -> Option<Value> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(format!("celery-task-meta-{task_id}"))
        .query_async(con)
        .await
        .ok()?;
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the task ends, and with it the sub-tasks it answered (`ingest_full_persona`
/// answers its sub-task ids once the run is accepted; they end with their jobs); answers the
/// task's result.
pub async fn final_result(url: &str, task_id: &str, limit: Duration) -> Value {
    let con = connect(url).await;
    let ready = |found: &Value| {
        matches!(
            found["status"].as_str(),
            Some("SUCCESS" | "FAILURE" | "REVOKED")
        )
    };
    let started = Instant::now();
    let result = wait_for(&format!("task {task_id} to end"), limit, || {
        let mut con = con.clone();
        async move {
            let found = result_of(&mut con, task_id).await?;
            ready(&found).then_some(found)
        }
    })
    .await;
    let children: Vec<String> = result["children"]
        .as_array()
        .map(|children| {
            children
                .iter()
                .filter_map(|c| c.pointer("/0/0").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for child in children {
        let left = limit.saturating_sub(started.elapsed());
        wait_for(&format!("sub-task {child} to end"), left, || {
            let mut con = con.clone();
            let child = child.clone();
            async move {
                let found = result_of(&mut con, &child).await?;
                ready(&found).then_some(())
            }
        })
        .await;
    }
    result
}

/// The messages left in every in-flight list under `prefix`.
pub async fn in_flight(con: &mut MultiplexedConnection, prefix: &str) -> usize {
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:inflight:*"))
        .query_async(con)
        .await
        .unwrap();
    let mut left = 0;
    for list in lists {
        let n: usize = redis::cmd("LLEN").arg(list).query_async(con).await.unwrap();
        left += n;
    }
    left
}

/// Deletes the test's own keys, the queue bindings of Celery's client, and the results of
/// `task_ids` and their sub-tasks.
pub async fn forget(url: &str, prefix: &str, task_ids: &[&str]) {
    let mut con = connect(url).await;
    let mut keys = Vec::new();
    for pattern in [format!("{prefix}*"), format!("_kombu.binding*.{prefix}*")] {
        let found: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.extend(found);
    }
    for task_id in task_ids {
        keys.push(format!("celery-task-meta-{task_id}"));
        for kind in persona_ingest::Kind::ALL {
            let child = persona_ingest::trigger::task::subtask_id(task_id, kind);
            keys.push(format!("celery-task-meta-{child}"));
        }
    }
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut con)
        .await
        .unwrap();
}

/// A Redis server of the test's own, on its own port, persisting every write (append-only
/// file, fsync always) so that a restart keeps what a production Redis would keep.
pub struct OwnRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        redis.run().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub async fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
