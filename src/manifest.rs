//! Incremental re-ingestion: what the vector store holds of each source file, so that a run
//! reads, embeds and writes only what changed (LangChain's record manager, by file and chunk).
//!
//! The manifest (`ingestion_manifest`, one row a persona, kind and file) says, for each file,
//! its size, modification time and content hash as last read, each record's chunk index and
//! hash (of its document and metadata as written), and the [`fingerprint`] of what made them.
//! A run skips a file whose size and time did not change (its hash confirms when the time is
//! too close to when it was read to tell), re-chunks the others and embeds only the chunks whose
//! record hash changed, then deletes the records of files and chunks that are gone.
//!
//! It is a lower bound of the truth, never more: rows are replaced only when a job completes
//! (in the transaction that completes it); a failed job forgets the files it may have written;
//! and from a run's start to its job's end the rows are unsettled, so that after a process died
//! mid-run nothing is skipped and stale records are found by listing the collection. A store that
//! holds another number of records than the manifest says is not trusted either (see `ingestor`),
//! and `persona-ingest audit` compares the two record by record.

mod judge;
mod rows;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use crate::config::{Settings, StoreKind};
use crate::ids::record_id;
use crate::record::Record;
use crate::Kind;

pub use judge::{hash_file, judge, now_ns, stamp, Stamp, Verdict};
pub use rows::{drop_records, load, load_all, unsettle, unsettled, ManifestChange};

/// Bumped whenever the chunker or the record layout changes what records a file makes: every
/// manifest row then differs in its fingerprint and everything is made again.
pub const LAYOUT_VERSION: u32 = 1;

/// One file as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative to the data root, as records name it.
    pub source: String,
    pub bytes: u64,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// Its change time (ctime) and inode when last read: a file replaced by one of the same size
    /// and modification time differs in these (0: unknown, as for rows of before).
    pub changed_ns: i64,
    pub inode: i64,
    /// xxh3-128 of the file's bytes, 32 hex digits.
    pub content_hash: String,
    /// (chunk index, record hash), by chunk index.
    pub chunks: Vec<(u32, u64)>,
    pub fingerprint: String,
    /// When the file was last judged (before it was read), in nanoseconds since the Unix epoch:
    /// a modification time this close to it may hide a change made in the same clock tick.
    pub recorded_ns: i64,
}

impl FileEntry {
    /// The record hash of chunk `index`, if the file had that chunk.
    pub fn chunk_hash(&self, index: u32) -> Option<u64> {
        self.chunks
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|at| self.chunks[at].1)
    }

    /// The ids of the file's records.
    pub fn record_ids(&self, kind: Kind) -> impl Iterator<Item = String> + '_ {
        self.chunks
            .iter()
            .map(move |(index, _)| record_id(kind, &self.source, *index))
    }
}

/// What the manifest says of one persona's kind before a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindManifest {
    /// By source.
    pub files: HashMap<String, FileEntry>,
    /// Every row settled: no run died since they were written.
    pub settled: bool,
}

impl KindManifest {
    /// The records the manifest says the collection holds.
    pub fn records(&self) -> u64 {
        self.files.values().map(|f| f.chunks.len() as u64).sum()
    }
}

/// The fingerprint of what makes the records of one kind besides its files: how its files are
/// read (the chunking settings for works and the profile, which quotes do not use; the quotes
/// settings for quotes only), the embedding provider, model, dimension and tokenizer, the store
/// and the collection names, and [`LAYOUT_VERSION`]. 32 hex digits. The provider's address is
/// left out: the same model served from elsewhere makes the same vectors.
pub fn fingerprint(settings: &Settings, kind: Kind, model: &str, dimension: usize) -> String {
    let e = &settings.embedding;
    let store = &settings.store;
    let where_stored = match store.kind {
        StoreKind::Embedded => serde_json::json!({ "path": store.path }),
        StoreKind::Chroma => serde_json::json!({
            "url": store.url, "tenant": store.tenant, "database": store.database,
        }),
    };
    // How files are read, by kind: Debug, as these are read-only settings.
    let reading = match kind {
        // The input limit decides which quotes are refused as too long.
        Kind::Quotes => serde_json::json!({
            "quotes": format!("{:?}", settings.quotes),
            "max_input_tokens": e.max_input_tokens,
        }),
        Kind::Works | Kind::Profile => serde_json::json!({
            "target_tokens": settings.chunking.target_tokens,
            "overlap_tokens": settings.chunking.overlap_tokens,
        }),
    };
    let parts = serde_json::json!({
        "layout": LAYOUT_VERSION,
        "kind": kind.as_str(),
        "reading": reading,
        "sources": format!("{:?}", settings.sources),
        "provider": format!("{:?}", e.provider),
        "model": model,
        "dimension": dimension,
        "tokenizer": e.tokenizer,
        "truncate": e.truncate,
        "store": where_stored,
        "collections": settings.collections.name_template,
    });
    format!("{:032x}", xxh3_128(parts.to_string().as_bytes()))
}

/// [`fingerprint`] of each kind.
pub fn fingerprints(
    settings: &Settings,
    model: &str,
    dimension: usize,
) -> std::collections::BTreeMap<Kind, Arc<str>> {
    Kind::ALL
        .iter()
        .map(|kind| (*kind, fingerprint(settings, *kind, model, dimension).into()))
        .collect()
}

/// The hash of a record as written, its vector aside: its id, document and metadata (which
/// carries the model). Computed alike from a record about to be written and from one read back
/// from the store.
pub fn record_hash(id: &str, document: &str, metadata: &crate::record::Metadata) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(id.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(document.as_bytes());
    hasher.update(&[0xff]);
    // A BTreeMap serialises in key order: the same metadata always hashes the same. Written
    // straight into the hasher: the same bytes as its JSON text, without the text.
    serde_json::to_writer(HashWriter(&mut hasher), metadata).expect("metadata serialises");
    hasher.digest()
}

/// Bytes written go into the hash.
struct HashWriter<'a>(&'a mut Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`hash_of`] every record `collection` holds, by id: what the store holds as the engine
/// compares it (the ingestor when its manifest cannot be trusted, and `audit`).
pub async fn stored_hashes(
    store: &dyn crate::store::VectorStore,
    collection: &crate::store::CollectionInfo,
) -> Result<HashMap<String, u64>, crate::store::StoreError> {
    let mut hashes = HashMap::new();
    crate::store::each_record(store, collection, |r| {
        hashes.insert(r.id.clone(), hash_of(&r));
    })
    .await?;
    Ok(hashes)
}

/// [`record_hash`] of a record.
pub fn hash_of(record: &Record) -> u64 {
    record_hash(&record.id, &record.document, &record.metadata)
}

#[cfg(test)]
mod tests;
