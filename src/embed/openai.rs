//! The OpenAI-compatible embeddings client: `POST {base_url}/embeddings`, as served by OpenAI
//! and by vLLM, Ollama, text-embeddings-inference or LM Studio.
//!
//! 429, 5xx, timeouts and connection errors are transient (the batcher retries them, honouring
//! `Retry-After` or `retry-after-ms`); any other status fails at once with the provider's own
//! message; a response whose vectors do not match the inputs in count or order is an error.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::{EmbedError, EmbeddingProvider};

pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    dimensions: Option<usize>,
    dimension: usize,
    api_key: Option<String>,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiProvider {
    /// `dimensions` is sent to the API (models that can shorten their vectors); `dimension` is
    /// the size every vector must have.
    pub fn new(
        base_url: &str,
        model: &str,
        dimensions: Option<usize>,
        dimension: usize,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            client,
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            dimensions,
            dimension,
            api_key,
        }
    }

    /// The vector size of OpenAI's own models, when the configuration does not say.
    pub fn known_dimension(model: &str) -> Option<usize> {
        match model {
            "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
            "text-embedding-3-large" => Some(3072),
            _ => None,
        }
    }
}

/// How long the provider asks us to wait: `retry-after-ms`, or `Retry-After` in seconds or as
/// an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(seconds.max(0.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The provider's own words from an error body (`{"error": {"message": ...}}` or the text).
fn provider_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error
                .get("message")
                .and_then(|m| m.as_str())
                .or_else(|| error.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

#[async_trait]
impl EmbeddingProvider for OpenAiProvider {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut request = self.client.post(&self.url).json(&Request {
            model: &self.model,
            input: &texts,
            encoding_format: "float",
            dimensions: self.dimensions,
        });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            EmbedError::transient(format!("POST {}: request {what}: {e}", self.url), None)
        })?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = response.text().await.map_err(|e| {
            EmbedError::transient(
                format!("POST {}: reading the response failed: {e}", self.url),
                None,
            )
        })?;
        if !status.is_success() {
            let message = format!("POST {}: {status}: {}", self.url, provider_message(&body));
            let transient = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
                || status.is_server_error();
            return Err(if transient {
                EmbedError::transient(message, wait)
            } else {
                EmbedError::permanent(message)
            });
        }
        let parsed: Response = serde_json::from_str(&body).map_err(|e| {
            EmbedError::permanent(format!(
                "POST {}: not an embeddings response: {e}",
                self.url
            ))
        })?;
        if parsed.data.len() != texts.len() {
            return Err(EmbedError::permanent(format!(
                "POST {}: {} embeddings for {} inputs",
                self.url,
                parsed.data.len(),
                texts.len()
            )));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in parsed.data {
            match vectors.get_mut(item.index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => {
                    return Err(EmbedError::permanent(format!(
                        "POST {}: embedding index {} is out of order or repeated",
                        self.url, item.index
                    )))
                }
            }
        }
        Ok(vectors
            .into_iter()
            .map(|v| v.expect("every index filled once"))
            .collect())
    }
}
