//! The embedded vector store: every collection in one local SQLite file (records with their
//! documents, metadata as JSON and embeddings as little-endian f32 blobs), queried by
//! brute-force cosine similarity. Zero setup, durable, and readable by any SQLite tool.
//! One connection: its writes come from the one StoreWriter anyway.
//!
//! Over 400 lines: the whole `VectorStore` trait for one backend, each method a statement or
//! two, with a transaction only where there are several (its tests are in `embedded/tests.rs`).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow,
    SqliteSynchronous,
};
use sea_orm::sqlx::{self, Arguments, ConnectOptions, Connection, Row};
use tokio::sync::Mutex;

use super::{CollectionInfo, CollectionSpec, QueryHit, StoreError, VectorStore};
use crate::record::Metadata;
use crate::record::Record;

/// Rows per INSERT statement (5 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 200;

/// Ids a DELETE names at most.
const IDS_PER_DELETE: usize = 500;

/// The embedded store has no server limit; this keeps one transaction's memory modest.
const MAX_BATCH: usize = 4096;

/// The store's one connection, held rather than pooled: a pool pings a SQLite connection each
/// time it takes it back, one more trip to the driver's thread per statement, and with one
/// connection the next statement waits for that ping (under `trigger_overhead`, 14 trips a
/// message where 7 statements need 7).
pub struct EmbeddedStore {
    conn: Mutex<SqliteConnection>,
    path: String,
}

fn backend(context: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::Failed(format!("embedded store: {context}: {e}"))
}

/// A statement's SQL and its parameters, in order.
struct Statement {
    sql: String,
    args: SqliteArguments<'static>,
}

impl Statement {
    fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: SqliteArguments::default(),
        }
    }

    fn bind<T>(mut self, value: T) -> Self
    where
        T: sqlx::Encode<'static, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'static,
    {
        self.args
            .add(value)
            .expect("text, integers and blobs encode for SQLite");
        self
    }
}

