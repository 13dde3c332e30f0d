//! StoreWriter: one for the whole engine, the only writer to the vector store (Chroma in
//! production, the embedded store by default; it was named ChromaWriter when Chroma was the only
//! store). It gets or creates collections once per process (cached), gathers the windows of
//! records that wait for a free call into one upsert (their records moved, not copied; a retried
//! upsert borrows them), tells each window's job once it is written, drops a window whose job has
//! gone, splits upserts into batches no larger than the store's
//! own limit, keeps at most `max_in_flight` store calls running, and retries transient store
//! errors.
//!
//! Over 400 lines because each message the writer answers (write, prune, count, read hashes,
//! read records) sits beside its handler, as the actors of this engine keep them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::window::{Window, WindowFailed, WriteWindow};
use super::Observe;
use crate::ids::WrittenIds;
use crate::record::Record;
use crate::retry::{retry, Backoff, Budget, Verdict};
use crate::store::{CollectionInfo, CollectionSpec, StoreError, VectorStore};

/// Ids listed per store call when looking for stale records.
const ID_PAGE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterLimits {
    pub max_in_flight: usize,
    pub max_retries: u32,
    pub backoff_base: Duration,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 2,
            max_retries: 5,
            backoff_base: Duration::from_millis(200),
        }
    }
}

/// Deletes a collection's stale records: what a finished job found gone. Answers how many
/// were deleted.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct PruneCollection {
    pub collection: CollectionSpec,
    pub stale: Stale,
}

/// Which records are stale.
#[derive(Clone, Debug)]
pub enum Stale {
    /// Every record whose id is not one of these, all of which the collection holds (a job
    /// with no manifest to trust): the ids are listed unless the count already says there is
    /// nothing else.
    NotIn(Arc<WrittenIds>),
    /// These ids (of files and chunks the manifest had and the job did not find again).
    These(Vec<String>),
}

/// How many records a collection holds (0 when it does not exist): what a failed job's row
/// reports, so that it says what the store holds.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct CountRecords {
    pub collection: String,
}

/// The hash of every record a collection holds, by id ([`crate::manifest::hash_of`]; empty
/// when there is no collection): what a job whose manifest cannot be trusted compares its chunks
/// with, so that it embeds only what the store does not already hold as it would write it.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<HashMap<String, u64>, StoreError>")]
pub struct ReadHashes {
    pub collection: String,
}

