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
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
    TransactionTrait, Value,
};

use super::{CollectionInfo, CollectionSpec, QueryHit, StoreError, VectorStore};
use crate::record::Metadata;
use crate::record::Record;

/// Rows per INSERT statement (5 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 200;

/// Ids a DELETE names at most.
const IDS_PER_DELETE: usize = 500;

/// The embedded store has no server limit; this keeps one transaction's memory modest.
const MAX_BATCH: usize = 4096;

pub struct EmbeddedStore {
    db: DatabaseConnection,
    path: String,
}

fn backend(context: &str) -> impl Fn(DbErr) -> StoreError + '_ {
    move |e| StoreError::Failed(format!("embedded store: {context}: {e}"))
}

impl EmbeddedStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Failed(format!("embedded store {shown}: {e}")))?;
        }
        let mut options = ConnectOptions::new(format!("sqlite://{shown}?mode=rwc"));
        options
            .max_connections(1)
            .min_connections(1)
            // A local file: a ping before each statement would only double its thread hand-offs.
            .test_before_acquire(false)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    // Checkpoint every 40 MB of WAL rather than every 4 MB: fewer rewrites of the
                    // same pages during a bulk ingestion.
                    .pragma("wal_autocheckpoint", "10000")
            });
        let db = Database::connect(options).await.map_err(backend(&shown))?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, embedding_model TEXT NOT NULL, dimension INTEGER NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            "CREATE TABLE IF NOT EXISTS records (collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE, id TEXT NOT NULL, document TEXT NOT NULL, metadata TEXT NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (collection, id))",
        ] {
            db.execute_unprepared(ddl).await.map_err(backend(&shown))?;
        }
        Ok(Self { db, path: shown })
    }

    fn stmt(sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
    }

    /// Runs `statements` in order, in a transaction when there are `several`, alone otherwise:
    /// one statement is atomic as it is, and BEGIN and COMMIT are two trips more to the
    /// driver's thread, which a run of one small file pays in full.
    async fn write(
        &self,
        several: bool,
        statements: impl Iterator<Item = Statement> + Send,
    ) -> Result<(), sea_orm::DbErr> {
        if !several {
            for statement in statements {
                self.db.execute(statement).await?;
            }
            return Ok(());
        }
        let txn = self.db.begin().await?;
        for statement in statements {
            txn.execute(statement).await?;
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
        self.db
            .execute(Self::stmt(
                "INSERT INTO collections (name, embedding_model, dimension) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
                vec![spec.name.clone().into(), spec.embedding_model.clone().into(), (spec.dimension as i64).into()],
            ))
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
            .db
            .query_one(Self::stmt(
                "SELECT name, embedding_model, dimension FROM collections WHERE name = ?",
                vec![name.into()],
            ))
            .await
            .map_err(backend("reading a collection"))?;
        let Some(row) = row else { return Ok(None) };
        let get = backend("reading a collection");
        let name: String = row.try_get("", "name").map_err(&get)?;
        Ok(Some(CollectionInfo {
            id: name.clone(),
            name,
            embedding_model: row.try_get("", "embedding_model").map_err(&get)?,
            dimension: row.try_get::<i64>("", "dimension").map_err(&get)? as usize,
        }))
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        let rows = self
            .db
            .query_all(Self::stmt(
                "SELECT name, embedding_model, dimension FROM collections ORDER BY name",
                vec![],
            ))
            .await
            .map_err(backend("listing collections"))?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("", "name")?;
                Ok(CollectionInfo {
                    id: name.clone(),
                    name,
                    embedding_model: row.try_get("", "embedding_model")?,
                    dimension: row.try_get::<i64>("", "dimension")? as usize,
                })
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(backend("listing collections"))
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        let statements = [
            "DELETE FROM records WHERE collection = ?",
            "DELETE FROM collections WHERE name = ?",
        ]
        .into_iter()
        .map(|sql| Self::stmt(sql, vec![name.into()]));
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
            let sql = format!(
                "INSERT INTO records (collection, id, document, metadata, embedding) VALUES {placeholders} \
                 ON CONFLICT(collection, id) DO UPDATE SET document = excluded.document, \
                 metadata = excluded.metadata, embedding = excluded.embedding"
            );
            let mut values = Vec::with_capacity(rows.len() * 5);
            for r in rows {
                let metadata = serde_json::to_string(&r.metadata).expect("metadata is plain JSON");
                values.extend([
                    Value::from(collection.name.clone()),
                    r.id.clone().into(),
                    r.document.clone().into(),
                    metadata.into(),
                    to_blob(&r.embedding).into(),
                ]);
            }
            Self::stmt(&sql, values)
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
            .db
            .query_all(Self::stmt(
                "SELECT id FROM records WHERE collection = ? ORDER BY id LIMIT ? OFFSET ?",
                vec![
                    collection.name.clone().into(),
                    (limit as i64).into(),
                    (offset as i64).into(),
                ],
            ))
            .await
            .map_err(backend("listing ids"))?;
        rows.iter()
            .map(|row| row.try_get("", "id").map_err(backend("listing ids")))
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
            let mut values: Vec<sea_orm::Value> = vec![collection.name.clone().into()];
            values.extend(group.iter().map(|id| id.clone().into()));
            let rows = self
                .db
                .query_all(Self::stmt(
                    &format!(
                        "SELECT id, document, metadata, embedding FROM records \
                         WHERE collection = ? AND id IN ({placeholders})"
                    ),
                    values,
                ))
                .await
                .map_err(backend("reading records"))?;
            for row in rows {
                let read = || -> Result<Record, sea_orm::DbErr> {
                    let metadata: String = row.try_get("", "metadata")?;
                    let blob: Vec<u8> = row.try_get("", "embedding")?;
                    Ok(Record {
                        id: row.try_get("", "id")?,
                        document: row.try_get("", "document")?,
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
            .db
            .query_all(Self::stmt(
                "SELECT id, document, metadata FROM records WHERE collection = ? ORDER BY id \
                 LIMIT ? OFFSET ?",
                vec![
                    collection.name.clone().into(),
                    (limit as i64).into(),
                    (offset as i64).into(),
                ],
            ))
            .await
            .map_err(backend("reading records"))?;
        rows.iter()
            .map(|row| {
                let metadata: String = row.try_get("", "metadata")?;
                Ok(Record {
                    id: row.try_get("", "id")?,
                    document: row.try_get("", "document")?,
                    metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
                    embedding: Vec::new(),
                })
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(backend("reading records"))
    }

    async fn delete(
        &self,
        collection: &CollectionInfo,
        ids: Vec<String>,
    ) -> Result<(), StoreError> {
        let statements = ids.chunks(IDS_PER_DELETE).map(|group| {
            let placeholders = vec!["?"; group.len()].join(", ");
            let mut values = vec![Value::from(collection.name.clone())];
            values.extend(group.iter().map(|id| Value::from(id.clone())));
            Self::stmt(
                &format!("DELETE FROM records WHERE collection = ? AND id IN ({placeholders})"),
                values,
            )
        });
        self.write(ids.len() > IDS_PER_DELETE, statements)
            .await
            .map_err(backend("delete"))
    }

    async fn count(&self, collection: &CollectionInfo) -> Result<u64, StoreError> {
        let row = self
            .db
            .query_one(Self::stmt(
                "SELECT COUNT(*) AS n FROM records WHERE collection = ?",
                vec![collection.name.clone().into()],
            ))
            .await
            .map_err(backend("count"))?
            .ok_or_else(|| StoreError::NoCollection(collection.name.clone()))?;
        Ok(row.try_get::<i64>("", "n").map_err(backend("count"))? as u64)
    }

    async fn query(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError> {
        let rows = self
            .db
            .query_all(Self::stmt(
                "SELECT id, embedding FROM records WHERE collection = ?",
                vec![collection.name.clone().into()],
            ))
            .await
            .map_err(backend("query"))?;
        let mut scored = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("", "id").map_err(backend("query"))?;
            let blob: Vec<u8> = row.try_get("", "embedding").map_err(backend("query"))?;
            scored.push((cosine(embedding, &from_blob(&blob)), id));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        scored.truncate(k);
        let mut hits = Vec::with_capacity(scored.len());
        for (score, id) in scored {
            let row = self
                .db
                .query_one(Self::stmt(
                    "SELECT document, metadata FROM records WHERE collection = ? AND id = ?",
                    vec![collection.name.clone().into(), id.clone().into()],
                ))
                .await
                .map_err(backend("query"))?
                .ok_or_else(|| StoreError::NoCollection(collection.name.clone()))?;
            let metadata: String = row.try_get("", "metadata").map_err(backend("query"))?;
            hits.push(QueryHit {
                id,
                score,
                document: row.try_get("", "document").map_err(backend("query"))?,
                metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests;
