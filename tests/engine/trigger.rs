//! The trigger against the real Redis: any bytes on the queue (a quarter of a thousand not even
//! UTF-8) dead-lettered while valid work goes on, a killed worker holding such bytes replaced,
//! countdown messages that hold no run slot, a retry that frees its slot for other work, and
//! two daemons sharing one SQLite file. (Long for its garbage generator: fifteen kinds of
//! message no worker can run, each with what its dead letter must say.)

use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use persona_ingest::actors::Observe;
use persona_ingest::config::Settings;
use persona_ingest::trigger::celery::encode;
use persona_ingest::trigger::redis_trigger::TriggerCounters;
use serde_json::{json, Map, Value};

use crate::common::*;
use crate::worker_kit::*;

const PERSONA: &str = "twain-sampler";

/// Settings for a daemon run in this process on the test's queue and keys.
fn in_process(world: &World, names: &Names, extra: &[(&str, &str)]) -> Settings {
    let mut settings = world.settings(extra);
    settings.redis.url = redis_url();
    settings.worker.queues = vec![names.queue.clone()];
    settings.redis.key_prefix = names.prefix.clone();
    settings.http.listen = String::new();
    settings
}

/// A valid envelope of `ingest_full_persona` with `kwargs`, as JSON to spoil.
fn envelope(queue: &str, kwargs: Value) -> Value {
    let Value::Object(kwargs) = kwargs else {
        unreachable!()
    };
    let raw = encode(
        "workers.tasks.ingest_full_persona",
        &uuid::Uuid::new_v4().to_string(),
        &[],
        &kwargs,
        queue,
        "t@h",
    );
    serde_json::from_str(&raw).unwrap()
}

/// 1,000 messages no worker can run, of fifteen kinds, a quarter of them not UTF-8; each with
/// what its dead letter's reason (or, for a readable call that does not bind, its FAILURE)
/// must say.
fn garbage(queue: &str) -> Vec<(Vec<u8>, &'static str)> {
    let good_args = json!({ "persona_id": "p", "job_ids": {} });
    (0..1000)
        .map(|i| {
            let mut spoilt = envelope(queue, good_args.clone());
            let (raw, why): (Vec<u8>, &str) = match (i % 4, i % 13) {
                // Not UTF-8: raw bytes, and Latin-1 JSON (a lone byte in a string).
                (0, 0 | 2 | 4) => (
                    [b"\xff\xfe\x00garbage ".as_slice(), i.to_string().as_bytes()].concat(),
                    "not a JSON envelope",
                ),
                (0, _) => {
                    let text = spoilt.to_string().replacen("\"t@h\"", "\"t@h\u{e9}\"", 1);
                    let latin1: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
                    (latin1, "not a JSON envelope")
                }
                (_, 0) => (format!("garbage {i}").into_bytes(), "not a JSON envelope"),
                (_, 1) => (json!([i]).to_string().into_bytes(), "not a JSON envelope"),
                (_, 2) => {
                    spoilt["body"] = "%%% not base64 %%%".into();
                    (spoilt.to_string().into_bytes(), "body: not base64")
                }
                (_, 3) => {
                    spoilt["content-type"] = "application/x-python-serialize".into();
                    (spoilt.to_string().into_bytes(), "content type")
                }
                (_, 4) => {
                    spoilt["headers"]["task"] = "workers.tasks.send_newsletter".into();
                    (spoilt.to_string().into_bytes(), "unknown task")
                }
                // Readable, with a task id, but a call that does not bind: answered FAILURE as
                // Celery's worker answers it, not dead-lettered.
                (_, 5) => (
                    envelope(queue, json!({})).to_string().into_bytes(),
                    "TypeError: ingest_full_persona() missing 2 required positional arguments",
                ),
                (_, 6) => (
                    envelope(queue, json!({ "persona_id": 7, "job_ids": {} }))
                        .to_string()
                        .into_bytes(),
                    "ValueError: persona_id must be a string",
                ),
                (_, 7) => (
                    envelope(
                        queue,
                        json!({ "persona_id": "p", "job_ids": { "works": "x" } }),
                    )
                    .to_string()
                    .into_bytes(),
                    "ValueError: job_ids.works must be a UUID",
                ),
                (_, 10) => {
                    spoilt["headers"].as_object_mut().unwrap().remove("id");
                    (spoilt.to_string().into_bytes(), "header id: missing")
                }
                (_, 11) => {
                    spoilt["headers"]["retries"] = "many".into();
                    (spoilt.to_string().into_bytes(), "header retries")
                }
                (_, 12) => {
                    spoilt["body"] = BASE64.encode("42").into();
                    (
                        spoilt.to_string().into_bytes(),
                        "body: expected [args, kwargs, embed]",
                    )
                }
                (_, 8) => {
                    spoilt["properties"]["body_encoding"] = "rot13".into();
                    (spoilt.to_string().into_bytes(), "body encoding")
                }
                _ => {
                    // A valid envelope around a body that is not UTF-8.
                    let body: Vec<u8> = format!("[[], {{}}, {{}}] {i}")
                        .bytes()
                        .map(|b| b | 0x80)
                        .collect();
                    spoilt["body"] = BASE64.encode(body).into();
                    (spoilt.to_string().into_bytes(), "body: not JSON")
                }
            };
            (raw, why)
        })
        .collect()
}