/// The records of `ids` the collection holds, vectors included (none when there is no
/// collection): a chunk whose text a record already holds keeps that record's vector.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Vec<Record>, StoreError>")]
pub struct ReadRecords {
    pub collection: String,
    pub ids: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterCounters {
    pub upserts: u64,
    pub records: u64,
    pub retries: u64,
    pub collections_created_or_checked: u64,
    pub pruned: u64,
    /// Writes that went in an upsert started for an earlier one.
    pub coalesced_writes: u64,
    /// Windows dropped unwritten: their job had gone (aborted).
    pub abandoned_windows: u64,
}

/// A window waiting to be written: its records taken out, so that windows waiting together go
/// into one upsert without a copy.
struct PendingWrite {
    records: Vec<Record>,
    window: Window,
}

/// The writes waiting for one collection, and how many upserts of it are running.
#[derive(Default)]
struct CollectionQueue {
    waiting: VecDeque<PendingWrite>,
    running: usize,
}

pub struct StoreWriter {
    store: Arc<dyn VectorStore>,
    limits: WriterLimits,
    collections: HashMap<CollectionSpec, CollectionInfo>,
    max_batch: Option<usize>,
    queues: HashMap<CollectionSpec, CollectionQueue>,
    in_flight: usize,
    counters: WriterCounters,
}

impl StoreWriter {
    pub fn new(store: Arc<dyn VectorStore>, limits: WriterLimits) -> Self {
        Self {
            store,
            limits,
            collections: HashMap::new(),
            max_batch: None,
            queues: HashMap::new(),
            in_flight: 0,
            counters: WriterCounters::default(),
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or the retry budget is spent (`retry::retry`);
/// a transient error that outlasted the budget says how many attempts were made.
async fn with_retries<T, F, Fut>(
    limits: WriterLimits,
    retries: &mut u64,
    op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let backoff = Backoff {
        base: limits.backoff_base,
        cap: limits.backoff_base.saturating_mul(1 << 10),
        budget: Budget::Retries(limits.max_retries),
    };
    let transient = |e: &StoreError| {
        if e.is_transient() {
            Verdict::Retry { after: None }
        } else {
            Verdict::Abort
        }
    };
    retry(&backoff, "store", transient, |_, _, _| *retries += 1, op)
        .await
        .map_err(|gave_up| match gave_up.error {
            StoreError::Unavailable(ref message) => {
                StoreError::Unavailable(gave_up.context(message))
            }
            error => error,
        })
}

impl Actor for StoreWriter {
    type Context = Context<Self>;
}

/// Upserts the window's records into its collection (created on first use), then tells its
/// job; a window whose job has gone is dropped unwritten.
impl Handler<WriteWindow> for StoreWriter {
    type Result = ();

    fn handle(&mut self, WriteWindow(mut window): WriteWindow, ctx: &mut Context<Self>) {
        if window.abandoned() {
            self.counters.abandoned_windows += 1;
            return;
        }
        let records = std::mem::take(&mut window.records);
        self.queues
            .entry(window.collection.clone())
            .or_default()
            .waiting
            .push_back(PendingWrite { records, window });
        self.pump(ctx);
    }
}

impl StoreWriter {
    /// Starts an upsert for every collection with writes waiting, while the in-flight bound
    /// allows; the writes that waited for a collection go together, up to the store's batch
    /// limit.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let ready: Vec<CollectionSpec> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.waiting.is_empty())
            .map(|(spec, _)| spec.clone())
            .collect();
        for spec in ready {
            if self.in_flight >= self.limits.max_in_flight {
                return;
            }
            let queue = self.queues.get_mut(&spec).expect("listed above");
            let before = queue.waiting.len();
            queue.waiting.retain(|w| !w.window.abandoned());
            self.counters.abandoned_windows += (before - queue.waiting.len()) as u64;
            if queue.waiting.is_empty() {
                continue;
            }
            let mut writes: Vec<PendingWrite> = Vec::new();
            let mut size = 0;
            while let Some(next) = queue.waiting.front() {
                // Until the store's limit is known, one write at a time.
                let limit = self.max_batch.unwrap_or(0);
                if !writes.is_empty() && size + next.records.len() > limit {
                    break;
                }
                size += next.records.len();
                writes.push(queue.waiting.pop_front().expect("front exists"));
            }
            queue.running += 1;
            self.in_flight += 1;
            self.start_upsert(spec, writes, ctx);
        }
    }

    fn start_upsert(
        &mut self,
        spec: CollectionSpec,
        writes: Vec<PendingWrite>,
        ctx: &mut Context<Self>,
    ) {
        let store = self.store.clone();
        let limits = self.limits;
        let cached = self.collections.get(&spec).cloned();
        let max_batch = self.max_batch;
        let sizes: Vec<usize> = writes.iter().map(|w| w.records.len()).collect();
        let (records, windows): (Vec<Vec<Record>>, Vec<Window>) =
            writes.into_iter().map(|w| (w.records, w.window)).unzip();
        let records: Vec<Record> = records.into_iter().flatten().collect();
        let target = spec.clone();
        let work = async move {
            let mut retries = 0;
            let result = async {
                let info = match cached {
                    Some(info) => info,
                    None => {
                        with_retries(limits, &mut retries, || store.ensure_collection(&target))
                            .await?
                    }
                };
                let max_batch = match max_batch {
                    Some(n) => n,
                    None => with_retries(limits, &mut retries, || store.max_batch_size())
                        .await?
                        .max(1),
                };
                let mut upserts = 0;
                for batch in records.chunks(max_batch) {
                    with_retries(limits, &mut retries, || store.upsert(&info, batch)).await?;
                    upserts += 1;
                    crate::metrics::METRICS.store_writes.inc();
                    crate::metrics::METRICS
                        .vectors_written
                        .inc_by(batch.len() as u64);
                }
                Ok::<_, StoreError>((info, max_batch, upserts))
            }
            .await;
            (result, retries)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |(result, retries), act, ctx| {
                    act.in_flight -= 1;
                    act.counters.retries += retries;
                    if let Some(queue) = act.queues.get_mut(&spec) {
                        queue.running -= 1;
                    }
                    match result {
                        Ok((info, max_batch, upserts)) => {
                            if act.collections.insert(spec, info).is_none() {
                                act.counters.collections_created_or_checked += 1;
                            }
                            act.max_batch = Some(max_batch);
                            act.counters.upserts += upserts;
                            act.counters.records += sizes.iter().sum::<usize>() as u64;
                            act.counters.coalesced_writes += sizes.len().saturating_sub(1) as u64;
                            for (window, size) in windows.into_iter().zip(sizes) {
                                window.written(size);
                            }
                        }
                        Err(error) => {
                            for window in windows {
                                window.failed(|_| WindowFailed::Store(error.clone()));
                            }
                        }
                    }
                    act.queues
                        .retain(|_, q| q.running > 0 || !q.waiting.is_empty());
                    act.pump(ctx);
                }),
        );
    }
}

impl Handler<ReadRecords> for StoreWriter {
    type Result = ResponseFuture<Result<Vec<Record>, StoreError>>;

