//! The embedded vector store: every collection in one local SQLite file (records with their
//! documents, metadata as JSON and embeddings as little-endian f32 blobs), queried by
//! brute-force cosine similarity. Zero setup, durable, and readable by any SQLite tool.
//! One connection (rusqlite, on the caller's thread): its writes come from the one StoreWriter
//! anyway.
//!
//! Over 400 lines: the whole `VectorStore` trait for one backend, each method a statement or
//! two, every write in a transaction (its tests are in `embedded/tests.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{CollectionInfo, CollectionSpec, QueryHit, StoreError, VectorStore};
use crate::record::Metadata;
use crate::record::Record;

/// Rows per INSERT statement (5 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 200;

/// Ids a DELETE names at most.
const IDS_PER_DELETE: usize = 500;

/// The embedded store has no server limit; this keeps one transaction's memory modest.
const MAX_BATCH: usize = 4096;

/// The store's one connection, used on the caller's thread (rusqlite, not an async driver).
/// Its calls come from the StoreWriter's thread of its own, and each is a few statements of
/// microseconds: an async driver hands every statement to a thread of its own and back, two
/// thread switches a statement, which under `trigger_overhead` cost more than the statements.
/// A call that finds the connection taken (a query while a large upsert runs) waits for it on
/// Tokio's blocking pool, never on an async thread.
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

fn backend(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Failed(format!("embedded store: {context}: {e}"))
}

impl EmbeddedStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Failed(format!("embedded store {shown}: {e}")))?;
        }
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            // Checkpoint every 40 MB of WAL rather than every 4 MB: fewer rewrites of the
            // same pages during a bulk ingestion.
            conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, embedding_model TEXT NOT NULL, dimension INTEGER NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
                 CREATE TABLE IF NOT EXISTS records (collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE, id TEXT NOT NULL, document TEXT NOT NULL, metadata TEXT NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (collection, id));",
            )?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Failed(format!("embedded store {shown}: {e}")))?
        .map_err(backend(&shown))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: shown,
        })
    }

    /// Runs `work` on the connection: on this thread when it is free, else on the blocking
    /// pool once it is.
    async fn with<T, F>(&self, work: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Ok(mut conn) = self.conn.try_lock() {
            return work(&mut conn);
        }
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            work(&mut conn.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .unwrap_or_else(crate::db::not_run)
    }

    /// Runs `statements` (SQL and parameters) in order, in one transaction.
    async fn write(
        &self,
        statements: Vec<(String, Vec<rusqlite::types::Value>)>,
    ) -> rusqlite::Result<()> {
        self.with(move |conn| {
            let txn = conn.transaction()?;
            for (sql, values) in &statements {
                txn.prepare_cached(sql)?.execute(params_from_iter(values))?;
            }
            txn.commit()
        })
        .await
    }
}