async fn push_bytes(con: &mut redis::aio::MultiplexedConnection, list: &str, raws: &[Vec<u8>]) {
    let _: () = redis::cmd("LPUSH")
        .arg(list)
        .arg(raws)
        .query_async(con)
        .await
        .unwrap();
}

async fn dead_letters(con: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<Value> {
    let dead: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(format!("{prefix}:dead-letters"))
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await
        .unwrap();
    dead.iter()
        .map(|entry| serde_json::from_slice(entry).unwrap())
        .collect()
}

fn status(world: &World, names: &Names, extra: &[(String, String)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
        .args(["status", "--data-root", world.data_root.to_str().unwrap()])
        .env_clear()
        .envs(daemon_env(world, names, &redis_url()))
        .envs(extra.iter().cloned())
        .current_dir(world.dir.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[actix::test]
async fn any_bytes_are_dead_lettered_and_a_killed_worker_holding_them_is_replaced() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let mut con = connect(&redis_url()).await;
    let bad = garbage(&names.queue);
    assert!(
        bad.iter()
            .filter(|(raw, _)| std::str::from_utf8(raw).is_err())
            .count()
            >= 250
    );
    let raws: Vec<Vec<u8>> = bad.iter().map(|(raw, _)| raw.clone()).collect();
    push_bytes(&mut con, &names.queue, &raws).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    let embedder = slow_embedder(Duration::from_millis(100)).await;
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[("ENGINE__WORKER__VISIBILITY_TIMEOUT", "3")]));
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);

    // Behind a thousand bad messages, the valid one is answered within 10 s.
    let sent = Instant::now();
    let result = final_result(&redis_url(), &task_id, Duration::from_secs(10)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    let answered: Vec<&(Vec<u8>, &str)> = bad
        .iter()
        .filter(|(_, why)| why.starts_with("TypeError") || why.starts_with("ValueError"))
        .collect();
    let dead = dead_letters(&mut con, &names.prefix).await;
    assert_eq!(dead.len(), 1000 - answered.len());
    let mut by_raw: Map<String, Value> = Map::new();
    for entry in dead {
        by_raw.insert(entry["raw"].as_str().unwrap().into(), entry);
    }
    for (raw, why) in &answered {
        let id = serde_json::from_slice::<Value>(raw).unwrap()["headers"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let result = result_of(&mut con, &id).await.unwrap();
        let (exc_type, message) = why.split_once(": ").unwrap();
        assert_eq!(result["status"], "FAILURE");
        assert_eq!(result["result"]["exc_type"], exc_type);
        let said = result["result"]["exc_message"][0].as_str().unwrap();
        assert!(said.starts_with(message), "{said:?} should say {message:?}");
    }
    for (raw, why) in bad.iter().filter(|b| !answered.contains(b)) {
        let entry = &by_raw[&BASE64.encode(raw)];
        let reason = entry["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{reason:?} should say {why:?}");
        assert_eq!(entry["queue"], json!(names.queue));
        assert_eq!(
            entry["message"].as_str().map(str::as_bytes),
            std::str::from_utf8(raw).ok().map(str::as_bytes)
        );
    }
    assert_eq!(in_flight(&mut con, &names.prefix).await, 0);
    eprintln!(
        "the valid task answered {:?} after it was sent",
        sent.elapsed()
    );

    // A run under way (forced: nothing changed since the first), and bad bytes in its
    // in-flight list, as if taken just before a crash.
    let second = crate::worker_kit::send_full_persona_forced(&mut con, &names.queue, PERSONA).await;
    let calls_before = crate::worker_kit::embedding_calls(&embedder).await;
    wait_for(
        "the second run under way",
        Duration::from_secs(30),
        || async {
            (crate::worker_kit::embedding_calls(&embedder).await > calls_before + 2).then_some(())
        },
    )
    .await;
    let workers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}:workers", names.prefix))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(workers.len(), 1);
    let held = vec![b"\xc3\x28 held when it died".to_vec(), b"\x80".to_vec()];
    push_bytes(
        &mut con,
        &format!("{}:inflight:{}", names.prefix, workers[0]),
        &held,
    )
    .await;
    daemon.kill();
    let dead_before = dead_letters(&mut con, &names.prefix).await.len();
    assert_eq!(in_flight(&mut con, &names.prefix).await, 3);
    let (code, out) = status(&world, &names, &env);
    assert_eq!(code, Some(0), "status reads any bytes in flight: {out}");

    tokio::time::sleep(Duration::from_secs(4)).await;
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let result = final_result(&redis_url(), &second, Duration::from_secs(60)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    wait_for(
        "the held bytes dead-lettered",
        Duration::from_secs(10),
        || {
            let mut con = con.clone();
            let prefix = names.prefix.clone();
            async move { (dead_letters(&mut con, &prefix).await.len() == dead_before + 2).then_some(()) }
        },
    )
    .await;
    assert_eq!(in_flight(&mut con, &names.prefix).await, 0);
    let (code, out) = status(&world, &names, &env);
    assert_eq!(code, Some(0), "{out}");
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[&task_id, &second]).await;
}

/// The web app's side: four tasks with `countdown=600`, then one without; prints their ids.
const COUNTDOWNS: &str = r#"
import json, sys, uuid
from celery import Celery
url, queue = sys.argv[1], sys.argv[2]
app = Celery("workers", broker=url, backend=url)
def send(persona, **options):
    job_ids = {kind: str(uuid.uuid4()) for kind in ("works", "quotes", "profile")}
    return app.send_task("workers.tasks.ingest_full_persona",
                         kwargs={"persona_id": persona, "job_ids": job_ids}, queue=queue, **options).id
later = [send("twain-sampler", countdown=600) for _ in range(4)]
now = send("twain-sampler")
print(json.dumps({"later": later, "now": now}))
"#;

#[actix::test]
async fn countdown_tasks_wait_in_a_timer_without_taking_a_run_slot() {
    let world = World::reading(examples_root());
    let names = Names::new();
    // In process, through the library entry: the test reads the trigger's counters and the
    // daemon's report instead of its log.
    let daemon =
        persona_ingest::daemon::start(in_process(&world, &names, &[("worker.concurrency", "4")]))
            .await
            .unwrap();
    let ids = client(COUNTDOWNS, &[&redis_url(), &names.queue]);
    let sent = Instant::now();
    let now = ids["now"].as_str().unwrap();
    let result = final_result(&redis_url(), now, Duration::from_secs(10)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    eprintln!("answered {:?} after it was sent", sent.elapsed());
    let mut con = connect(&redis_url()).await;
    for later in ids["later"].as_array().unwrap() {
        assert_eq!(
            result_of(&mut con, later.as_str().unwrap()).await,
            None,
            "not run before its time"
        );
    }
    assert_eq!(
        in_flight(&mut con, &names.prefix).await,
        4,
        "held in flight"
    );
    let counters: TriggerCounters = daemon.trigger.send(Observe::new()).await.unwrap();
    assert_eq!(
        (counters.scheduled, counters.running),
        (4, 0),
        "{counters:?}"
    );
    let report = daemon.stop().await;
    assert_eq!(
        (report.trigger.answered, report.trigger.requeued_at_exit),
        (1, 4),
        "{report:?}"
    );
    let queued: usize = redis::cmd("LLEN")
        .arg(&names.queue)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(queued, 4);
    let mut all: Vec<&str> = ids["later"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    all.push(now);
    forget(&redis_url(), &names.prefix, &all).await;
}

#[actix::test]
async fn a_task_waiting_for_its_retry_leaves_its_slot_to_other_work() {
    let world = World::new();
    for persona in ["first", "second"] {
        world.write(
            &format!("personas/{persona}/profile.md"),
            format!("# {persona}\n\nA profile of {persona}, long enough to embed."),
        );
    }
    let names = Names::new();
    // Down for the first two calls: the first task's.
    let embedder = embedder_down_for(2).await;
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[
        ("ENGINE__WORKER__CONCURRENCY", "1"),
        ("ENGINE__EMBEDDING__MAX_RETRIES", "1"),
        ("ENGINE__EMBEDDING__MAX_IN_FLIGHT", "1"),
        ("ENGINE__WORKER__RETRY_DELAY", "8"),
    ]));
    let overrides: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            (
                k.trim_start_matches("ENGINE__")
                    .to_lowercase()
                    .replace("__", "."),
                v.clone(),
            )
        })
        .filter(|(k, _)| k.contains('.'))
        .collect();
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut settings = in_process(&world, &names, &overrides);
    settings.embedding.api_key = Some("sk-test".into());
    let daemon = persona_ingest::daemon::start(settings).await.unwrap();
    let mut con = connect(&redis_url()).await;
    let first = send_full_persona(&mut con, &names.queue, "first").await;
    // The seed's contract: the task answered its sub-task ids; the profile's is to run again.
    let first_profile =
        persona_ingest::trigger::task::subtask_id(&first, persona_ingest::Kind::Profile);
    wait_for("the first task's RETRY", Duration::from_secs(30), || {
        let mut con = con.clone();
        let first = first_profile.clone();
        async move { (result_of(&mut con, &first).await?["status"] == "RETRY").then_some(()) }
    })
    .await;
    let retried_at = Instant::now();
    let second = send_full_persona(&mut con, &names.queue, "second").await;
    let result = final_result(&redis_url(), &second, Duration::from_secs(30)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    assert!(
        retried_at.elapsed() < Duration::from_secs(4),
        "the second task waited for the first one's retry: {:?}",
        retried_at.elapsed()
    );
    assert_eq!(
        result_of(&mut con, &first_profile).await.unwrap()["status"],
        "RETRY",
        "still waiting"
    );
    let result = final_result(&redis_url(), &first, Duration::from_secs(30)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    let report = daemon.stop().await;
    assert_eq!(
        (report.trigger.retried, report.trigger.answered),
        (1, 2),
        "{report:?}"
    );
    forget(&redis_url(), &names.prefix, &[&first, &second]).await;
}

#[actix::test]
async fn two_daemons_sharing_one_sqlite_file_fail_no_task() {
    let world = World::new();
    let personas: Vec<String> = (0..20).map(|i| format!("p{i:02}")).collect();
    for persona in &personas {
        world.write(
            &format!("personas/{persona}/profile.md"),
            format!("# {persona}\n\nWho {persona} is, in a sentence or two."),
        );
        world.write(
            &format!("data/{persona}/works/one.txt"),
            format!("A short work by {persona}. It has two sentences."),
        );
    }
    let names = Names::new();
    let env = vars(&[("ENGINE__WORKER__CONCURRENCY", "4")]);
    let first = Daemon::start(&world, &names, &redis_url(), &env);
    let second = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let mut tasks = Vec::new();
    for round in 0..10 {
        for persona in &personas {
            let _ = round;
            tasks.push(send_full_persona(&mut con, &names.queue, persona).await);
        }
    }
    let mut failures = Vec::new();
    for task in &tasks {
        let result = final_result(&redis_url(), task, Duration::from_secs(240)).await;
        if result["status"] != "SUCCESS" {
            failures.push(result);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    for daemon in [first, second] {
        let (code, stderr) = daemon.terminate();
        assert_eq!(code, Some(0), "{stderr}");
    }
    let ids: Vec<&str> = tasks.iter().map(String::as_str).collect();
    forget(&redis_url(), &names.prefix, &ids).await;
}
