//! Test helpers: a private temporary world (data root, SQLite database, vector store) per test,
//! the shared corpus, and assertions on job rows.

use std::path::{Path, PathBuf};

use entities::ingestion_job;
use persona_ingest::config::{ConfigInputs, Settings};
use persona_ingest::pipeline::Engine;
use persona_ingest::store::{CollectionInfo, QueryHit};
use persona_ingest::{jobs, JobStatus, Kind, PersonaId};
use sea_orm::DatabaseConnection;
use tempfile::TempDir;

/// `shared/corpus/` beside the checkout (CI lays a copy there too).
pub fn corpus_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        root.is_dir(),
        "the shared corpus is missing at {}",
        root.display()
    );
    root.canonicalize().unwrap()
}

pub fn examples_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A temporary directory holding a data root, the jobs database and the vector store.
pub struct World {
    pub dir: TempDir,
    pub data_root: PathBuf,
}

impl World {
    /// An empty data root of its own.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_root = dir.path().join("corpus");
        std::fs::create_dir_all(&data_root).unwrap();
        Self { dir, data_root }
    }

    /// Reads personas from `root` (never written to), keeps its database and store here.
    pub fn reading(root: PathBuf) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            data_root: root,
        }
    }

    pub fn db_url(&self) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.dir.path().join("jobs.db").display()
        )
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("vectors.db")
    }

    /// Settings pointing at this world, plus `extra` overrides.
    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        let mut inputs = ConfigInputs::default()
            .with_override("data_root", self.data_root.display().to_string())
            .with_override("database.url", self.db_url())
            .with_override("store.path", self.store_path().display().to_string());
        for (key, value) in extra {
            inputs = inputs.with_override(key, *value);
        }
        Settings::load(&inputs).unwrap()
    }

    pub async fn engine(&self, extra: &[(&str, &str)]) -> Engine {
        Engine::start(self.settings(extra)).await.unwrap()
    }

    /// Writes a file under the data root.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.data_root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Copies a file of the shared corpus under the data root.
    pub fn copy_from_corpus(&self, from: &str, to: &str) {
        let bytes = std::fs::read(corpus_root().join(from)).unwrap();
        self.write(to, bytes);
    }
}

pub fn persona(id: &str) -> PersonaId {
    PersonaId::parse(id).unwrap()
}

/// A persona's jobs from its latest run, by kind.
pub async fn latest_jobs(db: &DatabaseConnection, persona: &str) -> Vec<ingestion_job::Model> {
    let mut rows = jobs::jobs_of_persona(db, persona).await.unwrap();
    let newest = rows.iter().map(|r| r.created_at).max();
    rows.retain(|r| Some(r.created_at) == newest);
    rows.sort_by_key(|r| r.kind);
    rows
}

/// The persona's row; it must exist.
pub async fn persona_row(db: &DatabaseConnection, id: &str) -> entities::persona::Model {
    jobs::persona(db, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no persona {id}"))
}

pub fn job_of(rows: &[ingestion_job::Model], kind: Kind) -> &ingestion_job::Model {
    rows.iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} job in {rows:#?}"))
}

/// Nothing may ever be left processing once runs are over.
pub async fn assert_nothing_processing(db: &DatabaseConnection) {
    for persona in jobs::personas(db).await.unwrap() {
        for job in jobs::jobs_of_persona(db, &persona.id).await.unwrap() {
            assert_ne!(
                job.status,
                JobStatus::Processing,
                "left processing: {job:#?}"
            );
            assert_ne!(job.status, JobStatus::Pending, "left pending: {job:#?}");
        }
    }
}

/// How many records the engine's store holds in a collection (0 when it does not exist).
pub async fn store_count(engine: &Engine, collection: &str) -> u64 {
    match engine.store.collection(collection).await.unwrap() {
        Some(info) => count(engine, &info).await,
        None => 0,
    }
}

async fn count(engine: &Engine, info: &CollectionInfo) -> u64 {
    engine.store.count(info).await.unwrap()
}

/// The `k` records of `collection` nearest to `text` as the engine's provider embeds it, best
/// first.
pub async fn nearest(engine: &Engine, collection: &str, text: &str, k: usize) -> Vec<QueryHit> {
    let info = engine.store.collection(collection).await.unwrap().unwrap();
    let vector = engine.provider.embed(vec![text.into()]).await.unwrap();
    engine.store.query(&info, &vector[0], k).await.unwrap()
}

/// Every completed job's `total_vectors` equals what its collection holds.
pub async fn assert_store_matches_rows(engine: &Engine, persona_id: &str) {
    let rows = latest_jobs(&engine.db, persona_id).await;
    for row in rows.iter().filter(|r| r.status == JobStatus::Completed) {
        let collection = engine.collection_name(&persona(persona_id), row.kind);
        assert_eq!(
            store_count(engine, &collection).await,
            row.total_vectors as u64,
            "{collection} vs its job row"
        );
    }
}

/// A loopback port nobody listens on, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
