//! Answers before writes (`open_runs`), against an SQLite file whose write lock the test holds
//! from a connection of its own: the recorder's writes wait for it, its reads do not (WAL).

use entities::ingestion_job;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::*;
use crate::config::DatabaseSettings;
use crate::jobs::JobRef;
use crate::manifest::ManifestChange;
use crate::{Kind, PersonaStatus};

struct Harness {
    recorder: Addr<StatusRecorder>,
    db: DatabaseConnection,
    /// Another process's connection, as it were.
    other: DatabaseConnection,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    flushing_every(PROGRESS_FLUSH_EVERY).await
}

async fn flushing_every(every: Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db?mode=rwc", dir.path().display());
    let connect = |max_connections| {
        let url = url.clone();
        async move {
            crate::db::connect(&DatabaseSettings {
                url,
                max_connections,
            })
            .await
        }
    };
    let db = connect(2).await.unwrap();
    let other = connect(1).await.unwrap();
    let (events, _) = broadcast::channel(64);
    Harness {
        recorder: StatusRecorder::new(db.clone(), events)
            .flushing_every(every)
            .start(),
        db,
        other,
        _dir: dir,
    }
}

fn works() -> JobRef {
    JobRef {
        id: Uuid::new_v4(),
        kind: Kind::Works,
        task_id: None,
    }
}

fn persona() -> PersonaId {
    PersonaId::parse("p").unwrap()
}

async fn status(db: &DatabaseConnection, id: Uuid) -> Option<JobStatus> {
    let row = ingestion_job::Entity::find_by_id(id).one(db).await.unwrap();
    row.map(|row| row.status)
}

/// Waits a little for `answer`: `None` if it has not come.
async fn within<T>(answer: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_millis(300), answer)
        .await
        .ok()
}

/// Job `job` completed with `total_vectors`, leaving `manifest`.
fn completed(job: &JobRef, total_vectors: u64, manifest: Option<ManifestChange>) -> RecordStatus {
    RecordStatus(StatusUpdate::JobCompleted {
        job_id: job.id,
        total_vectors,
        warning: None,
        counts: Default::default(),
        manifest,
    })
}

/// A run's start and its jobs' starts, each answered before it is written (as it must be):
/// what the start answered.
async fn begin_and_start(h: &Harness, jobs: &[&JobRef]) -> Recorded {
    let begun = h.recorder.send(RecordStatus(StatusUpdate::BeginRun {
        persona: persona(),
        jobs: jobs.iter().map(|job| (*job).clone()).collect(),
    }));
    let begun = within(begun)
        .await
        .expect("the start is answered from its read")
        .unwrap()
        .unwrap();
    for job in jobs {
        let started = StatusUpdate::JobStarted {
            job_id: job.id,
            rerun: false,
        };
        within(h.recorder.send(RecordStatus(started)))
            .await
            .expect("the job's start is answered at once")
            .unwrap()
            .unwrap();
    }
    begun
}

#[actix::test]
async fn a_runs_start_and_its_jobs_starts_are_answered_before_their_writes_its_ends_after() {
    let h = start().await;
    let job = works();
    // The database's write lock is taken elsewhere: nothing the recorder writes can land.
    h.other.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();

    let begun = h.recorder.send(RecordStatus(StatusUpdate::BeginRun {
        persona: persona(),
        jobs: vec![job.clone()],
    }));
    let begun = within(begun)
        .await
        .expect("the start is answered from its read");
    assert_eq!(begun.unwrap().unwrap(), Recorded::default());
    let started = StatusUpdate::JobStarted {
        job_id: job.id,
        rerun: false,
    };
    let started = within(h.recorder.send(RecordStatus(started))).await;
    started
        .expect("the job's start is answered")
        .unwrap()
        .unwrap();
    assert_eq!(status(&h.db, job.id).await, None, "nothing is written yet");

    // What answers a job's end or a run's end must not be seen before the row says the same.
    let completed = h.recorder.send(completed(&job, 3, None));
    let finished = h.recorder.send(RecordStatus(StatusUpdate::FinishRun {
        persona: persona(),
        error: None,
    }));
    tokio::pin!(completed);
    tokio::pin!(finished);
    assert!(
        within(&mut completed).await.is_none(),
        "the job's end is answered only once it is written"
    );
    assert!(
        within(&mut finished).await.is_none(),
        "the run's end is answered only once it is written"
    );
    h.other.execute_unprepared("COMMIT").await.unwrap();
    completed.await.unwrap().unwrap();
    finished.await.unwrap().unwrap();
    assert_eq!(status(&h.db, job.id).await, Some(JobStatus::Completed));
    let row = crate::jobs::persona(&h.db, "p").await.unwrap().unwrap();
    assert_eq!(row.status, PersonaStatus::Active);
}

