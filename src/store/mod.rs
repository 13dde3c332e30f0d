//! The vector store seam: collections of records (id, document, metadata, embedding). The
//! embedded store in a local file is the zero-setup default; Chroma plugs in behind the same
//! trait.

mod chroma;
mod embedded;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::{StoreKind, StoreSettings};
use crate::record::{Metadata, Record};

pub use chroma::ChromaStore;
pub use embedded::EmbeddedStore;

/// What a collection must hold: vectors of one model and dimension.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CollectionSpec {
    pub name: String,
    pub embedding_model: String,
    pub dimension: usize,
}

impl CollectionSpec {
    /// `existing`, if it holds vectors of this model and dimension; the refusal otherwise.
    pub fn accepts(&self, existing: CollectionInfo) -> Result<CollectionInfo, StoreError> {
        if existing.embedding_model != self.embedding_model || existing.dimension != self.dimension
        {
            return Err(StoreError::Mismatch {
                collection: existing.name,
                existing_model: existing.embedding_model,
                existing_dimension: existing.dimension,
                wanted_model: self.embedding_model.clone(),
                wanted_dimension: self.dimension,
            });
        }
        Ok(existing)
    }
}

/// A collection as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    /// The store's own id (Chroma's UUID; the name for the embedded store).
    pub id: String,
    pub embedding_model: String,
    pub dimension: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryHit {
    pub id: String,
    /// Cosine similarity, 1 for the same direction.
    pub score: f32,
    pub document: String,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("collection {collection} holds {existing_model} vectors of dimension {existing_dimension}; refusing to write {wanted_model} vectors of dimension {wanted_dimension} into it")]
    Mismatch {
        collection: String,
        existing_model: String,
        existing_dimension: usize,
        wanted_model: String,
        wanted_dimension: usize,
    },
    #[error("no collection named {0}")]
    NoCollection(String),
    /// The store could not be reached or was busy (a broken connection, 429, a 5xx): the same
    /// request may pass later.
    #[error("{0}")]
    Unavailable(String),
    /// The store refused or failed the request for good (a 4xx, an unreadable answer, a local
    /// file it cannot write).
    #[error("{0}")]
    Failed(String),
    /// The server answered 404 for what was asked.
    #[error("{0}")]
    NotFound(String),
    /// The server refused a request for its size (HTTP 413): smaller requests may pass.
    #[error("{0}")]
    TooLarge(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[async_trait]
pub trait VectorStore: Send + Sync {
    /// For messages: where the records go.
    fn describe(&self) -> String;
    /// The most records one upsert may carry.
    async fn max_batch_size(&self) -> Result<usize, StoreError>;
    /// Gets or creates the collection; refuses one that holds another model or dimension.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<CollectionInfo, StoreError>;
    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError>;
    /// Every collection of the store (of Chroma's tenant and database), by name.
    async fn collections(&self) -> Result<Vec<CollectionInfo>, StoreError>;
    /// Deletes a collection with its records; nothing when there is none.
    async fn delete_collection(&self, name: &str) -> Result<(), StoreError>;
    /// Inserts or replaces records by id. Borrowed, so that an upsert tried again sends the same
    /// records without a copy.
    async fn upsert(
        &self,
        collection: &CollectionInfo,
        records: &[Record],
    ) -> Result<(), StoreError>;
    /// The records of `ids` the collection holds (the others left out), vectors included.
    async fn get(
        &self,
        collection: &CollectionInfo,
        ids: &[String],
    ) -> Result<Vec<Record>, StoreError>;
    /// A page of the collection's ids, in a stable order.
    async fn ids(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// A page of the collection's records, their documents and metadata but not their vectors
    /// (`embedding` empty), in the order of [`ids`](Self::ids).
    async fn records(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    async fn delete(&self, collection: &CollectionInfo, ids: Vec<String>)
        -> Result<(), StoreError>;
    async fn count(&self, collection: &CollectionInfo) -> Result<u64, StoreError>;
    /// The `k` records nearest to `embedding` by cosine similarity, best first.
    async fn query(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError>;
}

/// Records a page of [`VectorStore::records`] holds.
const RECORD_PAGE: usize = 1000;

/// Calls `each` with every record of `collection` (documents and metadata, no vectors), a page
/// at a time.
pub async fn each_record(
    store: &dyn VectorStore,
    collection: &CollectionInfo,
    mut each: impl FnMut(Record),
) -> Result<(), StoreError> {
    let mut offset = 0;
    loop {
        let page = store.records(collection, offset, RECORD_PAGE).await?;
        let last = page.len() < RECORD_PAGE;
        offset += page.len();
        page.into_iter().for_each(&mut each);
        if last {
            return Ok(());
        }
    }
}

pub async fn from_settings(settings: &StoreSettings) -> Result<Arc<dyn VectorStore>, StoreError> {
    match settings.kind {
        StoreKind::Embedded => Ok(Arc::new(EmbeddedStore::open(&settings.path).await?)),
        StoreKind::Chroma => Ok(Arc::new(ChromaStore::new(settings)?)),
    }
}
