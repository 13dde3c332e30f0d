//! Every view of the dashboard in headless Chromium (`browser.rs`) while a persona ingests, at
//! a desktop's 1280 × 800 and a phone's 390 × 844: the task list filtered and searched by id,
//! a task's page with its sub-tasks' states, the broker with a countdown-held message and a
//! dead letter (dropped from the page), the workers, the personas and a persona's runs, a
//! chart with non-zero points; no element's content wider than its box, no request outside the
//! daemon; a screenshot of each view in `target/test-artifacts/`. And a terminate pressed on a
//! running sub-task's page stops its ingestion. (Just over 400 lines: one walk through every
//! view, kept whole so its story reads in order.)

use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::{ChromeDriver, Screen, Session};
use crate::common::*;
use crate::worker_kit::*;

const PERSONA: &str = "twain-sampler";

/// Elements whose content is wider than their box, or that reach past the window's right edge
/// (form controls scroll their own text, and are left out).
const CLIPPED: &str = r##"
const bad = [];
const width = document.documentElement.clientWidth;
for (const e of document.querySelectorAll("header, header *, main, main *")) {
  if (e.closest("svg") && e.tagName.toLowerCase() !== "svg") continue;
  if (["INPUT", "SELECT", "TEXTAREA", "OPTION"].includes(e.tagName)) continue;
  const style = getComputedStyle(e);
  if (style.display === "none" || style.visibility === "hidden") continue;
  const box = e.getBoundingClientRect();
  if (box.width === 0 && box.height === 0) continue;
  const name = e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
    + (typeof e.className === "string" && e.className ? "." + e.className.trim().split(/\s+/).join(".") : "");
  const text = (e.textContent || "").trim().slice(0, 50);
  if (style.display !== "inline" && e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    bad.push(`${name} holds ${e.scrollWidth} px in ${e.clientWidth}: ${text}`);
  if (box.right > width + 1) bad.push(`${name} reaches ${Math.round(box.right)} px of ${width}: ${text}`);
}
// What a script meant as a value but wrote as text.
for (const slip of ["[object ", "undefined", "NaN"])
  if (document.querySelector("main").innerText.includes(slip)) bad.push(`the view shows ${slip}`);
if (document.documentElement.scrollWidth > width + 1)
  bad.push(`the page is ${document.documentElement.scrollWidth} px wide in ${width}`);
return bad;
"##;

/// Shows `hash` and waits for `ready` (a script) to hold.
async fn show(session: &Session<'_>, hash: &str, what: &str, ready: &str) -> Value {
    session
        .run("location.hash = arguments[0]; return true;", json!([hash]))
        .await;
    session.until(what, ready, json!([])).await
}

async fn assert_nothing_clipped(session: &Session<'_>, view: &str) {
    let clipped = session.run(CLIPPED, json!([])).await;
    assert_eq!(clipped, json!([]), "clipped on the {view} view");
}

struct Run {
    port: u16,
    task_id: String,
    held_id: String,
}

/// What one session checks of every view; `screen` names the screenshots.
async fn every_view(session: &Session<'_>, run: &Run, screen: &str) {
    let origin = format!("http://127.0.0.1:{}/", run.port);
    session.goto(&format!("{origin}#token=t0ken")).await;

    // The overview, with a chart drawn from the run's counters.
    show(
        session,
        "#/",
        "a chart with non-zero points",
        r#"const s = document.querySelector('svg[data-series="vectors"]');
           return s && Number(s.dataset.nonzero) > 0;"#,
    )
    .await;
    assert_nothing_clipped(session, "overview").await;
    session
        .screenshot(&format!("dashboard-overview-{screen}"))
        .await;

    // The task list, then searched by id from its form.
    show(
        session,
        "#/tasks",
        "the task list",
        "return document.querySelectorAll('tr.task').length >= 4;",
    )
    .await;
    assert_nothing_clipped(session, "tasks").await;
    session
        .screenshot(&format!("dashboard-tasks-{screen}"))
        .await;
    let search = r#"
      const form = document.getElementById('task-filters');
      form.q.value = arguments[0];
      form.requestSubmit();
      return true;"#;
    session.run(search, json!([run.held_id])).await;
    let found = session
        .until(
            "the task found by its id",
            r#"if (!location.hash.includes('q=')) return false;
               const rows = [...document.querySelectorAll('tr.task')].map(r => r.dataset.task);
               return rows.length === 1 ? rows : false;"#,
            json!([]),
        )
        .await;
    assert_eq!(found, json!([run.held_id]));
    // Filtered by state: only failures, of which there are none.
    show(
        session,
        "#/tasks?state=FAILURE",
        "the failures",
        r#"return document.querySelector('#task-filters select[name=state]').value === 'FAILURE'
             && document.querySelectorAll('tr.task').length === 0;"#,
    )
    .await;

    // The run's task page: its three sub-tasks, each with its state.
    let states = show(
        session,
        &format!("#/task/{}", run.task_id),
        "the task's sub-tasks",
        r#"const rows = [...document.querySelectorAll('tr.subtask')];
           return rows.length === 3 && Object.fromEntries(rows.map(r => [r.dataset.kind, r.dataset.state]));"#,
    )
    .await;
    for kind in ["profile", "works", "quotes"] {
        let state = states[kind].as_str().unwrap_or_default();
        assert!(
            ["RECEIVED", "STARTED", "SUCCESS"].contains(&state),
            "{kind}: {states}"
        );
    }
    assert_nothing_clipped(session, "task").await;
    session
        .screenshot(&format!("dashboard-task-{screen}"))
        .await;

    // The broker: the countdown-held message and the dead letter with its reason.
    let broker = show(
        session,
        "#/broker",
        "the held message and the dead letter",
        r#"const held = document.querySelector('tr.inflight[data-held="countdown"]');
           const dead = document.querySelector('tr.dead-letter');
           return held && dead && { held: held.dataset.task, reason: dead.querySelector('.error').textContent,
                                    message: dead.querySelector('pre').textContent };"#,
    )
    .await;
    assert_eq!(broker["held"], json!(run.held_id));
    assert!(
        broker["reason"]
            .as_str()
            .unwrap()
            .contains("not a JSON envelope"),
        "{broker}"
    );
    assert!(
        broker["message"].as_str().unwrap().contains("not UTF-8"),
        "{broker}"
    );
    assert_nothing_clipped(session, "broker").await;
    session
        .screenshot(&format!("dashboard-broker-{screen}"))
        .await;

    show(
        session,
        "#/workers",
        "this daemon among the workers",
        // One row: its events joined to its lease whatever its node is named.
        r#"return [...document.querySelectorAll('tr.worker')].some(r => r.dataset.alive === 'true'
             && r.textContent.includes('persona-ingest') && r.textContent.includes('s left'));"#,
    )
    .await;
    assert_nothing_clipped(session, "workers").await;
    session
        .screenshot(&format!("dashboard-workers-{screen}"))
        .await;

    show(
        session,
        "#/personas",
        "the personas",
        &format!("return !!document.querySelector('tr.persona-row[data-persona=\"{PERSONA}\"]');"),
    )
    .await;
    assert_nothing_clipped(session, "personas").await;
    let runs = show(
        session,
        &format!("#/persona/{PERSONA}"),
        "the persona's runs",
        "const rows = document.querySelectorAll('tr.run-job'); return rows.length >= 3 && rows.length;",
    )
    .await;
    assert!(runs.as_u64().unwrap() >= 3);
    assert_nothing_clipped(session, "persona").await;
    session
        .screenshot(&format!("dashboard-persona-{screen}"))
        .await;

    let outside: Vec<String> = session
        .requests()
        .await
        .into_iter()
        .filter(|url| !url.starts_with(&origin))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the daemon: {outside:?}"
    );
}

