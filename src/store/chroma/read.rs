//! Reading records back from Chroma: pages of them (`get`) and the nearest to a vector
//! (`query`), in the engine's terms.

use reqwest::Method;
use serde_json::json;

use super::{collections, ChromaStore, GetResult, QueryResult};
use crate::record::Record;
use crate::store::{CollectionInfo, QueryHit, StoreError, VectorStore};

impl ChromaStore {
    /// A page of records with their documents and metadata.
    pub(super) async fn read_records(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let body = json!({
            "limit": limit, "offset": offset, "include": ["documents", "metadatas"],
        });
        self.fetch(collection, &body).await
    }

    /// The records of `ids`, vectors included, in pages of the server's batch size.
    pub(super) async fn get_by_ids(
        &self,
        collection: &CollectionInfo,
        ids: &[String],
    ) -> Result<Vec<Record>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for group in ids.chunks(self.max_batch_size().await?.max(1)) {
            let body = json!({
                "ids": group, "include": ["documents", "metadatas", "embeddings"],
            });
            found.extend(self.fetch(collection, &body).await?);
        }
        Ok(found)
    }

    /// The records a `get` call with `body` answers (what it did not include left empty).
    async fn fetch(
        &self,
        collection: &CollectionInfo,
        body: &serde_json::Value,
    ) -> Result<Vec<Record>, StoreError> {
        let got: GetResult = self
            .call(
                Method::POST,
                &self.record_url(collection, "get"),
                Some(body),
            )
            .await?;
        let mut documents = got.documents.unwrap_or_default().into_iter();
        let mut metadatas = got.metadatas.unwrap_or_default().into_iter();
        let mut embeddings = got.embeddings.unwrap_or_default().into_iter();
        Ok(got
            .ids
            .into_iter()
            .map(|id| Record {
                id,
                document: documents.next().flatten().unwrap_or_default(),
                metadata: metadatas.next().flatten().unwrap_or_default(),
                embedding: embeddings.next().flatten().unwrap_or_default(),
            })
            .collect())
    }

    /// The `k` records nearest to `embedding`, scored by cosine similarity whatever the
    /// collection's space.
    pub(super) async fn nearest(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError> {
        let body = json!({
            "query_embeddings": [embedding],
            "n_results": k,
            "include": ["documents", "metadatas", "distances"],
        });
        let result: QueryResult = self
            .call(
                Method::POST,
                &self.record_url(collection, "query"),
                Some(&body),
            )
            .await?;
        let ids = result.ids.into_iter().next().unwrap_or_default();
        let mut documents = result
            .documents
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        let mut metadatas = result
            .metadatas
            .and_then(|m| m.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        let mut distances = result
            .distances
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        let space = self
            .spaces
            .lock()
            .expect("not poisoned")
            .get(&collection.id)
            .cloned()
            .unwrap_or_else(|| "cosine".into());
        Ok(ids
            .into_iter()
            .map(|id| QueryHit {
                id,
                document: documents.next().flatten().unwrap_or_default(),
                metadata: metadatas.next().flatten().unwrap_or_default(),
                score: collections::similarity(&space, distances.next().flatten()),
            })
            .collect())
    }
}
