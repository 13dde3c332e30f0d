//! The OpenAI-compatible embeddings client: `POST {base_url}/embeddings`, as served by OpenAI
//! and by vLLM, Ollama, text-embeddings-inference, LM Studio or Gemini's compatible endpoint.
//!
//! Answers are read leniently and checked strictly: `index` may be left out (the position is
//! used), a vector may come as floats or base64, a `null` in a vector is kept as NaN so the
//! batcher can blame that one input; duplicate or out-of-range indexes and a count that does not
//! match are refused. Only what is configured is sent: `dimensions` (shorten the vectors),
//! `encoding_format`, `truncate`; vLLM refuses `dimensions` for models without Matryoshka support.
//!
//! [`OpenAiProvider::connect`] checks the configuration at start with one probe call, learning
//! the vectors' size when no setting states it, and reads what the server says of itself
//! (text-embeddings-inference's `GET /info`: its largest batch). Statuses map to a [`Failure`]: see [`failure_of`].

mod answers;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::rate_limit::RateLimiter;
use super::{EmbedError, EmbeddingProvider, Failure};
use crate::retry::{retry, Backoff, Budget, Verdict};
use crate::tokens::TokenCounter;
use answers::{decode_base64, provider_message};
pub use answers::{failure_of, retry_after, stated_batch_limit};

pub struct OpenAiProvider {
    client: reqwest::Client,
    base_url: String,
    url: String,
    model: String,
    /// Sent as `dimensions`: ask the API to shorten its vectors.
    dimensions: Option<usize>,
    /// The size every vector must have; 0 until stated or learned.
    dimension: usize,
    encoding_format: Option<String>,
    truncate: bool,
    api_key: Option<String>,
    max_batch_inputs: Option<usize>,
    counter: TokenCounter,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncate: bool,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Embedding>,
    /// What the server billed, where it says (OpenAI, vLLM, Ollama do; TEI does not).
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Embedding {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vector,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Vector {
    /// `null` where a server wrote a NaN as JavaScript does.
    Floats(Vec<Option<f32>>),
    /// `encoding_format = "base64"`: little-endian f32s.
    Base64(String),
}

/// What text-embeddings-inference tells of itself at `GET /info`.
#[derive(Deserialize)]
struct ServerInfo {
    max_client_batch_size: Option<usize>,
    #[serde(default)]
    model_id: Option<String>,
}

impl OpenAiProvider {
    /// A client of `{base_url}/embeddings` for `model`; `timeout` bounds each request. The vector
    /// size is unknown until [`with_dimension`](Self::with_dimension) or
    /// [`connect`](Self::connect).
    pub fn new(base_url: &str, model: &str, api_key: Option<String>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .expect("a TLS backend is compiled in");
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            client,
            url: format!("{base_url}/embeddings"),
            base_url,
            model: model.to_owned(),
            dimensions: None,
            dimension: crate::naming::known_dimension(model).unwrap_or(0),
            encoding_format: None,
            truncate: false,
            api_key,
            max_batch_inputs: None,
            counter: TokenCounter::for_model(model),
        }
    }

    /// Asks the API to shorten its vectors to `dimensions` (sent only when set); the vectors
    /// are then expected at that size.
    pub fn with_dimensions(mut self, dimensions: Option<usize>) -> Self {
        self.dimensions = dimensions;
        if let Some(d) = dimensions {
            self.dimension = d;
        }
        self
    }

    /// States the size every vector must have (`embedding.dimension`), checked by the probe.
    pub fn with_dimension(mut self, dimension: Option<usize>) -> Self {
        if let Some(d) = dimension {
            self.dimension = d;
        }
        self
    }

    /// `encoding_format` to send ("float" or "base64"); unset, none is sent.
    pub fn with_encoding_format(mut self, format: Option<String>) -> Self {
        self.encoding_format = format;
        self
    }

    /// Sends `"truncate": true` (text-embeddings-inference, Ollama): the server cuts inputs
    /// longer than the model reads instead of refusing them.
    pub fn with_truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// How inputs are counted, when not as [`TokenCounter::for_model`] counts for this model
    /// (`embedding.tokenizer`).
    pub fn with_token_counter(mut self, counter: Option<TokenCounter>) -> Self {
        if let Some(counter) = counter {
            self.counter = counter;
        }
        self
    }

    /// Checks the configuration at start with one probe call (address, key, model, and the
    /// parameters sent: vLLM refuses `dimensions` for most models), tried up to `attempts` times
    /// while the server is unavailable, within `limiter`'s rate; learns the vectors' size from it when no setting stated
    /// it, and what the server tells of itself (text-embeddings-inference's largest batch).
    ///
    /// Errors: the probe's failure, with the provider's own message, or a vector of another size
    /// than the settings state.
    pub async fn connect(
        mut self,
        attempts: u32,
        limiter: Option<&dyn RateLimiter>,
    ) -> Result<Self, EmbedError> {
        self.max_batch_inputs = self.server_info().await;
        let probe = "dimension probe".to_owned();
        let backoff = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            budget: Budget::Retries(attempts.saturating_sub(1)),
        };
        // The size known and the server only away: a run with nothing to embed needs no
        // server, and one with something to embed retries its calls; so no waiting here.
        let known = self.dimension > 0;
        let verdict = |e: &EmbedError| match e.is_transient() && !known {
            true => Verdict::Retry {
                after: e.retry_after,
            },
            false => Verdict::Abort,
        };
        let this = &self;
        let probed = retry(
            &backoff,
            "probe",
            verdict,
            |_, _, _| {},
            || async {
                if let Some(limiter) = limiter {
                    if let Err(e) = limiter.acquire(this.counter.count(&probe) as u64).await {
                        tracing::warn!("probing without the rate limit: {e}");
                    }
                }
                this.embed(vec![probe.clone()]).await
            },
        )
        .await;
        let vectors = match probed {
            Ok(vectors) => vectors,
            Err(gave_up) if known && gave_up.error.is_transient() => {
                tracing::warn!(
                    "the embedding server did not answer the start-up probe ({}); going on \
                     with the stated size of {}",
                    gave_up.error,
                    self.dimension
                );
                return Ok(self);
            }
            Err(gave_up) => return Err(gave_up.error),
        };
        let size = vectors[0].len();
        if self.dimension == 0 {
            self.dimension = size;
            tracing::info!(model = %self.model, dimension = size, "learned the vector size");
        } else if size != self.dimension {
            let stated = if self.dimensions.is_some() {
                "asked for (embedding.dimensions)"
            } else if crate::naming::known_dimension(&self.model) == Some(self.dimension) {
                "OpenAI's model of that name has (set embedding.dimension to the server's)"
            } else {
                "stated (embedding.dimension)"
            };
            return Err(EmbedError::permanent(format!(
                "the vectors of {} have {size} dimensions, not the {} {stated}",
                self.model, self.dimension
            )));
        }
        Ok(self)
    }