#[actix::test]
async fn every_view_while_a_persona_ingests_at_desktop_and_phone_sizes() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (_daemon, _embedder, port) = slow_daemon_with_http(
        &world,
        &names,
        Duration::from_millis(300),
        &[
            ("ENGINE__HTTP__TOKEN", "t0ken"),
            // A long node name, as a fleet's can be: the tables and the worker filter fold.
            (
                "ENGINE__WORKER__NAME",
                &format!(
                    "persona-ingest-{}@a-rather-long-host-name.internal.example",
                    names.prefix
                ),
            ),
        ],
    )
    .await;
    let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(page.len() < 200_000, "the page is {} bytes", page.len());

    let mut con = connect(&redis_url()).await;
    let _: () = redis::cmd("LPUSH")
        .arg(&names.queue)
        .arg(&b"\xff\xfe not UTF-8 at all"[..])
        .query_async(&mut con)
        .await
        .unwrap();
    let held_id = send_full_persona_in(&mut con, &names.queue, "held-for-later", 600).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    let run = Run {
        port,
        task_id,
        held_id,
    };

    let driver = ChromeDriver::start().await;
    let desktop = driver
        .session(Screen::Desktop {
            width: 1280,
            height: 800,
        })
        .await;
    every_view(&desktop, &run, "1280x800").await;
    // A laptop's width, where the overview's grid has three columns, and a tablet's, where the
    // widest tables (workers, a persona's runs) do not fit unfolded.
    let persona_page = format!("#/persona/{PERSONA}");
    for (width, height) in [(1366, 768), (768, 1024)] {
        desktop.resize(width, height).await;
        let views = [
            ("#/", "overview"),
            ("#/tasks", "tasks"),
            ("#/workers", "workers"),
            ("#/personas", "personas"),
            (persona_page.as_str(), "persona"),
        ];
        for (hash, what) in views {
            show(
                &desktop,
                hash,
                what,
                "return !!document.querySelector('main section');",
            )
            .await;
            assert_nothing_clipped(&desktop, &format!("{what} at {width}")).await;
        }
    }
    desktop.resize(1280, 800).await;
    // From the keyboard alone: past the skip link and the first view's link, Enter on Tasks.
    desktop.goto("about:blank").await;
    desktop.goto(&format!("http://127.0.0.1:{port}/#/")).await;
    desktop
        .until(
            "the overview",
            "return !!document.querySelector('.cards');",
            json!([]),
        )
        .await;
    const TAB: &str = "\u{E004}";
    desktop.press(&[TAB, TAB, TAB, "\u{E007}"]).await;
    desktop
        .until(
            "the task list opened from the keyboard",
            "return (location.hash === '#/tasks' && document.activeElement.id === 'view'
                    && document.querySelectorAll('tr.task').length > 0)
                    || {error: location.hash + ' ' + document.activeElement.outerHTML.slice(0, 80)};",
            json!([]),
        )
        .await;
    let phone = driver
        .session(Screen::Phone {
            width: 390,
            height: 844,
        })
        .await;
    every_view(&phone, &run, "390x844").await;
    phone.close().await;

    // The dead letter dropped from the page: two presses, then it is gone from Redis.
    let dead_letters = format!("{}:dead-letters", names.prefix);
    let before: u64 = redis::cmd("LLEN")
        .arg(&dead_letters)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(before, 1);
    show(
        &desktop,
        "#/broker",
        "the dead letter",
        "return !!document.querySelector('tr.dead-letter');",
    )
    .await;
    let press = r#"document.querySelector('tr.dead-letter button[data-action="drop"]').click();
                   return true;"#;
    desktop.run(press, json!([])).await;
    desktop.run(press, json!([])).await;
    wait_for("the dead letter dropped", Duration::from_secs(10), || {
        let mut con = con.clone();
        let key = dead_letters.clone();
        async move {
            let n: u64 = redis::cmd("LLEN")
                .arg(&key)
                .query_async(&mut con)
                .await
                .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;
    desktop
        .until(
            "the page saying so",
            "return document.getElementById('notice')?.textContent === 'dropped';",
            json!([]),
        )
        .await;
    desktop.close().await;
    forget(&redis_url(), &names.prefix, &[&run.task_id, &run.held_id]).await;
}

#[actix::test]
async fn terminate_on_a_running_sub_task_s_page_stops_its_ingestion() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (_daemon, _embedder, port) =
        slow_daemon_with_http(&world, &names, Duration::from_millis(1500), &[]).await;
    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    let works = persona_ingest::trigger::task::subtask_id(&task_id, persona_ingest::Kind::Works);

    let driver = ChromeDriver::start().await;
    let session = driver
        .session(Screen::Desktop {
            width: 1280,
            height: 800,
        })
        .await;
    session
        .goto(&format!("http://127.0.0.1:{port}/#/task/{works}"))
        .await;
    let press = r#"
      const state = document.querySelector('.facts .badge')?.textContent;
      const button = document.querySelector('button[data-action="terminate"]');
      if (state !== 'STARTED' || !button) return false;
      button.click();
      return button.textContent;"#;
    let armed = session
        .until(
            "the works sub-task running, and its terminate button",
            press,
            json!([]),
        )
        .await;
    assert_eq!(armed, json!("Really terminate?"));
    let again = r#"document.querySelector('button[data-action="terminate"]').click();
                   return true;"#;
    session.run(again, json!([])).await;
    session
        .until(
            "the sub-task revoked on its page",
            "return document.querySelector('.facts .badge')?.textContent === 'REVOKED';",
            json!([]),
        )
        .await;
    let result = final_result(&redis_url(), &works, Duration::from_secs(30)).await;
    assert_eq!(result["status"], "REVOKED", "{result}");
    session.screenshot("dashboard-terminated").await;
    session.close().await;
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}