#[actix::test]
async fn a_write_that_fails_after_its_answer_fails_the_runs_end() {
    let h = start().await;
    let job = works();
    crate::jobs::create_pending(&h.db, &persona(), std::slice::from_ref(&job))
        .await
        .unwrap();
    // Another process completes the job, but commits only after the recorder read it pending.
    h.other.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    ingestion_job::Entity::update_many()
        .col_expr(
            ingestion_job::Column::Status,
            Expr::value(JobStatus::Completed),
        )
        .col_expr(ingestion_job::Column::TotalVectors, Expr::value(9i64))
        .filter(ingestion_job::Column::Id.eq(job.id))
        .exec(&h.other)
        .await
        .unwrap();

    let begun = h.recorder.send(RecordStatus(StatusUpdate::BeginRun {
        persona: persona(),
        jobs: vec![job.clone()],
    }));
    within(begun).await.unwrap().unwrap().unwrap();
    let started = StatusUpdate::JobStarted {
        job_id: job.id,
        rerun: false,
    };
    let started = within(h.recorder.send(RecordStatus(started))).await;
    started
        .expect("answered from the pending row read")
        .unwrap()
        .unwrap();
    let finished = h.recorder.send(RecordStatus(StatusUpdate::FinishRun {
        persona: persona(),
        error: None,
    }));
    h.other.execute_unprepared("COMMIT").await.unwrap();

    let error = finished.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("answered before its write failed") && error.contains("pending job"),
        "{error}"
    );
    // The job keeps what the other process wrote; the persona says why the run failed.
    let row = ingestion_job::Entity::find_by_id(job.id)
        .one(&h.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.status, row.total_vectors), (JobStatus::Completed, 9));
    let persona = crate::jobs::persona(&h.db, "p").await.unwrap().unwrap();
    assert_eq!(persona.status, PersonaStatus::Failed);
    let why = persona.error_message.unwrap_or_default();
    assert!(why.contains("answered before its write failed"), "{why}");
}

#[actix::test]
async fn updates_answered_early_wait_to_be_written_with_one_somebody_waits_for() {
    let h = flushing_every(Duration::from_secs(3600)).await;
    let (a, b) = (works(), works());
    let b = JobRef {
        kind: Kind::Quotes,
        ..b
    };
    begin_and_start(&h, &[&a, &b]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&h.db, a.id).await, None, "nobody waits for them yet");

    let completed = h.recorder.send(completed(&a, 1, None));
    within(completed).await.unwrap().unwrap().unwrap();
    assert_eq!(status(&h.db, a.id).await, Some(JobStatus::Completed));
    assert_eq!(status(&h.db, b.id).await, Some(JobStatus::Processing));
    let counters = h.recorder.send(Observe::default()).await.unwrap();
    assert_eq!(
        (counters.batches, counters.applied),
        (1, 4),
        "the run's start, its jobs' starts and the first end in one transaction"
    );
}

#[actix::test]
async fn updates_answered_early_are_written_by_the_next_flush_when_nobody_waits() {
    let h = flushing_every(Duration::from_millis(50)).await;
    let job = works();
    begin_and_start(&h, &[&job]).await;
    let written = async {
        while status(&h.db, job.id).await != Some(JobStatus::Processing) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), written)
        .await
        .expect("written by the next progress flush");
}

#[actix::test]
async fn a_run_written_with_its_jobs_end_leaves_the_manifest_that_end_wrote_settled() {
    use crate::manifest::FileEntry;
    let h = flushing_every(Duration::from_secs(3600)).await;
    let job = works();
    let replace = || ManifestChange::Replace {
        persona: persona(),
        kind: Kind::Works,
        entries: Arc::new(vec![FileEntry {
            source: "data/p/works/a.txt".into(),
            bytes: 10,
            modified_ns: 5,
            changed_ns: 6,
            inode: 7,
            content_hash: "0".repeat(32),
            chunks: vec![(0, 1)],
            fingerprint: "f".into(),
            recorded_ns: 1_000_000_000,
        }]),
    };
    // A run before this one left its manifest: this run's start unsettles it.
    replace().apply(&h.db).await.unwrap();

    let begun = begin_and_start(&h, &[&job]).await;
    assert!(begun.manifests.contains_key(&Kind::Works));
    // Written in one transaction with the run's start: the end's manifest comes after the
    // start's unsettling.
    let completed = h.recorder.send(completed(&job, 1, Some(replace())));
    within(completed).await.unwrap().unwrap().unwrap();
    let works = crate::manifest::load(&h.db, &persona(), &[Kind::Works])
        .await
        .unwrap();
    assert!(works[&Kind::Works].settled, "{works:?}");
}
