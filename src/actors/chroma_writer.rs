//! ChromaWriter: one for the whole engine, the only writer to the vector store (Chroma in
//! production, the embedded store by default). It gets or creates collections once per
//! process (cached), splits upserts into batches no larger than the store's own limit, keeps
//! at most `max_in_flight` store calls running, and retries transient store errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::Observe;
use crate::ids::WrittenIds;
use crate::store::{CollectionInfo, CollectionSpec, Record, StoreError, VectorStore};

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

/// Upserts records into a collection (created on first use); answers how many were written.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct WriteRecords {
    pub collection: CollectionSpec,
    pub records: Vec<Record>,
}

/// Deletes the records of a collection whose ids are not in `keep`: what a finished job did
/// not write again is stale. Answers how many were deleted.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct PruneCollection {
    pub collection: CollectionSpec,
    pub keep: Arc<WrittenIds>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterCounters {
    pub upserts: u64,
    pub records: u64,
    pub retries: u64,
    pub collections_created_or_checked: u64,
    pub pruned: u64,
}

pub struct ChromaWriter {
    store: Arc<dyn VectorStore>,
    limits: WriterLimits,
    collections: HashMap<CollectionSpec, CollectionInfo>,
    max_batch: Option<usize>,
    permits: Arc<Semaphore>,
    counters: WriterCounters,
}

impl ChromaWriter {
    pub fn new(store: Arc<dyn VectorStore>, limits: WriterLimits) -> Self {
        Self {
            store,
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
            collections: HashMap::new(),
            max_batch: None,
            counters: WriterCounters::default(),
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or the retry budget is spent.
async fn with_retries<T, F, Fut>(
    limits: WriterLimits,
    retries: &mut u64,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < limits.max_retries => {
                attempt += 1;
                *retries += 1;
                let delay = limits
                    .backoff_base
                    .saturating_mul(1 << (attempt - 1).min(10));
                tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
            }
            Err(StoreError::Backend {
                transient: true,
                message,
            }) => {
                return Err(StoreError::Backend {
                    transient: true,
                    message: format!("{message} (gave up after {} attempts)", attempt + 1),
                })
            }
            other => return other,
        }
    }
}

impl Actor for ChromaWriter {
    type Context = Context<Self>;
}

impl Handler<WriteRecords> for ChromaWriter {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: WriteRecords, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let limits = self.limits;
        let cached = self.collections.get(&msg.collection).cloned();
        let max_batch = self.max_batch;
        let permits = self.permits.clone();
        let spec = msg.collection;
        let work = async move {
            let mut retries = 0;
            let result = async {
                let info = match cached {
                    Some(info) => info,
                    None => {
                        with_retries(limits, &mut retries, || store.ensure_collection(&spec))
                            .await?
                    }
                };
                let max_batch = match max_batch {
                    Some(n) => n,
                    None => with_retries(limits, &mut retries, || store.max_batch_size())
                        .await?
                        .max(1),
                };
                let total = msg.records.len();
                let mut upserts = 0;
                let mut records = msg.records;
                while !records.is_empty() {
                    let rest = records.split_off(records.len().min(max_batch));
                    let _permit = permits.acquire().await.expect("never closed");
                    let batch = &records;
                    with_retries(limits, &mut retries, || store.upsert(&info, batch.clone()))
                        .await?;
                    upserts += 1;
                    records = rest;
                }
                Ok((info, max_batch, total, upserts))
            }
            .await;
            (spec, result, retries)
        };
        Box::pin(
            work.into_actor(self)
                .map(|(spec, result, retries), act, _| {
                    act.counters.retries += retries;
                    let (info, max_batch, total, upserts) = result?;
                    if act.collections.insert(spec, info).is_none() {
                        act.counters.collections_created_or_checked += 1;
                    }
                    act.max_batch = Some(max_batch);
                    act.counters.upserts += upserts;
                    act.counters.records += total as u64;
                    Ok(total)
                }),
        )
    }
}

impl Handler<PruneCollection> for ChromaWriter {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: PruneCollection, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let limits = self.limits;
        let work = async move {
            let mut retries = 0;
            let Some(info) = with_retries(limits, &mut retries, || {
                store.collection(&msg.collection.name)
            })
            .await?
            else {
                return Ok(0);
            };
            let mut stale = Vec::new();
            let mut offset = 0;
            loop {
                let page = with_retries(limits, &mut retries, || store.ids(&info, offset, ID_PAGE))
                    .await?;
                offset += page.len();
                let last_page = page.len() < ID_PAGE;
                stale.extend(page.into_iter().filter(|id| !msg.keep.contains(id)));
                if last_page {
                    break;
                }
            }
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

impl Handler<Observe<WriterCounters>> for ChromaWriter {
    type Result = MessageResult<Observe<WriterCounters>>;

    fn handle(&mut self, _: Observe<WriterCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod tests;