    /// text-embeddings-inference's `max_client_batch_size`, from `GET /info` beside the base
    /// URL or above its `/v1`; `None` from any other server.
    async fn server_info(&self) -> Option<usize> {
        let mut urls = vec![format!("{}/info", self.base_url)];
        if let Some(root) = self.base_url.strip_suffix("/v1") {
            urls.push(format!("{root}/info"));
        }
        for url in urls {
            // A server without /info may be slow to say so: it is not worth the start-up.
            let asked = self.client.get(&url).timeout(Duration::from_secs(2)).send();
            let Ok(response) = asked.await else {
                continue;
            };
            if !response.status().is_success() {
                continue;
            }
            if let Ok(info) = response.json::<ServerInfo>().await {
                if let Some(max) = info.max_client_batch_size.filter(|&n| n > 0) {
                    tracing::info!(%url, model = info.model_id.as_deref().unwrap_or("?"), max, "the server takes at most {max} inputs a call");
                    return Some(max);
                }
            }
        }
        None
    }
}

impl OpenAiProvider {
    /// The vectors of a successful answer, in input order.
    fn read_answer(&self, body: &str, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let parsed: Response = serde_json::from_str(body).map_err(|e| {
            // A server that writes NaN or Infinity into JSON fails on one input's vector: let the
            // batcher find which.
            let failure = if ["NaN", "Infinity"].iter().any(|w| body.contains(w)) {
                Failure::Refused
            } else {
                Failure::Fatal
            };
            let excerpt: String = body.chars().take(200).collect();
            EmbedError::new(
                failure,
                format!(
                    "POST {}: not an embeddings response ({e}), starting: {excerpt:?}",
                    self.url
                ),
            )
        })?;
        if let Some(tokens) = parsed.usage.as_ref().and_then(|u| u.prompt_tokens) {
            crate::metrics::METRICS.provider_tokens.inc_by(tokens);
        }
        if parsed.data.len() != expected {
            return Err(EmbedError::permanent(format!(
                "POST {}: {} embeddings for {expected} inputs",
                self.url,
                parsed.data.len(),
            )));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in parsed.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let vector = match item.embedding {
                Vector::Floats(values) => {
                    values.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect()
                }
                Vector::Base64(text) => decode_base64(&text).ok_or_else(|| {
                    EmbedError::permanent(format!(
                        "POST {}: embedding {index} is not base64 of f32s",
                        self.url
                    ))
                })?,
            };
            match vectors.get_mut(index) {
                Some(slot @ None) => *slot = Some(vector),
                _ => {
                    return Err(EmbedError::permanent(format!(
                        "POST {}: embedding index {index} is out of range or repeated",
                        self.url
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

#[async_trait]
impl EmbeddingProvider for OpenAiProvider {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn token_counter(&self) -> TokenCounter {
        self.counter.clone()
    }

    fn max_batch_inputs(&self) -> Option<usize> {
        self.max_batch_inputs
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut request = self.client.post(&self.url).json(&Request {
            model: &self.model,
            input: &texts,
            encoding_format: self.encoding_format.as_deref(),
            dimensions: self.dimensions,
            truncate: self.truncate,
        });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                EmbedError::new(
                    Failure::TimedOut,
                    format!(
                        "POST {}: request timed out (embedding.timeout_secs): {e}",
                        self.url
                    ),
                )
            } else {
                EmbedError::transient(format!("POST {}: request failed: {e}", self.url), None)
            }
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
            let said = provider_message(&body);
            return Err(EmbedError {
                retry_after: wait,
                ..EmbedError::new(
                    failure_of(status, &said),
                    format!("POST {}: {status}: {said}", self.url),
                )
            });
        }
        self.read_answer(&body, texts.len())
    }
}
