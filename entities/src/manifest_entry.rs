//! One row of `ingestion_manifest`: a source file of a persona's kind as the vector store holds
//! it, so that a later run reads, embeds and writes only what changed.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Kind;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "ingestion_manifest")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub persona_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: Kind,
    /// The file, relative to the data root (`data/mark-twain/works/x.txt`), as records name it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub source: String,
    pub bytes: i64,
    /// Its modification time when last read, in nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// xxh3-128 of its bytes, 32 hex digits.
    pub content_hash: String,
    pub chunk_count: i32,
    /// JSON `[[chunk index, record hash], ...]`: each record's id and the xxh3-64 (16 hex
    /// digits) of its document and metadata as written.
    pub chunks: String,
    /// What made the records: chunking, provider, model, dimension, store, engine version.
    pub fingerprint: String,
    /// False from a run's start to its job's end.
    pub settled: bool,
    pub recorded_at: DateTimeUtc,
    /// Its change time (ctime) when last read, in nanoseconds since the Unix epoch (0: unknown).
    pub changed_ns: i64,
    /// Its inode when last read (0: unknown).
    pub inode: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
