//! The Chroma store: a Chroma server (1.x) over its HTTP API v2, through a small reqwest client
//! of the endpoints used. Collections are made with cosine space and carry the embedding model
//! and dimension in their metadata. Record operations address a collection by its UUID; its
//! name finds it. The server never embeds: vectors always come from the engine.
//!
//! A collection made by other code (no model in its metadata) that is empty or holds vectors of
//! the wanted size is adopted: its metadata stamped, the fact logged (`store.adopt_collections`).
//! Queries turn its distance into cosine similarity whatever its space (Chroma's default is l2).
//! Upserts are split to fit the server's request-size limit (see `batches`).
//!
//! Errors: connection failures, timeouts, 429 and 5xx are transient (the StoreWriter retries
//! them); 413 is [`StoreError::TooLarge`]; other statuses carry Chroma's own `{"error",
//! "message"}`.

mod batches;
mod collections;
mod read;

use std::collections::HashMap;
use std::sync::Mutex;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{CollectionInfo, CollectionSpec, QueryHit, StoreError, VectorStore};
use crate::config::StoreSettings;
use crate::record::Metadata;
use crate::record::Record;

const MODEL_KEY: &str = "embedding_model";
const DIMENSION_KEY: &str = "embedding_dimension";

pub struct ChromaStore {
    client: reqwest::Client,
    url: String,
    /// `{url}/api/v2/tenants/{tenant}/databases/{database}/collections`
    collections: String,
    auth_token: Option<String>,
    max_batch: OnceCell<usize>,
    request_bytes: batches::ByteBudget,
    adopt: bool,
    /// Collection id → its distance space ("cosine", "l2", "ip").
    spaces: Mutex<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct Collection {
    id: String,
    name: String,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    dimension: Option<usize>,
    #[serde(default)]
    configuration_json: Option<Value>,
}

#[derive(Deserialize)]
struct ChromaError {
    error: String,
    message: String,
}

#[derive(Serialize)]
struct Upsert<'a> {
    ids: Vec<&'a str>,
    embeddings: Vec<&'a [f32]>,
    documents: Vec<&'a str>,
    metadatas: Vec<&'a Metadata>,
}

#[derive(Deserialize)]
struct GetResult {
    ids: Vec<String>,
    #[serde(default)]
    documents: Option<Vec<Option<String>>>,
    #[serde(default)]
    metadatas: Option<Vec<Option<Metadata>>>,
    #[serde(default)]
    embeddings: Option<Vec<Option<Vec<f32>>>>,
}

#[derive(Deserialize)]
struct QueryResult {
    ids: Vec<Vec<String>>,
    documents: Option<Vec<Vec<Option<String>>>>,
    metadatas: Option<Vec<Vec<Option<Metadata>>>>,
    distances: Option<Vec<Vec<Option<f32>>>>,
}

#[derive(Deserialize)]
struct PreFlight {
    max_batch_size: usize,
}

impl ChromaStore {
    pub fn new(settings: &StoreSettings) -> Result<Self, StoreError> {
        let timeout = Duration::from_secs(settings.timeout_secs);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Failed(format!("chroma client: {e}")))?;
        let url = settings.url.trim_end_matches('/').to_owned();
        let collections = format!(
            "{url}/api/v2/tenants/{}/databases/{}/collections",
            settings.tenant, settings.database
        );
        Ok(Self {
            client,
            url,
            collections,
            auth_token: settings.auth_token.clone(),
            max_batch: OnceCell::new(),
            request_bytes: batches::ByteBudget::new(settings.max_request_bytes),
            adopt: settings.adopt_collections,
            spaces: Mutex::new(HashMap::new()),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, StoreError> {
        let mut request = self.client.request(method.clone(), url);
        if let Some(token) = &self.auth_token {
            request = request.bearer_auth(token).header("x-chroma-token", token);
        }
        let mut sent_bytes = 0;
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| {
                StoreError::Failed(format!("chroma {method} {url}: encoding the request: {e}"))
            })?;
            sent_bytes = bytes.len();
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let response = request.send().await.map_err(|e| {
            // A server refusing a request's size may answer 413 and close the connection before
            // the body is all sent, and the client then sees only the broken connection (Chroma's
            // own server does so with `max_payload_size_bytes`): a large body cut off is taken
            // for too large, and sent again smaller, which costs nothing if it was not.
            if sent_bytes > CUT_OFF_BODY && !e.is_connect() && !e.is_timeout() {
                return StoreError::TooLarge(format!(
                    "chroma {method} {url}: the connection broke while {sent_bytes} bytes were \
                     sent, as when a server refuses a request's size: {e}"
                ));
            }
            StoreError::Unavailable(format!("chroma {method} {url}: {e}"))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            StoreError::Unavailable(format!("chroma {method} {url}: reading the response: {e}"))
        })?;
        if !status.is_success() {
            let detail = match serde_json::from_str::<ChromaError>(&text) {
                Ok(e) => format!("{}: {}", e.error, e.message),
                Err(_) => text.chars().take(300).collect(),
            };
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                return Err(StoreError::TooLarge(format!(
                    "chroma {method} {url}: {status}: {detail}"
                )));
            }
            let message = format!("chroma {method} {url}: {status}: {detail}");
            return Err(match status {
                StatusCode::NOT_FOUND => StoreError::NotFound(message),
                StatusCode::TOO_MANY_REQUESTS => StoreError::Unavailable(message),
                _ if status.is_server_error() => StoreError::Unavailable(message),
                _ => StoreError::Failed(message),
            });
        }
        serde_json::from_str(&text).map_err(|e| {
            StoreError::Failed(format!("chroma {method} {url}: unexpected response: {e}"))
        })
    }

