//! An in-memory vector store with scripted faults, counting what it is asked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::record::Record;
use crate::store::{CollectionInfo, CollectionSpec, QueryHit, StoreError, VectorStore};

/// A fault for the next store call.
#[derive(Clone, Debug)]
pub enum StoreFault {
    Transient(String),
    Permanent(String),
}

#[derive(Default)]
struct Inner {
    collections: HashMap<String, (CollectionInfo, BTreeMap<String, Record>)>,
    faults: VecDeque<StoreFault>,
    upsert_sizes: Vec<usize>,
    ensure_calls: usize,
    lookups: usize,
}

pub struct MemoryStore {
    max_batch: usize,
    inner: Mutex<Inner>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl MemoryStore {
    /// A store that takes at most `max_batch` records an upsert (as Chroma's `max_batch_size`).
    pub fn new(max_batch: usize) -> Self {
        Self {
            max_batch,
            inner: Mutex::default(),
            gate: tokio::sync::watch::channel(true).0,
        }
    }

    /// How many times a collection was looked up by name.
    pub fn lookups(&self) -> usize {
        self.inner.lock().expect("not poisoned").lookups
    }

    /// Upserts wait until `open_gate`.
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Faults for the next upserts, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = StoreFault>) {
        self.inner
            .lock()
            .expect("not poisoned")
            .faults
            .extend(faults);
    }

    /// The size of every upsert that reached the store.
    pub fn upsert_sizes(&self) -> Vec<usize> {
        self.inner
            .lock()
            .expect("not poisoned")
            .upsert_sizes
            .clone()
    }

    pub fn ensure_calls(&self) -> usize {
        self.inner.lock().expect("not poisoned").ensure_calls
    }

    pub fn ids_in(&self, collection: &str) -> Vec<String> {
        let inner = self.inner.lock().expect("not poisoned");
        inner
            .collections
            .get(collection)
            .map(|(_, records)| records.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl VectorStore for MemoryStore {
    fn describe(&self) -> String {
        "memory store".into()
    }

    async fn max_batch_size(&self) -> Result<usize, StoreError> {
        Ok(self.max_batch)
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<CollectionInfo, StoreError> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.ensure_calls += 1;
        let (info, _) = inner
            .collections
            .entry(spec.name.clone())
            .or_insert_with(|| {
                let info = CollectionInfo {
                    name: spec.name.clone(),
                    id: format!("id-{}", spec.name),
                    embedding_model: spec.embedding_model.clone(),
                    dimension: spec.dimension,
                };
                (info, BTreeMap::new())
            });
        spec.accepts(info.clone())
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.lookups += 1;
        Ok(inner.collections.get(name).map(|(info, _)| info.clone()))
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        let inner = self.inner.lock().expect("not poisoned");
        let mut all: Vec<CollectionInfo> = inner
            .collections
            .values()
            .map(|(info, _)| info.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        self.inner
            .lock()
            .expect("not poisoned")
            .collections
            .remove(name);
        Ok(())
    }

    async fn upsert(
        &self,
        collection: &CollectionInfo,
        records: &[Record],
    ) -> Result<(), StoreError> {
        let mut open = self.gate.subscribe();
        while !*open.borrow_and_update() {
            if open.changed().await.is_err() {
                break;
            }
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        match inner.faults.pop_front() {
            Some(StoreFault::Transient(message)) => return Err(StoreError::Unavailable(message)),
            Some(StoreFault::Permanent(message)) => return Err(StoreError::Failed(message)),
            None => {}
        }
        if records.len() > self.max_batch {
            return Err(StoreError::Failed(format!(
                "batch of {} over the limit of {}",
                records.len(),
                self.max_batch
            )));
        }
        inner.upsert_sizes.push(records.len());
        let (_, stored) = inner
            .collections
            .get_mut(&collection.name)
            .ok_or_else(|| StoreError::NoCollection(collection.name.clone()))?;
        for record in records {
            stored.insert(record.id.clone(), record.clone());
        }
        Ok(())
    }

    async fn ids(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .ids_in(&collection.name)
            .into_iter()
            .skip(offset)
            .take(limit)
            .collect())
    }

    async fn get(
        &self,
        collection: &CollectionInfo,
        ids: &[String],
    ) -> Result<Vec<Record>, StoreError> {
        let inner = self.inner.lock().expect("not poisoned");
        Ok(inner
            .collections
            .get(&collection.name)
            .map(|(_, stored)| {
                ids.iter()
                    .filter_map(|id| stored.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn records(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let inner = self.inner.lock().expect("not poisoned");
        Ok(inner
            .collections
            .get(&collection.name)
            .map(|(_, stored)| {
                stored
                    .values()
                    .skip(offset)
                    .take(limit)
                    .map(|r| Record {
                        embedding: Vec::new(),
                        ..r.clone()
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn delete(
        &self,
        collection: &CollectionInfo,
        ids: Vec<String>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("not poisoned");
        if let Some((_, stored)) = inner.collections.get_mut(&collection.name) {
            for id in ids {
                stored.remove(&id);
            }
        }
        Ok(())
    }

    async fn count(&self, collection: &CollectionInfo) -> Result<u64, StoreError> {
        Ok(self.ids_in(&collection.name).len() as u64)
    }

    async fn query(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError> {
        let inner = self.inner.lock().expect("not poisoned");
        let Some((_, stored)) = inner.collections.get(&collection.name) else {
            return Ok(Vec::new());
        };
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut hits: Vec<QueryHit> = stored
            .values()
            .map(|r| {
                let dot: f32 = r.embedding.iter().zip(embedding).map(|(a, b)| a * b).sum();
                QueryHit {
                    id: r.id.clone(),
                    score: dot / (norm(&r.embedding) * norm(embedding)).max(f32::MIN_POSITIVE),
                    document: r.document.clone(),
                    metadata: r.metadata.clone(),
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }
}
