//! The connection that writes in place against sqlx's on one file: the same rows read either
//! way, the same bytes written either way, another writer's lock waited for off the caller's
//! thread, and several statements outside a transaction standing or falling together.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use entities::{ingestion_job, manifest_entry, persona};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IntoActiveModel,
    Statement,
};
use uuid::Uuid;

use super::InlineSqlite;
use crate::config::DatabaseSettings;
use crate::{JobStatus, Kind, PersonaStatus};

struct Files {
    pool: DatabaseConnection,
    inline: InlineSqlite,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let pool = crate::db::connect(&DatabaseSettings {
        url: format!("sqlite://{}?mode=rwc", path.display()),
        max_connections: 2,
    })
    .await
    .unwrap();
    let inline = InlineSqlite::open(&path).unwrap();
    Files {
        pool,
        inline,
        path,
        _dir: dir,
    }
}

fn at(nanos: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 16, 10, 5).unwrap()
        + chrono::Duration::nanoseconds(nanos.into())
}

fn a_persona(id: &str) -> persona::Model {
    persona::Model {
        id: id.into(),
        name: "a name \"quoted\"; and ünïcödé".into(),
        status: PersonaStatus::Ingesting,
        error_message: None,
        created_at: at(989_675_788),
        updated_at: at(0),
    }
}

/// A job with every optional field set (`full`) or none.
fn a_job(persona: &str, kind: Kind, full: bool) -> ingestion_job::Model {
    ingestion_job::Model {
        id: Uuid::new_v4(),
        persona_id: persona.into(),
        kind,
        status: if full {
            JobStatus::Failed
        } else {
            JobStatus::Pending
        },
        progress: 42,
        total_vectors: i64::from(i32::MAX) + 7,
        error_message: full.then(|| "it broke; twice".into()),
        warning_message: full.then(String::new),
        task_id: full.then(|| "celery-task-1".into()),
        attempts: 3,
        created_at: at(1),
        started_at: full.then(|| at(500_000_000)),
        completed_at: full.then(|| at(999_999_999)),
        files_read: 1,
        files_skipped: 2,
        chunks_embedded: 3,
        chunks_unchanged: 4,
        chunks_deleted: 5,
        tokens_embedded: 6,
    }
}

fn a_manifest_row(persona: &str, settled: bool) -> manifest_entry::Model {
    manifest_entry::Model {
        persona_id: persona.into(),
        kind: Kind::Works,
        source: "works/a b;c.txt".into(),
        bytes: 1 << 40,
        modified_ns: -1,
        content_hash: "00ff".into(),
        chunk_count: 9,
        chunks: "[\"a\",\"b\"]".into(),
        fingerprint: "fp".into(),
        settled,
        recorded_at: at(123),
        changed_ns: 7,
        inode: 8,
    }
}

#[tokio::test]
async fn rows_read_in_place_equal_the_rows_sqlx_reads() {
    let f = files().await;
    let persona = a_persona("twain");
    f.pool.insert_persona(persona.clone()).await;
    let jobs = [
        a_job("twain", Kind::Works, true),
        a_job("twain", Kind::Quotes, false),
    ];
    for job in &jobs {
        f.pool.insert_job(job.clone()).await;
    }
    manifest_entry::Entity::insert(a_manifest_row("twain", false).into_active_model())
        .exec(&f.pool)
        .await
        .unwrap();

    let mut read = ingestion_job::Entity::find().all(&f.inline).await.unwrap();
    read.sort_by_key(|job| job.kind);
    let mut expected = jobs.to_vec();
    expected.sort_by_key(|job| job.kind);
    assert_eq!(read, expected);
    assert_eq!(
        ingestion_job::Entity::find()
            .all(&f.pool)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        persona::Entity::find().all(&f.inline).await.unwrap(),
        vec![persona]
    );
    assert_eq!(
        manifest_entry::Entity::find().all(&f.inline).await.unwrap(),
        vec![a_manifest_row("twain", false)]
    );
}

