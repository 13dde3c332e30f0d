//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs when missing), driven over WebDriver, loads
//! the page while a persona ingests, sees its jobs' progress bars move and reach 100 and the
//! persona turn active, and saves a screenshot to `target/test-artifacts/dashboard.png`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;
use crate::worker_kit::*;

/// `chromedriver` on a port of its own; killed when dropped.
struct ChromeDriver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl ChromeDriver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        wait_for("chromedriver", Duration::from_secs(30), || async {
            let status = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await;
            let status: Value = status.ok()?.json().await.ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    /// A headless Chromium session.
    async fn session(&self) -> String {
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
            },
        }}});
        let session = self
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await;
        session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows of each persona: its status and each job's progress.
const READ_PAGE: &str = r#"
const personas = {};
for (const p of document.querySelectorAll(".persona")) {
  const jobs = {};
  for (const j of p.querySelectorAll(".job")) jobs[j.dataset.kind] = Number(j.dataset.progress);
  personas[p.dataset.persona] = { status: p.dataset.status, jobs };
}
return personas;
"#;

#[actix::test]
async fn the_dashboard_shows_a_persona_ingesting_to_the_end() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(300)).await;
    let port = free_port();
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[
        ("ENGINE__HTTP__LISTEN", &format!("127.0.0.1:{port}")),
        ("ENGINE__HTTP__TOKEN", "t0ken"),
    ]));
    let _daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let page = format!("http://127.0.0.1:{port}/#token=t0ken");
    let driver = ChromeDriver::start().await;
    let session = driver.session().await;
    let at = |path: &str| format!("/session/{session}{path}");
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
    driver
        .call(
            reqwest::Method::POST,
            &at("/url"),
            Some(json!({ "url": page })),
        )
        .await;

    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, "twain-sampler").await;
    // Progress values the page showed for each kind, in order.
    let mut shown: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let started = Instant::now();
    loop {
        let read = json!({ "script": READ_PAGE, "args": [] });
        let personas = driver
            .call(reqwest::Method::POST, &at("/execute/sync"), Some(read))
            .await;
        let persona = &personas["twain-sampler"];
        if let Some(jobs) = persona["jobs"].as_object() {
            for (kind, progress) in jobs {
                let seen = shown.entry(kind.clone()).or_default();
                let progress = progress.as_i64().unwrap();
                if seen.last() != Some(&progress) {
                    seen.push(progress);
                }
            }
        }
        let done = persona["status"] == "active"
            && shown.len() == 3
            && shown.values().all(|s| s.last() == Some(&100));
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page never showed the run's end: {personas} {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let works = &shown["works"];
    assert!(
        works.iter().any(|p| *p > 0 && *p < 100),
        "the works bar moved while the run went on: {shown:?}"
    );

    let png = driver
        .call(reqwest::Method::GET, &at("/screenshot"), None)
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), png).unwrap();
    driver.call(reqwest::Method::DELETE, &at(""), None).await;
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}
