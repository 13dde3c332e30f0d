//! The StatusRecorder alone, against an in-memory SQLite database (real clock: paused time and
//! real database pools do not mix). Long because each behaviour of its batches (order, refusals,
//! what a run start reads) is one test over the one harness at the top.

use entities::ingestion_job;
use sea_orm::EntityTrait;

use super::*;
use crate::config::DatabaseSettings;
use crate::counts::JobCounts;
use crate::jobs::JobRef;
use crate::manifest::ManifestChange;
use crate::testkit;
use crate::{Kind, PersonaStatus};

async fn start() -> (
    Addr<StatusRecorder>,
    DatabaseConnection,
    broadcast::Receiver<JobEvent>,
) {
    let settings = DatabaseSettings {
        url: "sqlite::memory:".into(),
        max_connections: 1,
    };
    let db = crate::db::connect(&settings).await.unwrap();
    let (events, listener) = broadcast::channel(64);
    (
        // Written as they come: these tests make their batches themselves.
        StatusRecorder::new(db.clone(), events)
            .writing_at_once()
            .start(),
        db,
        listener,
    )
}

fn job(kind: Kind) -> JobRef {
    JobRef {
        id: Uuid::new_v4(),
        kind,
        task_id: None,
    }
}

fn begin(persona: &str, jobs: &[JobRef]) -> RecordStatus {
    RecordStatus(StatusUpdate::BeginRun {
        persona: PersonaId::parse(persona).unwrap(),
        jobs: jobs.to_vec(),
    })
}

async fn row(db: &DatabaseConnection, id: Uuid) -> ingestion_job::Model {
    ingestion_job::Entity::find_by_id(id)
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

#[actix::test]
async fn updates_apply_in_the_order_they_arrive() {
    let (recorder, db, _) = start().await;
    let works = job(Kind::Works);
    // Sent back to back without waiting: each would be refused if applied out of order.
    let updates = [
        begin("p", std::slice::from_ref(&works)),
        RecordStatus(StatusUpdate::JobStarted {
            job_id: works.id,
            rerun: false,
        }),
        RecordStatus(StatusUpdate::JobCompleted {
            job_id: works.id,
            total_vectors: 7,
            warning: None,
            counts: JobCounts::default(),
            manifest: None,
        }),
        RecordStatus(StatusUpdate::FinishRun {
            persona: PersonaId::parse("p").unwrap(),
            error: None,
        }),
    ];
    let answers: Vec<_> = updates.into_iter().map(|u| recorder.send(u)).collect();
    for answer in answers {
        answer.await.unwrap().unwrap();
    }
    let done = row(&db, works.id).await;
    assert_eq!(
        (done.status, done.progress, done.total_vectors),
        (JobStatus::Completed, 100, 7)
    );
    let persona = crate::jobs::persona(&db, "p").await.unwrap().unwrap();
    assert_eq!(persona.status, PersonaStatus::Active);
}

#[actix::test]
async fn progress_is_coalesced_into_one_write_per_flush() {
    let (recorder, db, mut events) = start().await;
    let works = job(Kind::Works);
    recorder
        .send(begin("p", std::slice::from_ref(&works)))
        .await
        .unwrap()
        .unwrap();
    let started = StatusUpdate::JobStarted {
        job_id: works.id,
        rerun: false,
    };
    recorder.send(RecordStatus(started)).await.unwrap().unwrap();
    for progress in 1..=50 {
        recorder.do_send(RecordStatus(StatusUpdate::JobProgress {
            job_id: works.id,
            progress,
        }));
    }
    recorder.send(FlushProgress).await.unwrap();
    let counters: RecorderCounters = testkit::observe(&recorder).await;
    assert_eq!(
        (counters.progress_received, counters.progress_written),
        (50, 1)
    );
    assert_eq!(row(&db, works.id).await.progress, 50);
    // Live views still see every step.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event.progress);
    }
    assert_eq!(seen.len(), 51, "the start and 50 progress events: {seen:?}");
}

