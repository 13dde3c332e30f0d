//! The dashboard in a real browser (`browser.rs`): the overview loads while a persona ingests,
//! sees its jobs' progress bars move and reach 100 and the persona turn active, and saves a
//! screenshot to `target/test-artifacts/dashboard.png`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::{ChromeDriver, Screen};
use crate::common::*;
use crate::worker_kit::*;

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
    let (_daemon, _embedder, port) = slow_daemon_with_http(
        &world,
        &names,
        Duration::from_millis(300),
        &[("ENGINE__HTTP__TOKEN", "t0ken")],
    )
    .await;
    let page = format!("http://127.0.0.1:{port}/#token=t0ken");
    let driver = ChromeDriver::start().await;
    let session = driver
        .session(Screen::Desktop {
            width: 1400,
            height: 1000,
        })
        .await;
    session.goto(&page).await;

    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, "twain-sampler").await;
    // Progress values the page showed for each kind, in order.
    let mut shown: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let started = Instant::now();
    loop {
        let personas = session.run(READ_PAGE, json!([])).await;
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

    session.screenshot("dashboard").await;
    session.close().await;
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}
