//! Redis as deployments give it, with the real Celery client on the other side: TLS
//! (`rediss://` with a certificate authority of the test's own, made with openssl) and a Unix
//! socket (`redis+socket://`), each on a redis-server the test starts; a URL that cannot be used
//! stops the daemon at start with exit 2 naming the key.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::worker_kit::*;

/// A redis-server of the test's own with the arguments given; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(args: &[&str]) -> Server {
    Server(
        Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server"),
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// A throwaway certificate authority and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=persona-ingest test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

/// Sends one profile task from the Celery client at `url` and reads its result.
const ROUND_TRIP: &str = r#"
import json, sys, uuid
from celery import Celery
url, queue = sys.argv[1], sys.argv[2]
app = Celery("workers", broker=url, backend=url)
r = app.send_task("workers.tasks.ingest_persona_profile", args=["twain-sampler", str(uuid.uuid4())], queue=queue)
print(json.dumps([r.get(timeout=30), r.status]))
"#;

fn round_trip(url: &str, queue: &str) -> Value {
    client(ROUND_TRIP, &[url, queue])
}

async fn until_up(url: &str) {
    wait_for(
        "redis-server to answer",
        Duration::from_secs(10),
        || async {
            let client = persona_ingest::urls::redis::client(url).ok()?;
            let mut con = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .ok()
        },
    )
    .await;
}

#[actix::test]
async fn the_daemon_and_the_celery_client_meet_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let port = free_port().to_string();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let _redis = server(&[
        "--port",
        "0",
        "--tls-port",
        &port,
        "--tls-cert-file",
        &path("redis.crt"),
        "--tls-key-file",
        &path("redis.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        path("ca.crt")
    );
    until_up(&url).await;
    let world = World::reading(examples_root());
    let names = Names::new();
    let daemon = Daemon::start(&world, &names, &url, &[]);
    assert_eq!(round_trip(&url, &names.queue), json!([4, "SUCCESS"]));
    // Celery's spelling, and no verification at all.
    let insecure = format!("rediss://127.0.0.1:{port}/0?ssl_cert_reqs=CERT_NONE");
    assert_eq!(round_trip(&insecure, &names.queue), json!([4, "SUCCESS"]));
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[actix::test]
async fn the_daemon_and_the_celery_client_meet_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock").display().to_string();
    let _redis = server(&["--port", "0", "--unixsocket", &socket]);
    let url = format!("redis+socket://{socket}?virtual_host=0");
    until_up(&url).await;
    let world = World::reading(examples_root());
    let names = Names::new();
    let daemon = Daemon::start(&world, &names, &url, &[]);
    assert_eq!(
        round_trip(&format!("redis+socket://{socket}"), &names.queue),
        json!([4, "SUCCESS"])
    );
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_url_that_cannot_be_used_stops_the_daemon_at_start_naming_the_key() {
    let world = World::reading(examples_root());
    let names = Names::new();
    for (var, url, key) in [
        ("REDIS_URL", "amqp://guest@localhost//", "redis.url"),
        (
            "REDIS_URL",
            "rediss://127.0.0.1:1/0?ssl_ca_certs=/no/such/ca.pem",
            "redis.url",
        ),
        (
            "CELERY_RESULT_BACKEND",
            "redis+socket:///tmp/x.sock?color=red",
            "results.url",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
            .args(["run", "--data-root", world.data_root.to_str().unwrap()])
            .env_clear()
            .envs(daemon_env(&world, &names, &redis_url()))
            .env(var, url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(key), "{url}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
