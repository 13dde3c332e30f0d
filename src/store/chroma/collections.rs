//! Collections as found on the server: the engine's view of one (model, dimension, and the
//! distance space queries must convert from), and the adoption of one other code made.

use reqwest::Method;
use serde_json::{json, Value};

use super::{ChromaStore, Collection, DIMENSION_KEY, MODEL_KEY};
use crate::store::{CollectionInfo, CollectionSpec, StoreError};

/// Collections a listing page holds.
const PAGE: usize = 100;

impl ChromaStore {
    /// Every collection of the tenant and database, a page at a time.
    pub(super) async fn list(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        let mut all = Vec::new();
        loop {
            let url = format!("{}?limit={PAGE}&offset={}", self.collections, all.len());
            let page: Vec<Collection> = self.call(Method::GET, &url, None::<&()>).await?;
            let last = page.len() < PAGE;
            all.extend(page.into_iter().map(|c| self.info(c)));
            if last {
                all.sort_by(|a, b| a.name.cmp(&b.name));
                return Ok(all);
            }
        }
    }

    /// Deletes the collection named `name`, if there is one.
    pub(super) async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        let url = format!("{}/{name}", self.collections);
        match self.call::<Value>(Method::DELETE, &url, None::<&()>).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The collection as the engine sees it; its distance space remembered for queries.
    pub(super) fn info(&self, collection: Collection) -> CollectionInfo {
        let metadata = collection.metadata.clone().unwrap_or_default();
        let space = metadata
            .get("hnsw:space")
            .and_then(Value::as_str)
            .or_else(|| {
                let config = collection.configuration_json.as_ref()?;
                ["hnsw", "spann"]
                    .iter()
                    .find_map(|index| config.get(index)?.get("space")?.as_str())
            })
            .unwrap_or("l2")
            .to_owned();
        self.spaces
            .lock()
            .expect("not poisoned")
            .insert(collection.id.clone(), space);
        CollectionInfo {
            embedding_model: metadata
                .get(MODEL_KEY)
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            dimension: metadata
                .get(DIMENSION_KEY)
                .and_then(Value::as_u64)
                .map(|d| d as usize)
                .or(collection.dimension)
                .unwrap_or(0),
            id: collection.id,
            name: collection.name,
        }
    }

    /// Stamps the model and dimension into a collection made by other code, keeping its own
    /// metadata (Chroma replaces metadata whole).
    pub(super) async fn adopt(
        &self,
        spec: &CollectionSpec,
        found: &CollectionInfo,
    ) -> Result<(), StoreError> {
        let url = format!("{}/{}", self.collections, found.name);
        let current: Collection = self.call(Method::GET, &url, None::<&()>).await?;
        let mut metadata = current.metadata.unwrap_or_default();
        metadata.insert(MODEL_KEY.into(), json!(spec.embedding_model));
        metadata.insert(DIMENSION_KEY.into(), json!(spec.dimension));
        let body = json!({ "new_metadata": metadata });
        let _: Value = self
            .call(
                Method::PUT,
                &format!("{}/{}", self.collections, found.id),
                Some(&body),
            )
            .await?;
        tracing::warn!(
            collection = %found.name, model = %spec.embedding_model, dimension = spec.dimension,
            vectors = found.dimension,
            "adopted a collection made by other code: stamped its model and dimension"
        );
        Ok(())
    }
}

/// Cosine similarity from a Chroma distance in `space`, for vectors of unit length (every
/// provider's are): cosine and inner-product distances are 1 - similarity, l2 is squared, 2 - 2
/// similarity.
pub(super) fn similarity(space: &str, distance: Option<f32>) -> f32 {
    let Some(d) = distance else {
        return 0.0;
    };
    match space {
        "l2" => 1.0 - d / 2.0,
        _ => 1.0 - d,
    }
}