/// Every column of a row as SQLite holds it (its storage class and its text).
/// `skip` aside, in the table's order.
async fn stored(db: &DatabaseConnection, table: &str, skip: &str, id: String) -> Vec<String> {
    let columns: Vec<String> = db
        .query_all(Statement::from_string(
            DbBackend::Sqlite,
            format!("SELECT name FROM pragma_table_info('{table}')"),
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .filter(|name| name != skip)
        .collect();
    let mut held = Vec::new();
    for column in columns {
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Sqlite,
                format!(
                    "SELECT typeof(\"{column}\") || ':' || quote(\"{column}\") AS held \
                     FROM \"{table}\" WHERE {id}"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        held.push(format!(
            "{column} {}",
            row.try_get::<String>("", "held").unwrap()
        ));
    }
    held
}

#[tokio::test]
async fn rows_written_in_place_are_stored_as_sqlx_stores_them() {
    let f = files().await;
    f.pool.insert_persona(a_persona("by-sqlx")).await;
    f.inline.insert_persona(a_persona("in-place")).await;
    let persona = |id: &'static str| stored(&f.pool, "personas", "id", format!("id = '{id}'"));
    assert_eq!(persona("by-sqlx").await, persona("in-place").await);
    for full in [true, false] {
        let by_sqlx = a_job("by-sqlx", Kind::Works, full);
        let in_place = a_job("in-place", Kind::Works, full);
        f.pool.insert_job(by_sqlx.clone()).await;
        f.inline.insert_job(in_place.clone()).await;
        let job = |job: &ingestion_job::Model| {
            let id = format!("id = x'{}'", hex(job.id.as_bytes()));
            stored(&f.pool, "ingestion_jobs", "persona_id", id)
        };
        let (by_sqlx, in_place) = (job(&by_sqlx).await, job(&in_place).await);
        // The ids differ, and are 16-byte blobs either way.
        assert!(in_place[0].starts_with("id blob:X'"), "{}", in_place[0]);
        assert_eq!(by_sqlx[1..], in_place[1..]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Inserting through either connection.
#[async_trait::async_trait]
trait Writer: Sync {
    async fn insert_persona(&self, persona: persona::Model);
    async fn insert_job(&self, job: ingestion_job::Model);
}

#[async_trait::async_trait]
impl<C: ConnectionTrait> Writer for C {
    async fn insert_persona(&self, persona: persona::Model) {
        persona.into_active_model().insert(self).await.unwrap();
    }

    async fn insert_job(&self, job: ingestion_job::Model) {
        job.into_active_model().insert(self).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn another_writers_lock_is_waited_for_off_the_callers_thread() {
    let f = files().await;
    f.pool.insert_persona(a_persona("twain")).await;
    // Another process holds the write lock for 300 ms.
    let (locked, is_locked) = std::sync::mpsc::channel();
    let path = f.path.clone();
    let other = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE personas SET name = 'other'")
            .unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        conn.execute_batch("COMMIT").unwrap();
    });
    is_locked.recv().unwrap();
    // This thread is the runtime's only one: were the write waiting on it, nothing would tick.
    let ticks = tokio::spawn(async {
        let mut ticks = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticks += 1;
            if ticks == 10 {
                return ticks;
            }
        }
    });
    let update = Statement::from_string(DbBackend::Sqlite, "UPDATE personas SET name = 'in place'");
    let changed = f.inline.execute(update).await.unwrap().rows_affected();
    assert_eq!(changed, 1);
    assert!(
        ticks.is_finished(),
        "the runtime was blocked while the lock was waited for"
    );
    other.join().unwrap();
    let persona = persona::Entity::find_by_id("twain")
        .one(&f.pool)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(persona.name, "in place");
}

#[tokio::test]
async fn statements_run_as_one_outside_a_transaction_stand_or_fall_together() {
    let f = files().await;
    f.pool.insert_persona(a_persona("twain")).await;
    // The second breaks a NOT NULL constraint after the first changed a row.
    let both = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "UPDATE personas SET name = ? WHERE id = ?;\nUPDATE personas SET name = NULL WHERE id = ?",
        ["changed".into(), "twain".into(), "twain".into()],
    );
    let e = f.inline.execute(both).await.unwrap_err();
    assert!(e.to_string().contains("NOT NULL"), "{e}");
    assert!(e.to_string().contains("jobs.db"), "names the file: {e}");
    let persona = persona::Entity::find_by_id("twain")
        .one(&f.pool)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(persona.name, "changed");

    let txn = f.inline.begin().await.unwrap();
    let rename = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "UPDATE personas SET name = ? WHERE id = ?",
        ["dropped".into(), "twain".into()],
    );
    txn.execute(rename).await.unwrap();
    drop(txn);
    let persona = persona::Entity::find_by_id("twain")
        .one(&f.inline)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        persona.name, "dropped",
        "a transaction dropped uncommitted is rolled back"
    );
}