#[actix::test]
async fn statuses_never_move_backwards() {
    let (recorder, db, _) = start().await;
    let works = job(Kind::Works);
    let send = |update| recorder.send(RecordStatus(update));
    recorder
        .send(begin("p", std::slice::from_ref(&works)))
        .await
        .unwrap()
        .unwrap();

    let completed = StatusUpdate::JobCompleted {
        job_id: works.id,
        total_vectors: 1,
        warning: None,
        counts: JobCounts::default(),
        manifest: None,
    };
    let refused = send(completed.clone()).await.unwrap().unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("is pending; only a processing job completes"),
        "{refused}"
    );

    send(StatusUpdate::JobStarted {
        job_id: works.id,
        rerun: false,
    })
    .await
    .unwrap()
    .unwrap();
    send(completed).await.unwrap().unwrap();
    let failed = StatusUpdate::JobFailed {
        job_id: works.id,
        error: "late".into(),
        vectors_present: None,
        manifest: None,
    };
    assert!(
        send(failed).await.unwrap().is_err(),
        "a completed job stays completed"
    );
    send(StatusUpdate::JobProgress {
        job_id: works.id,
        progress: 40,
    })
    .await
    .unwrap()
    .unwrap();
    recorder.send(FlushProgress).await.unwrap();
    assert_eq!(
        row(&db, works.id).await.progress,
        100,
        "late progress is ignored"
    );
    let again = StatusUpdate::JobStarted {
        job_id: works.id,
        rerun: false,
    };
    assert!(
        send(again).await.unwrap().is_err(),
        "only an explicit retry restarts"
    );
    let retry = StatusUpdate::JobStarted {
        job_id: works.id,
        rerun: true,
    };
    send(retry).await.unwrap().unwrap();
    let retried = row(&db, works.id).await;
    assert_eq!(
        (retried.status, retried.attempts),
        (JobStatus::Processing, 2)
    );
    let counters: RecorderCounters = testkit::observe(&recorder).await;
    assert_eq!(counters.refused, 3);
}

fn completed(job_id: Uuid, total_vectors: u64) -> StatusUpdate {
    StatusUpdate::JobCompleted {
        job_id,
        total_vectors,
        warning: None,
        counts: JobCounts::default(),
        manifest: None,
    }
}

#[actix::test]
async fn updates_waiting_together_share_a_transaction_and_a_refused_one_fails_alone() {
    let (recorder, db, _) = start().await;
    let (works, quotes) = (job(Kind::Works), job(Kind::Quotes));
    let started = |job_id| StatusUpdate::JobStarted {
        job_id,
        rerun: false,
    };
    // Sent back to back: the first goes alone, the rest wait for it and go together. The
    // quotes job completing before it started is refused in the middle of that batch.
    let updates = [
        begin("p", &[works.clone(), quotes.clone()]),
        RecordStatus(started(works.id)),
        RecordStatus(completed(quotes.id, 3)),
        RecordStatus(completed(works.id, 7)),
        RecordStatus(started(quotes.id)),
    ];
    let answers: Vec<_> = updates.into_iter().map(|u| recorder.send(u)).collect();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap().map(|_| ()));
    }
    assert!(results[2]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("is pending; only a processing job completes"));
    assert!(
        results.iter().enumerate().all(|(i, r)| i == 2 || r.is_ok()),
        "{results:?}"
    );
    let (works_row, quotes_row) = (row(&db, works.id).await, row(&db, quotes.id).await);
    assert_eq!(
        (works_row.status, works_row.total_vectors),
        (JobStatus::Completed, 7)
    );
    assert_eq!(quotes_row.status, JobStatus::Processing);
    let counters: RecorderCounters = testkit::observe(&recorder).await;
    assert_eq!((counters.applied, counters.refused), (4, 1));
    assert_eq!(
        counters.batches, 0,
        "a batch with a refusal in it is applied one update at a time: {counters:?}"
    );

    // Without a refusal, the same shape of batch goes in one transaction.
    let (works, quotes) = (job(Kind::Works), job(Kind::Quotes));
    let updates = [
        begin("q", &[works.clone(), quotes.clone()]),
        RecordStatus(started(works.id)),
        RecordStatus(started(quotes.id)),
        RecordStatus(completed(quotes.id, 3)),
        RecordStatus(completed(works.id, 7)),
    ];
    let answers: Vec<_> = updates.into_iter().map(|u| recorder.send(u)).collect();
    for answer in answers {
        answer.await.unwrap().unwrap();
    }
    let (works_row, quotes_row) = (row(&db, works.id).await, row(&db, quotes.id).await);
    assert_eq!(
        (
            works_row.status,
            works_row.total_vectors,
            quotes_row.total_vectors
        ),
        (JobStatus::Completed, 7, 3)
    );
    let counters: RecorderCounters = testkit::observe(&recorder).await;
    assert_eq!(
        (counters.applied, counters.batches),
        (9, 1),
        "the last four went together: {counters:?}"
    );
}