    fn handle(&mut self, msg: ReadRecords, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            match store.collection(&msg.collection).await? {
                Some(info) => store.get(&info, &msg.ids).await,
                None => Ok(Vec::new()),
            }
        })
    }
}

impl Handler<ReadHashes> for StoreWriter {
    type Result = ResponseFuture<Result<HashMap<String, u64>, StoreError>>;

    fn handle(&mut self, msg: ReadHashes, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            match store.collection(&msg.collection).await? {
                Some(info) => crate::manifest::stored_hashes(store.as_ref(), &info).await,
                None => Ok(HashMap::new()),
            }
        })
    }
}

impl Handler<CountRecords> for StoreWriter {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, msg: CountRecords, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            match store.collection(&msg.collection).await? {
                Some(info) => store.count(&info).await,
                None => Ok(0),
            }
        })
    }
}

impl Handler<PruneCollection> for StoreWriter {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: PruneCollection, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let limits = self.limits;
        let work = async move {
            // Nothing named stale (a first run, or nothing gone): not even the collection is
            // looked up.
            if matches!(&msg.stale, Stale::These(ids) if ids.is_empty()) {
                return Ok(0);
            }
            let mut retries = 0;
            let Some(info) = with_retries(limits, &mut retries, || {
                store.collection(&msg.collection.name)
            })
            .await?
            else {
                return Ok(0);
            };
            let stale = match msg.stale {
                Stale::These(ids) => ids,
                Stale::NotIn(keep) => {
                    // Listing a collection costs a call per page; counting it, one.
                    let held = with_retries(limits, &mut retries, || store.count(&info)).await?;
                    if held == keep.len() as u64 {
                        return Ok(0);
                    }
                    let mut stale = Vec::new();
                    let mut offset = 0;
                    loop {
                        let page = with_retries(limits, &mut retries, || {
                            store.ids(&info, offset, ID_PAGE)
                        })
                        .await?;
                        offset += page.len();
                        let last_page = page.len() < ID_PAGE;
                        stale.extend(page.into_iter().filter(|id| !keep.contains(id)));
                        if last_page {
                            break;
                        }
                    }
                    stale
                }
            };
            let count = stale.len();
            if count > 0 {
                with_retries(limits, &mut retries, || store.delete(&info, stale.clone())).await?;
            }
            Ok(count)
        };
        Box::pin(
            work.into_actor(self)
                .map(|result: Result<usize, StoreError>, act, _| {
                    if let Ok(n) = &result {
                        act.counters.pruned += *n as u64;
                    }
                    result
                }),
        )
    }
}

impl Handler<Observe<WriterCounters>> for StoreWriter {
    type Result = MessageResult<Observe<WriterCounters>>;

    fn handle(&mut self, _: Observe<WriterCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod tests;
