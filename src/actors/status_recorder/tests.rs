//! The StatusRecorder alone, against an in-memory SQLite database (real clock: paused time and
//! real database pools do not mix).

use entities::ingestion_job;
use sea_orm::EntityTrait;

use super::*;
use crate::config::DatabaseSettings;
use crate::testkit;
use crate::Kind;

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
        StatusRecorder::new(db.clone(), events).start(),
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