    /// One upsert request of `records`.
    async fn upsert_request(
        &self,
        collection: &CollectionInfo,
        records: &[Record],
    ) -> Result<(), StoreError> {
        let body = Upsert {
            ids: records.iter().map(|r| r.id.as_str()).collect(),
            embeddings: records.iter().map(|r| r.embedding.as_slice()).collect(),
            documents: records.iter().map(|r| r.document.as_str()).collect(),
            metadatas: records.iter().map(|r| &r.metadata).collect(),
        };
        let _: Value = self
            .call(
                Method::POST,
                &self.record_url(collection, "upsert"),
                Some(&body),
            )
            .await?;
        Ok(())
    }

    fn record_url(&self, collection: &CollectionInfo, operation: &str) -> String {
        format!("{}/{}/{operation}", self.collections, collection.id)
    }
}

/// Bytes of a request body above which a connection broken while sending it is taken for a
/// refusal of its size (see `call`).
const CUT_OFF_BODY: usize = 1 << 20;

#[async_trait]
impl VectorStore for ChromaStore {
    fn describe(&self) -> String {
        format!("Chroma server at {}", self.url)
    }

    async fn max_batch_size(&self) -> Result<usize, StoreError> {
        self.max_batch
            .get_or_try_init(|| async {
                let url = format!("{}/api/v2/pre-flight-checks", self.url);
                let checks: PreFlight = self.call(Method::GET, &url, None::<&()>).await?;
                Ok(checks.max_batch_size)
            })
            .await
            .copied()
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<CollectionInfo, StoreError> {
        let info = match self.collection(&spec.name).await? {
            Some(info) => info,
            None => {
                let body = json!({
                    "name": spec.name,
                    "metadata": { MODEL_KEY: spec.embedding_model, DIMENSION_KEY: spec.dimension },
                    "configuration": { "hnsw": { "space": "cosine" } },
                    "get_or_create": true,
                });
                let created: Collection = self
                    .call(Method::POST, &self.collections, Some(&body))
                    .await?;
                self.info(created)
            }
        };
        let unclaimed = info.embedding_model == "unknown"
            && (info.dimension == 0 || info.dimension == spec.dimension);
        if self.adopt && unclaimed {
            self.adopt(spec, &info).await?;
            return Ok(CollectionInfo {
                embedding_model: spec.embedding_model.clone(),
                dimension: spec.dimension,
                ..info
            });
        }
        spec.accepts(info)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        let url = format!("{}/{name}", self.collections);
        match self
            .call::<Collection>(Method::GET, &url, None::<&()>)
            .await
        {
            Ok(collection) => Ok(Some(self.info(collection))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        self.list().await
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        self.drop_collection(name).await
    }

    async fn upsert(
        &self,
        collection: &CollectionInfo,
        records: &[Record],
    ) -> Result<(), StoreError> {
        // Runs still to send, as (start, end); a refused run is cut again smaller.
        let mut todo = vec![(0, records.len())];
        while let Some((start, end)) = todo.pop() {
            let budget = self.request_bytes.get();
            let ends = batches::runs_within(&records[start..end], budget);
            let mut from = start;
            for run_end in ends.iter().map(|e| start + e) {
                let run = &records[from..run_end];
                match self.upsert_request(collection, run).await {
                    Ok(()) => from = run_end,
                    Err(StoreError::TooLarge(message)) if run.len() > 1 => {
                        let sent = run.iter().map(batches::record_bytes).sum();
                        let smaller = self.request_bytes.refused(sent);
                        tracing::warn!(
                            bytes = smaller,
                            "chroma refused an upsert's size; sending smaller ones: {message}"
                        );
                        todo.push((from, end));
                        break;
                    }
                    Err(StoreError::TooLarge(message)) => {
                        return Err(StoreError::Failed(format!(
                        "record {} alone is larger than the server takes in one request: {message}",
                        run[0].id
                    )))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn ids(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let body = json!({ "limit": limit, "offset": offset, "include": [] });
        let got: GetResult = self
            .call(
                Method::POST,
                &self.record_url(collection, "get"),
                Some(&body),
            )
            .await?;
        Ok(got.ids)
    }

    async fn records(
        &self,
        collection: &CollectionInfo,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.read_records(collection, offset, limit).await
    }

    async fn get(
        &self,
        collection: &CollectionInfo,
        ids: &[String],
    ) -> Result<Vec<Record>, StoreError> {
        self.get_by_ids(collection, ids).await
    }

    async fn delete(
        &self,
        collection: &CollectionInfo,
        ids: Vec<String>,
    ) -> Result<(), StoreError> {
        let batch = self.max_batch_size().await?;
        for group in ids.chunks(batch) {
            let body = json!({ "ids": group });
            let _: Value = self
                .call(
                    Method::POST,
                    &self.record_url(collection, "delete"),
                    Some(&body),
                )
                .await?;
        }
        Ok(())
    }

    async fn count(&self, collection: &CollectionInfo) -> Result<u64, StoreError> {
        self.call(
            Method::GET,
            &self.record_url(collection, "count"),
            None::<&()>,
        )
        .await
    }

    async fn query(
        &self,
        collection: &CollectionInfo,
        embedding: &[f32],
        k: usize,
    ) -> Result<Vec<QueryHit>, StoreError> {
        self.nearest(collection, embedding, k).await
    }
}
