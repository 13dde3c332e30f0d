//! The reading half of a job, on a blocking thread: each planned file judged against the
//! manifest (skipped when unchanged), the others read and chunked, each chunk made into a record
//! and sent into the bounded channel unless the manifest says the store holds it as it is. What
//! it read becomes the kind's new manifest rows.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use xxhash_rust::xxh3::xxh3_128;

use super::trust::Basis;
use super::{IngestJob, Shared};
use crate::counts::JobCounts;
use crate::ids::record_id;
use crate::manifest::{self, FileEntry, KindManifest, Verdict};
use crate::record::MetaValue;
use crate::record::Record;
use crate::sources::{Chunk, ChunkSink, Source, SourceError, SourcePlan};
use crate::tokens::TokenCounter;
use crate::Kind;

/// A chunk made into a record (all but its vector), by the reader thread, so that this work
/// stays off the actor thread.
pub(super) struct Prepared {
    pub record: Record,
    /// How far into the whole plan (in bytes) the reader was when it made it.
    pub bytes_done: u64,
    /// Its tokens, as the model counts them (where known).
    pub tokens: u64,
}

/// What reading found: the kind's files as they now are, and what it took.
pub(super) struct ReadReport {
    pub warnings: Vec<String>,
    pub entries: Vec<FileEntry>,
    /// Files read and skipped, chunks unchanged.
    pub counts: JobCounts,
}

/// Passes chunks from the reader thread into the channel; blocks while the channel is full.
struct ChannelSink {
    pub tx: mpsc::Sender<Prepared>,
    pub shared: Arc<Shared>,
    pub template: RecordTemplate,
    pub tokens: TokenCounter,
    bytes_before: u64,
    /// The row of the file being read, when its chunks may be left as they are.
    previous: Option<FileEntry>,
    /// The store's record hashes by id, when the manifest could not be trusted.
    held: Option<Arc<HashMap<String, u64>>>,
    /// The file's chunks so far: (chunk index, record hash).
    chunks: Vec<(u32, u64)>,
    counts: JobCounts,
}

impl ChannelSink {
    fn new(
        tx: mpsc::Sender<Prepared>,
        shared: Arc<Shared>,
        template: RecordTemplate,
        tokens: TokenCounter,
    ) -> Self {
        Self {
            tx,
            shared,
            template,
            tokens,
            bytes_before: 0,
            previous: None,
            held: None,
            chunks: Vec::new(),
            counts: JobCounts::default(),
        }
    }
}

impl ChunkSink for ChannelSink {
    fn accept(&mut self, chunk: Chunk, bytes_done: u64) -> ControlFlow<()> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        self.shared.chunks_read.fetch_add(1, Ordering::Relaxed);
        let chunk_index = chunk.chunk_index;
        let counted = chunk.tokens;
        let record = self.template.record(chunk);
        let hash = manifest::hash_of(&record);
        self.chunks.push((chunk_index, hash));
        let previous = self
            .previous
            .as_ref()
            .and_then(|p| p.chunk_hash(chunk_index));
        let stored = self.held.as_ref().and_then(|h| h.get(&record.id)).copied();
        if previous == Some(hash) || stored == Some(hash) {
            self.counts.chunks_unchanged += 1;
            return ControlFlow::Continue(());
        }
        let tokens = counted.unwrap_or_else(|| self.tokens.count(&record.document)) as u64;
        let prepared = Prepared {
            record,
            bytes_done: self.bytes_before + bytes_done,
            tokens,
        };
        match self.tx.blocking_send(prepared) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}