#[actix::test]
async fn an_update_the_database_rejects_fails_alone_and_its_batch_is_applied_without_it() {
    use sea_orm::ConnectionTrait;
    let (recorder, db, _) = start().await;
    let (works, quotes) = (job(Kind::Works), job(Kind::Quotes));
    recorder
        .send(begin("p", &[works.clone(), quotes.clone()]))
        .await
        .unwrap()
        .unwrap();
    for job in [&works, &quotes] {
        let started = StatusUpdate::JobStarted {
            job_id: job.id,
            rerun: false,
        };
        recorder.send(RecordStatus(started)).await.unwrap().unwrap();
    }
    // The works job's manifest cannot be written: its batch fails as a whole, and is applied
    // again one update at a time.
    db.execute_unprepared("DROP TABLE ingestion_manifest")
        .await
        .unwrap();
    let mut broken = completed(works.id, 7);
    if let StatusUpdate::JobCompleted { manifest, .. } = &mut broken {
        *manifest = Some(ManifestChange::Forget {
            persona: PersonaId::parse("p").unwrap(),
            kind: Kind::Works,
            sources: vec!["a.txt".into()],
        });
    }
    let updates = [
        RecordStatus(completed(quotes.id, 1)),
        RecordStatus(completed(quotes.id, 2)),
        RecordStatus(broken),
        RecordStatus(StatusUpdate::FinishRun {
            persona: PersonaId::parse("p").unwrap(),
            error: None,
        }),
    ];
    let answers: Vec<_> = updates.into_iter().map(|u| recorder.send(u)).collect();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap().map(|_| ()));
    }
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(TransitionError::Refused(_))));
    assert!(
        matches!(&results[2], Err(TransitionError::Db(e)) if e.contains("ingestion_manifest")),
        "{results:?}"
    );
    // The failed update wrote nothing: its job row is as it was.
    assert_eq!(row(&db, works.id).await.status, JobStatus::Processing);
    assert_eq!(row(&db, quotes.id).await.total_vectors, 1);
    let persona = crate::jobs::persona(&db, "p").await.unwrap().unwrap();
    assert_eq!(persona.status, PersonaStatus::Active);
}

#[actix::test]
async fn a_refused_run_writes_nothing_in_the_batch_it_shares() {
    let (recorder, db, _) = start().await;
    let works = job(Kind::Works);
    let answers: Vec<_> = [
        begin("p", std::slice::from_ref(&works)),
        // The job is p's: q's run is refused, and must not leave q behind, ingesting.
        begin("q", std::slice::from_ref(&works)),
        RecordStatus(StatusUpdate::JobStarted {
            job_id: works.id,
            rerun: false,
        }),
    ]
    .into_iter()
    .map(|u| recorder.send(u))
    .collect();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap().map(|_| ()));
    }
    assert!(
        matches!(results[1], Err(TransitionError::Refused(_))),
        "{results:?}"
    );
    assert!(results[2].is_ok());
    assert!(crate::jobs::persona(&db, "q").await.unwrap().is_none());
    let counters: RecorderCounters = testkit::observe(&recorder).await;
    assert_eq!(
        counters.batches, 1,
        "the refusal shared a batch: {counters:?}"
    );
}

#[actix::test]
async fn jobs_started_together_start_and_a_refused_one_is_found() {
    let (recorder, db, _) = start().await;
    let jobs = [job(Kind::Works), job(Kind::Quotes), job(Kind::Profile)];
    let started = |job: &JobRef| {
        RecordStatus(StatusUpdate::JobStarted {
            job_id: job.id,
            rerun: false,
        })
    };
    recorder.send(begin("p", &jobs)).await.unwrap().unwrap();
    // The quotes job has started already: starting it again is refused.
    recorder.send(started(&jobs[1])).await.unwrap().unwrap();
    // Another run's start first, so that the three starts wait together behind it.
    let mut updates = vec![begin("q", &[job(Kind::Works)])];
    updates.extend(jobs.iter().map(started));
    let answers: Vec<_> = updates.into_iter().map(|u| recorder.send(u)).collect();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap().map(|_| ()));
    }
    assert!(
        results[0].is_ok() && results[1].is_ok() && results[3].is_ok(),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(TransitionError::Refused(why)) if why.contains("is processing")),
        "{results:?}"
    );
    for job in &jobs {
        let row = row(&db, job.id).await;
        assert_eq!((row.status, row.attempts), (JobStatus::Processing, 1));
    }
}

#[actix::test]
async fn a_run_start_reads_what_the_updates_before_it_in_its_batch_wrote() {
    let (recorder, _db, _) = start().await;
    let works = JobRef {
        task_id: Some("t".into()),
        ..job(Kind::Works)
    };
    recorder
        .send(begin("p", std::slice::from_ref(&works)))
        .await
        .unwrap()
        .unwrap();
    let started = StatusUpdate::JobStarted {
        job_id: works.id,
        rerun: false,
    };
    recorder.send(RecordStatus(started)).await.unwrap().unwrap();
    // Another run's start goes first, alone; the rest wait behind it and go together: the job
    // completes, its run ends, and its task, delivered again, starts a run that must see it
    // completed (read after the writes before it, not before).
    let updates = [
        begin("q", &[job(Kind::Works)]),
        RecordStatus(completed(works.id, 7)),
        RecordStatus(StatusUpdate::FinishRun {
            persona: PersonaId::parse("p").unwrap(),
            error: None,
        }),
        begin("p", std::slice::from_ref(&works)),
    ];
    let answers: Vec<_> = updates.into_iter().map(|u| recorder.send(u)).collect();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap().unwrap());
    }
    assert_eq!(results[3].completed_before, [(works.id, 7)]);
    let counters: RecorderCounters = testkit::observe(&recorder).await;
    assert_eq!(counters.batches, 1, "still one transaction: {counters:?}");
}