impl EmbeddedStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Failed(format!("embedded store {shown}: {e}")))?;
        }
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // Checkpoint every 40 MB of WAL rather than every 4 MB: fewer rewrites of the
            // same pages during a bulk ingestion.
            .pragma("wal_autocheckpoint", "10000")
            .disable_statement_logging()
            .connect()
            .await
            .map_err(backend(&shown))?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, embedding_model TEXT NOT NULL, dimension INTEGER NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            "CREATE TABLE IF NOT EXISTS records (collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE, id TEXT NOT NULL, document TEXT NOT NULL, metadata TEXT NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (collection, id))",
        ] {
            sqlx::query(ddl)
                .execute(&mut conn)
                .await
                .map_err(backend(&shown))?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: shown,
        })
    }

    async fn fetch_all(&self, statement: Statement) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        sqlx::query_with(&statement.sql, statement.args)
            .fetch_all(&mut *conn)
            .await
    }

    async fn fetch_optional(&self, statement: Statement) -> Result<Option<SqliteRow>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        sqlx::query_with(&statement.sql, statement.args)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Runs `statements` in order, in a transaction when there are `several`, alone otherwise:
    /// one statement is atomic as it is, and BEGIN and COMMIT are two trips more to the
    /// driver's thread, which a run of one small file pays in full.
    async fn write(
        &self,
        several: bool,
        statements: impl Iterator<Item = Statement> + Send,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.lock().await;
        if !several {
            for statement in statements {
                sqlx::query_with(&statement.sql, statement.args)
                    .execute(&mut *conn)
                    .await?;
            }
            return Ok(());
        }
        let mut txn = conn.begin().await?;
        for statement in statements {
            sqlx::query_with(&statement.sql, statement.args)
                .execute(&mut *txn)
                .await?;
        }
        txn.commit().await
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
        // Read first: a collection is made once and looked for on every run, and the INSERT,
        // even when it inserts nothing, is a write transaction of its own.
        if let Some(info) = self.collection(&spec.name).await? {
            return spec.accepts(info);
        }
        self.write(
            false,
            std::iter::once(
                Statement::new(
                    "INSERT INTO collections (name, embedding_model, dimension) VALUES (?, ?, ?) \
                     ON CONFLICT(name) DO NOTHING",
                )
                .bind(spec.name.clone())
                .bind(spec.embedding_model.clone())
                .bind(spec.dimension as i64),
            ),
        )
        .await
        .map_err(backend("creating a collection"))?;
        let info = self
            .collection(&spec.name)
            .await?
            .ok_or_else(|| StoreError::NoCollection(spec.name.clone()))?;
        spec.accepts(info)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        let row = self
            .fetch_optional(
                Statement::new(
                    "SELECT name, embedding_model, dimension FROM collections WHERE name = ?",
                )
                .bind(name.to_owned()),
            )
            .await
            .map_err(backend("reading a collection"))?;
        row.as_ref()
            .map(collection_info)
            .transpose()
            .map_err(backend("reading a collection"))
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        let rows = self
            .fetch_all(Statement::new(
                "SELECT name, embedding_model, dimension FROM collections ORDER BY name",
            ))
            .await
            .map_err(backend("listing collections"))?;
        rows.iter()
            .map(collection_info)
            .collect::<Result<_, _>>()
            .map_err(backend("listing collections"))
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        let statements = [
            "DELETE FROM records WHERE collection = ?",
            "DELETE FROM collections WHERE name = ?",
        ]
        .into_iter()
        .map(|sql| Statement::new(sql).bind(name.to_owned()));
        self.write(true, statements)
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
        let statements = records.chunks(ROWS_PER_STATEMENT).map(|rows| {
            let placeholders = vec!["(?, ?, ?, ?, ?)"; rows.len()].join(", ");
            let mut statement = Statement::new(format!(
                "INSERT INTO records (collection, id, document, metadata, embedding) VALUES {placeholders} \
                 ON CONFLICT(collection, id) DO UPDATE SET document = excluded.document, \
                 metadata = excluded.metadata, embedding = excluded.embedding"
            ));
            for r in rows {
                let metadata = serde_json::to_string(&r.metadata).expect("metadata is plain JSON");
                statement = statement
                    .bind(collection.name.clone())
                    .bind(r.id.clone())
                    .bind(r.document.clone())
                    .bind(metadata)
                    .bind(to_blob(&r.embedding));
            }
            statement
        });
        self.write(records.len() > ROWS_PER_STATEMENT, statements)
            .await
            .map_err(backend("upsert"))
    }

    async fn ids(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .fetch_all(
                Statement::new(
                    "SELECT id FROM records WHERE collection = ? ORDER BY id LIMIT ? OFFSET ?",
                )
                .bind(collection.name.clone())
                .bind(limit as i64)
                .bind(offset as i64),
            )
            .await
            .map_err(backend("listing ids"))?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(backend("listing ids")))
            .collect()
    }

    async fn get(
        &self,
        collection: &CollectionInfo,
        ids: &[String],
    ) -> Result<Vec<Record>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for group in ids.chunks(500) {
            let placeholders = vec!["?"; group.len()].join(", ");
            let mut statement = Statement::new(format!(
                "SELECT id, document, metadata, embedding FROM records \
                 WHERE collection = ? AND id IN ({placeholders})"
            ))
            .bind(collection.name.clone());
            for id in group {
                statement = statement.bind(id.clone());
            }
            let rows = self
                .fetch_all(statement)
                .await
                .map_err(backend("reading records"))?;
            for row in rows {
                let read = || -> Result<Record, sqlx::Error> {
                    let metadata: String = row.try_get("metadata")?;
                    let blob: Vec<u8> = row.try_get("embedding")?;
                    Ok(Record {
                        id: row.try_get("id")?,
                        document: row.try_get("document")?,
                        metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
                        embedding: from_blob(&blob),
                    })
                };
                found.push(read().map_err(backend("reading records"))?);
            }
        }
        Ok(found)
    }

    async fn records(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let rows = self
            .fetch_all(
                Statement::new(
                    "SELECT id, document, metadata FROM records WHERE collection = ? ORDER BY id \
                     LIMIT ? OFFSET ?",
                )
                .bind(collection.name.clone())
                .bind(limit as i64)
                .bind(offset as i64),
            )
            .await
            .map_err(backend("reading records"))?;
        rows.iter()
            .map(|row| {
                let metadata: String = row.try_get("metadata")?;
                Ok(Record {
                    id: row.try_get("id")?,
                    document: row.try_get("document")?,
                    metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
                    embedding: Vec::new(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend("reading records"))
    }

    async fn delete(
        &self,
        collection: &CollectionInfo,
        ids: Vec<String>,
    ) -> Result<(), StoreError> {
        let statements = ids.chunks(IDS_PER_DELETE).map(|group| {
            let placeholders = vec!["?"; group.len()].join(", ");
            let mut statement = Statement::new(format!(
                "DELETE FROM records WHERE collection = ? AND id IN ({placeholders})"
            ))
            .bind(collection.name.clone());
            for id in group {
                statement = statement.bind(id.clone());
            }
            statement
        });
        self.write(ids.len() > IDS_PER_DELETE, statements)
            .await
            .map_err(backend("delete"))
    }

    async fn count(&self, collection: &CollectionInfo) -> Result<u64, StoreError> {
        let row = self
            .fetch_optional(
                Statement::new("SELECT COUNT(*) AS n FROM records WHERE collection = ?")
                    .bind(collection.name.clone()),
            )
            .await
            .map_err(backend("count"))?
            .ok_or_else(|| StoreError::NoCollection(collection.name.clone()))?;
        Ok(row.try_get::<i64, _>("n").map_err(backend("count"))? as u64)
    }

    async fn query(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError> {
        let rows = self
            .fetch_all(
                Statement::new("SELECT id, embedding FROM records WHERE collection = ?")
                    .bind(collection.name.clone()),
            )
            .await
            .map_err(backend("query"))?;
        let mut scored = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id").map_err(backend("query"))?;
            let blob: Vec<u8> = row.try_get("embedding").map_err(backend("query"))?;
            scored.push((cosine(embedding, &from_blob(&blob)), id));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        scored.truncate(k);
        let mut hits = Vec::with_capacity(scored.len());
        for (score, id) in scored {
            let row = self
                .fetch_optional(
                    Statement::new(
                        "SELECT document, metadata FROM records WHERE collection = ? AND id = ?",
                    )
                    .bind(collection.name.clone())
                    .bind(id.clone()),
                )
                .await
                .map_err(backend("query"))?
                .ok_or_else(|| StoreError::NoCollection(collection.name.clone()))?;
            let metadata: String = row.try_get("metadata").map_err(backend("query"))?;
            hits.push(QueryHit {
                id,
                score,
                document: row.try_get("document").map_err(backend("query"))?,
                metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
            });
        }
        Ok(hits)
    }
}

/// A `collections` row.
fn collection_info(row: &SqliteRow) -> Result<CollectionInfo, sqlx::Error> {
    let name: String = row.try_get("name")?;
    Ok(CollectionInfo {
        id: name.clone(),
        name,
        embedding_model: row.try_get("embedding_model")?,
        dimension: row.try_get::<i64, _>("dimension")? as usize,
    })
}

#[cfg(test)]
mod tests;