fn to_blob(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded store {}", self.path)
    }

    async fn max_batch_size(&self) -> Result<usize, StoreError> {
        Ok(MAX_BATCH)
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<CollectionInfo, StoreError> {
        crate::naming::check_collection_name(&spec.name)
            .map_err(|why| StoreError::Failed(format!("collection name {:?}: {why}", spec.name)))?;
        let wanted = spec.clone();
        let info = self
            .with(move |conn| {
                // Read first: a collection is made once and looked for on every run, and the
                // INSERT, even when it inserts nothing, is a write transaction of its own.
                if let Some(info) = read_collection(conn, &wanted.name)? {
                    return Ok(Some(info));
                }
                conn.prepare_cached(
                    "INSERT INTO collections (name, embedding_model, dimension) VALUES (?, ?, ?) \
                     ON CONFLICT(name) DO NOTHING",
                )?
                .execute(params![
                    wanted.name,
                    wanted.embedding_model,
                    wanted.dimension as i64
                ])?;
                read_collection(conn, &wanted.name)
            })
            .await
            .map_err(backend("creating a collection"))?
            .ok_or_else(|| StoreError::NoCollection(spec.name.clone()))?;
        spec.accepts(info)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| read_collection(conn, &name))
            .await
            .map_err(backend("reading a collection"))
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT name, embedding_model, dimension FROM collections ORDER BY name",
            )?
            .query_map([], collection_info)?
            .collect()
        })
        .await
        .map_err(backend("listing collections"))
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        let statements = [
            "DELETE FROM records WHERE collection = ?",
            "DELETE FROM collections WHERE name = ?",
        ]
        .into_iter()
        .map(|sql| (sql.to_owned(), vec![name.to_owned().into()]))
        .collect();
        self.write(statements)
            .await
            .map_err(backend("delete collection"))
    }

    async fn upsert(
        &self,
        collection: &CollectionInfo,
        records: &[Record],
    ) -> Result<(), StoreError> {
        if let Some(bad) = records
            .iter()
            .find(|r| r.embedding.len() != collection.dimension)
        {
            return Err(StoreError::Failed(format!(
                "record {} has an embedding of dimension {}; collection {} holds dimension {}",
                bad.id,
                bad.embedding.len(),
                collection.name,
                collection.dimension
            )));
        }
        let statements = records
            .chunks(ROWS_PER_STATEMENT)
            .map(|rows| {
                let placeholders = vec!["(?, ?, ?, ?, ?)"; rows.len()].join(", ");
                let sql = format!(
                    "INSERT INTO records (collection, id, document, metadata, embedding) VALUES {placeholders} \
                     ON CONFLICT(collection, id) DO UPDATE SET document = excluded.document, \
                     metadata = excluded.metadata, embedding = excluded.embedding"
                );
                let mut values = Vec::with_capacity(rows.len() * 5);
                for r in rows {
                    let metadata =
                        serde_json::to_string(&r.metadata).expect("metadata is plain JSON");
                    values.extend([
                        collection.name.clone().into(),
                        r.id.clone().into(),
                        r.document.clone().into(),
                        metadata.into(),
                        to_blob(&r.embedding).into(),
                    ]);
                }
                (sql, values)
            })
            .collect();
        self.write(statements).await.map_err(backend("upsert"))
    }

    async fn ids(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let name = collection.name.clone();
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT id FROM records WHERE collection = ? ORDER BY id LIMIT ? OFFSET ?",
            )?
            .query_map(params![name, limit as i64, offset as i64], |row| row.get(0))?
            .collect()
        })
        .await
        .map_err(backend("listing ids"))
    }

    async fn get(
        &self,
        collection: &CollectionInfo,
        ids: &[String],
    ) -> Result<Vec<Record>, StoreError> {
        let name = collection.name.clone();
        let ids = ids.to_vec();
        self.with(move |conn| {
            let mut found = Vec::with_capacity(ids.len());
            for group in ids.chunks(500) {
                let placeholders = vec!["?"; group.len()].join(", ");
                let mut statement = conn.prepare(&format!(
                    "SELECT id, document, metadata, embedding FROM records \
                     WHERE collection = ? AND id IN ({placeholders})"
                ))?;
                let values = std::iter::once(&name).chain(group);
                let rows = statement.query_map(params_from_iter(values), |row| {
                    let metadata: String = row.get("metadata")?;
                    let blob: Vec<u8> = row.get("embedding")?;
                    Ok(Record {
                        id: row.get("id")?,
                        document: row.get("document")?,
                        metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
                        embedding: from_blob(&blob),
                    })
                })?;
                for record in rows {
                    found.push(record?);
                }
            }
            Ok(found)
        })
        .await
        .map_err(backend("reading records"))
    }

    async fn records(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let name = collection.name.clone();
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT id, document, metadata FROM records WHERE collection = ? ORDER BY id \
                 LIMIT ? OFFSET ?",
            )?
            .query_map(params![name, limit as i64, offset as i64], |row| {
                let metadata: String = row.get("metadata")?;
                Ok(Record {
                    id: row.get("id")?,
                    document: row.get("document")?,
                    metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
                    embedding: Vec::new(),
                })
            })?
            .collect()
        })
        .await
        .map_err(backend("reading records"))
    }

    async fn delete(
        &self,
        collection: &CollectionInfo,
        ids: Vec<String>,
    ) -> Result<(), StoreError> {
        let statements = ids
            .chunks(IDS_PER_DELETE)
            .map(|group| {
                let placeholders = vec!["?"; group.len()].join(", ");
                let mut values: Vec<rusqlite::types::Value> = vec![collection.name.clone().into()];
                values.extend(group.iter().map(|id| id.clone().into()));
                (
                    format!("DELETE FROM records WHERE collection = ? AND id IN ({placeholders})"),
                    values,
                )
            })
            .collect();
        self.write(statements).await.map_err(backend("delete"))
    }

    async fn count(&self, collection: &CollectionInfo) -> Result<u64, StoreError> {
        let name = collection.name.clone();
        let n: i64 = self
            .with(move |conn| {
                conn.prepare_cached("SELECT COUNT(*) FROM records WHERE collection = ?")?
                    .query_row([name], |row| row.get(0))
            })
            .await
            .map_err(backend("count"))?;
        Ok(n as u64)
    }

    async fn query(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError> {
        let name = collection.name.clone();
        let embedding = embedding.to_vec();
        let hits = self
            .with(move |conn| {
                let mut scored = conn
                    .prepare_cached("SELECT id, embedding FROM records WHERE collection = ?")?
                    .query_map([&name], |row| {
                        let blob: Vec<u8> = row.get(1)?;
                        Ok((
                            cosine(&embedding, &from_blob(&blob)),
                            row.get::<_, String>(0)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                scored.truncate(k);
                let mut read = conn.prepare_cached(
                    "SELECT document, metadata FROM records WHERE collection = ? AND id = ?",
                )?;
                let mut hits = Vec::with_capacity(scored.len());
                for (score, id) in scored {
                    let hit = read
                        .query_row(params![name, id], |row| {
                            let metadata: String = row.get(1)?;
                            Ok(QueryHit {
                                id: id.clone(),
                                score,
                                document: row.get(0)?,
                                metadata: serde_json::from_str::<Metadata>(&metadata)
                                    .unwrap_or_default(),
                            })
                        })
                        .optional()?;
                    hits.extend(hit);
                }
                Ok(hits)
            })
            .await
            .map_err(backend("query"))?;
        Ok(hits)
    }
}

/// A collection by name, if the store holds it.
fn read_collection(conn: &Connection, name: &str) -> rusqlite::Result<Option<CollectionInfo>> {
    conn.prepare_cached("SELECT name, embedding_model, dimension FROM collections WHERE name = ?")?
        .query_row([name], collection_info)
        .optional()
}

/// A `collections` row.
fn collection_info(row: &Row<'_>) -> rusqlite::Result<CollectionInfo> {
    let name: String = row.get("name")?;
    Ok(CollectionInfo {
        id: name.clone(),
        name,
        embedding_model: row.get("embedding_model")?,
        dimension: row.get::<_, i64>("dimension")? as usize,
    })
}

#[cfg(test)]
mod tests;