/// Starts reading `job`'s files into `tx` on a blocking thread (on this one for a job with no
/// files), compared with its `basis` unless the job is forced: a forced job reads and embeds
/// everything, and the basis only says what to delete.
pub(super) fn spawn_reader(
    job: &IngestJob,
    basis: &Basis,
    tx: mpsc::Sender<Prepared>,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<Result<ReadReport, SourceError>> {
    let mut sink = ChannelSink::new(tx, shared, RecordTemplate::of(job), job.tokens.clone());
    let (source, plan) = (job.source.clone(), job.plan.clone());
    let (skip_from, held) = match basis {
        _ if job.force => (None, None),
        Basis::Manifest(previous) => (Some(previous.clone()), None),
        Basis::Store(held) => (None, Some(held.clone())),
        Basis::Nothing => (None, None),
    };
    sink.held = held;
    let fingerprint = job.fingerprint.clone();
    if plan.files.is_empty() {
        // Nothing to read, nothing sent: not worth a hand-off to the blocking pool and back (two
        // thread switches, a kind a persona lacks costing more than one it has).
        let report = read_all(source, plan, skip_from, fingerprint, sink);
        return tokio::spawn(std::future::ready(report));
    }
    tokio::task::spawn_blocking(move || read_all(source, plan, skip_from, fingerprint, sink))
}

/// Reads every planned file that changed since `previous` (every file, without it); runs on a
/// blocking thread. The files it starts reading are noted in `shared.touched` first: their
/// records may be written, whatever happens next.
fn read_all(
    source: Arc<dyn Source>,
    plan: SourcePlan,
    previous: Option<Arc<KindManifest>>,
    fingerprint: Arc<str>,
    mut sink: ChannelSink,
) -> Result<ReadReport, SourceError> {
    let mut warnings = Vec::new();
    let mut entries = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let row = previous
            .as_ref()
            .and_then(|m| m.files.get(&file.rel))
            .filter(|row| *row.fingerprint == *fingerprint);
        let io = |source| SourceError::Io {
            rel: file.rel.clone(),
            source,
        };
        match source.judge(file, row).map_err(io)? {
            Verdict::Unchanged(entry) => {
                sink.counts.files_skipped += 1;
                sink.counts.chunks_unchanged += entry.chunks.len() as u64;
                if entry.chunks.is_empty() {
                    warnings.push(format!("{}: no text to ingest (empty file)", file.rel));
                }
                entries.push(entry);
            }
            Verdict::Changed {
                content_hash,
                stamp,
                recorded_ns,
            } => {
                sink.shared
                    .touched
                    .lock()
                    .expect("not poisoned")
                    .push(file.rel.clone());
                sink.previous = row.cloned();
                let chunks_before = sink.shared.chunks_read.load(Ordering::Relaxed);
                let report = source.read(file, &mut sink)?;
                warnings.extend(report.warnings);
                if sink.shared.chunks_read.load(Ordering::Relaxed) == chunks_before {
                    warnings.push(format!("{}: no text to ingest (empty file)", file.rel));
                }
                let mut chunks = std::mem::take(&mut sink.chunks);
                chunks.sort_unstable();
                chunks.dedup_by_key(|(index, _)| *index);
                sink.counts.files_read += 1;
                entries.push(FileEntry {
                    source: file.rel.clone(),
                    bytes: file.bytes,
                    modified_ns: stamp.modified_ns,
                    changed_ns: stamp.changed_ns,
                    inode: stamp.inode,
                    content_hash,
                    chunks,
                    fingerprint: fingerprint.to_string(),
                    recorded_ns,
                });
            }
        }
        sink.bytes_before += file.bytes;
    }
    Ok(ReadReport {
        warnings,
        entries,
        counts: sink.counts,
    })
}

/// What every record of a job carries besides its chunk's own metadata.
#[derive(Clone)]
struct RecordTemplate {
    persona: String,
    kind: Kind,
    embedding_model: String,
}

impl RecordTemplate {
    fn of(job: &IngestJob) -> Self {
        Self {
            persona: job.persona.to_string(),
            kind: job.kind,
            embedding_model: job.collection.embedding_model.clone(),
        }
    }

    /// The chunk as a record, its vector still to come.
    fn record(&self, chunk: Chunk) -> Record {
        let mut metadata = chunk.metadata;
        use crate::record::keys as key;
        let fixed = [
            (key::PERSONA_ID, MetaValue::from(self.persona.as_str())),
            (key::KIND, MetaValue::from(self.kind.as_str())),
            (key::SOURCE, MetaValue::from(chunk.source.as_str())),
            (key::CHUNK_INDEX, MetaValue::Int(chunk.chunk_index.into())),
            (key::CHAR_START, MetaValue::Int(chunk.char_start as i64)),
            (key::CHAR_END, MetaValue::Int(chunk.char_end as i64)),
            (
                key::CONTENT_HASH,
                MetaValue::Str(format!("{:032x}", xxh3_128(chunk.text.as_bytes()))),
            ),
            (
                key::EMBEDDING_MODEL,
                MetaValue::from(self.embedding_model.as_str()),
            ),
        ];
        debug_assert_eq!(fixed.each_ref().map(|(k, _)| *k), key::ENGINE_KEYS);
        for (key, value) in fixed {
            metadata.insert(key.to_owned(), value);
        }
        Record {
            id: record_id(self.kind, &chunk.source, chunk.chunk_index),
            document: chunk.text,
            metadata,
            embedding: Vec::new(),
        }
    }
}
