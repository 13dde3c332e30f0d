//! Two daemons serving one queue: a persona is ingested by one of them at a time, the second
//! message waiting for the first run to end, whichever worker took it.

use std::time::Duration;

use persona_ingest::JobStatus;

use crate::common::*;
use crate::worker_kit::*;

#[actix::test]
async fn two_workers_never_ingest_one_persona_at_once() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(150)).await;
    let mut env = slow_embedder_env(&embedder);
    // One message at a time each: the second message must go to the second worker.
    env.extend(vars(&[
        ("ENGINE__WORKER__CONCURRENCY", "1"),
        ("ENGINE__WORKER__PREFETCH", "1"),
    ]));
    let first = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let one = send_full_persona(&mut con, &names.queue, "twain-sampler").await;
    wait_for("the first run", Duration::from_secs(30), || async {
        let made = crate::worker_kit::embedding_calls(&embedder).await;
        (made >= 1).then_some(())
    })
    .await;
    let second = Daemon::start(&world, &names, &redis_url(), &env);
    let two = send_full_persona(&mut con, &names.queue, "twain-sampler").await;
    for task in [&one, &two] {
        let result = final_result(&redis_url(), task, Duration::from_secs(60)).await;
        assert_eq!(result["status"], "SUCCESS", "{result}");
    }

    let db = persona_ingest::db::connect(&world.settings(&[]).database)
        .await
        .unwrap();
    let rows = persona_ingest::jobs::jobs_of_persona(&db, "twain-sampler")
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.status == JobStatus::Completed));
    let run_of = |task: &str| {
        let ids: Vec<String> = persona_ingest::Kind::ALL
            .iter()
            .map(|k| persona_ingest::trigger::task::subtask_id(task, *k))
            .collect();
        rows.iter()
            .filter(|r| r.task_id.as_ref().is_some_and(|t| ids.contains(t)))
            .collect::<Vec<_>>()
    };
    let (runs_one, runs_two) = (run_of(&one), run_of(&two));
    assert_eq!((runs_one.len(), runs_two.len()), (3, 3));
    let first_end = runs_one
        .iter()
        .filter_map(|r| r.completed_at)
        .max()
        .unwrap();
    let second_start = runs_two.iter().filter_map(|r| r.started_at).min().unwrap();
    assert!(
        second_start >= first_end,
        "the second run started at {second_start} before the first ended at {first_end}"
    );
    let (code, stderr) = second.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("another worker is ingesting this persona: waiting"),
        "the second worker took the second message and waited: {stderr}"
    );
    drop(first);
    forget(&redis_url(), &names.prefix, &[&one, &two]).await;
}
