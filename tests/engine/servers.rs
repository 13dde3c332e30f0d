//! Stand-ins for the embedding servers we cannot reach from here, each answering
//! `POST {base}/embeddings` as its documentation and its users' reports say it does, quirks
//! included: OpenAI; vLLM (refuses `dimensions` for a model without Matryoshka support, refuses
//! an input over the model's length); text-embeddings-inference (`GET /info`; 413 over 32 inputs
//! a call or for an input over 512 tokens, `{"error", "error_type"}` bodies); Ollama (500
//! "unsupported value: NaN" for some inputs); Gemini's OpenAI-compatible endpoint (leaves out
//! a zero `index`, as protobuf's JSON does). Vectors are the hashing embedder's, so that what
//! is written can be queried.

use persona_ingest::embed::HashingEmbedder;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A text Ollama's model turns into NaN (Ollama then fails to encode its answer).
pub const POISON: &str = "ⓝⓐⓝ";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Profile {
    OpenAi,
    /// vLLM serving BAAI/bge-m3: 1024 dimensions, 512 tokens an input (counted a token a CJK
    /// character, as its tokenizer does at most).
    Vllm,
    /// text-embeddings-inference serving BAAI/bge-small-en-v1.5 with its defaults.
    Tei,
    /// Ollama serving nomic-embed-text: 768 dimensions.
    Ollama,
    /// Gemini's `/v1beta/openai/embeddings`, gemini-embedding-001 shortened to 768.
    Gemini,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Self::OpenAi,
        Self::Vllm,
        Self::Tei,
        Self::Ollama,
        Self::Gemini,
    ];

    /// The base URL path the server serves its OpenAI-compatible API under.
    pub fn base_path(self) -> &'static str {
        match self {
            Self::Gemini => "/v1beta/openai",
            _ => "/v1",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Self::OpenAi => "text-embedding-3-small",
            Self::Vllm => "BAAI/bge-m3",
            Self::Tei => "BAAI/bge-small-en-v1.5",
            Self::Ollama => "nomic-embed-text",
            Self::Gemini => "gemini-embedding-001",
        }
    }

    pub fn dimension(self) -> usize {
        match self {
            Self::OpenAi => 1536,
            Self::Vllm => 1024,
            Self::Tei => 384,
            Self::Ollama | Self::Gemini => 768,
        }
    }

    /// Starts the stand-in; `base_url` is where to point `embedding.base_url`.
    pub async fn start(self) -> StandIn {
        let server = MockServer::start().await;
        self.mount(&server).await;
        StandIn {
            base_url: format!("{}{}", server.uri(), self.base_path()),
            server,
            profile: self,
        }
    }

    pub async fn mount(self, server: &MockServer) {
        if self == Self::Tei {
            Mock::given(method("GET"))
                .and(path("/info"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "model_id": self.model(), "model_dtype": "float16",
                    "max_concurrent_requests": 512, "max_input_length": 512,
                    "max_batch_tokens": 16384, "max_client_batch_size": 32,
                    "tokenization_workers": 2, "version": "1.5.0"
                })))
                .mount(server)
                .await;
        }
        Mock::given(method("POST"))
            .and(path(format!("{}/embeddings", self.base_path())))
            .respond_with(move |request: &Request| self.answer(request))
            .mount(server)
            .await;
    }

    /// The server's answer to one embeddings request.
    pub fn answer(self, request: &Request) -> ResponseTemplate {
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return error(self, 400, &format!("invalid JSON: {e}")),
        };
        let inputs: Vec<String> = match &body["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect(),
            _ => return error(self, 400, "'input' is required"),
        };
        let mut dimension = self.dimension();
        match (self, body.get("dimensions").and_then(Value::as_u64)) {
            (Self::Vllm, Some(_)) => {
                return error(self, 400, &format!(
                    "Model \"{}\" does not support matryoshka representation, changing output dimensions will lead to poor results.",
                    self.model()
                ))
            }
            (Self::OpenAi | Self::Gemini, Some(d)) => dimension = d as usize,
            _ => {}
        }
        let limit = match self {
            Self::Tei => Some(32),
            Self::OpenAi => Some(2048),
            _ => None,
        };
        if let Some(limit) = limit.filter(|&l| inputs.len() > l) {
            return error(
                self,
                413,
                &format!(
                    "batch size {} > maximum allowed batch size {limit}",
                    inputs.len()
                ),
            );
        }
        for input in &inputs {
            let tokens = model_tokens(input);
            match self {
                Self::Vllm if tokens > 512 => return error(self, 400, &format!(
                    "This model's maximum context length is 512 tokens. However, you requested {tokens} tokens in the input for embedding generation. Please reduce the length of the input."
                )),
                Self::Tei if tokens > 512 && body.get("truncate") != Some(&Value::Bool(true)) => {
                    return error(self, 413, &format!(
                        "Input validation error: `inputs` must have less than 512 tokens. Given: {tokens}"
                    ))
                }
                Self::Ollama if input.contains(POISON) => {
                    return error(self, 500, "failed to encode response: json: unsupported value: NaN")
                }
                _ => {}
            }
        }
        let embedder = HashingEmbedder::new(dimension);
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let embedding = embedder.embed_one(text);
                if self == Self::Gemini && index == 0 {
                    json!({ "object": "embedding", "embedding": embedding })
                } else {
                    json!({ "object": "embedding", "index": index, "embedding": embedding })
                }
            })
            .collect();
        // OpenAI bills as its tokenizer counts; the others as their models do.
        let billed: usize = match self {
            Self::OpenAi => {
                let bpe = persona_ingest::tokens::TokenCounter::for_model(self.model());
                inputs.iter().map(|i| bpe.count(i)).sum()
            }
            _ => inputs.iter().map(|i| model_tokens(i)).sum(),
        };
        ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "data": data, "model": self.model(),
            "usage": { "prompt_tokens": billed, "total_tokens": billed }
        }))
    }
}

/// How the served models count: a token a character outside ASCII (as BERT-style vocabularies
/// do for CJK), a token a word otherwise.
fn model_tokens(text: &str) -> usize {
    let others = text.chars().filter(|c| !c.is_ascii()).count();
    others + text.split_ascii_whitespace().count()
}

/// An error as each server words it.
fn error(profile: Profile, status: u16, message: &str) -> ResponseTemplate {
    let body = match profile {
        Profile::Tei => json!({ "error": message, "error_type": "validation" }),
        Profile::Vllm => {
            json!({ "object": "error", "message": message, "type": "BadRequestError", "param": null, "code": status })
        }
        Profile::Ollama => {
            json!({ "error": { "message": message, "type": "api_error", "param": null, "code": null } })
        }
        Profile::OpenAi | Profile::Gemini => {
            json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null } })
        }
    };
    ResponseTemplate::new(status).set_body_json(body)
}

/// A running stand-in.
pub struct StandIn {
    pub server: MockServer,
    pub base_url: String,
    pub profile: Profile,
}

impl StandIn {
    /// The bodies of every embeddings request so far.
    pub async fn embedding_requests(&self) -> Vec<Value> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().ends_with("/embeddings"))
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    /// Settings that point the engine at it, as a user would write them.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("embedding.provider", "openai".into()),
            ("embedding.base_url", self.base_url.clone()),
            ("embedding.model", self.profile.model().into()),
        ]
    }
}

/// A provider's rate limit in front of a stand-in: a bucket of `tokens_per_minute` that refills
/// continuously, as OpenAI counts (its tokenizer's count of every input); a call over what is
/// left is answered 429 with `retry-after-ms`, as OpenAI answers.
pub struct RateLimited {
    pub profile: Profile,
    pub tokens_per_minute: f64,
    pub state: std::sync::Arc<std::sync::Mutex<RateState>>,
    counter: persona_ingest::tokens::TokenCounter,
}

#[derive(Debug)]
pub struct RateState {
    level: f64,
    at: std::time::Instant,
    /// Tokens of every call answered.
    pub tokens: u64,
    /// 429s answered.
    pub refused: u64,
    /// Each 429: seconds since the first call, the tokens left, the tokens asked.
    pub refusals: Vec<(f64, f64, usize)>,
    /// When the first and the last call were answered.
    pub first: Option<std::time::Instant>,
    pub last: Option<std::time::Instant>,
}

impl RateLimited {
    pub fn new(profile: Profile, tokens_per_minute: u64) -> Self {
        Self {
            profile,
            tokens_per_minute: tokens_per_minute as f64,
            state: std::sync::Arc::new(std::sync::Mutex::new(RateState {
                level: tokens_per_minute as f64,
                at: std::time::Instant::now(),
                tokens: 0,
                refused: 0,
                refusals: Vec::new(),
                first: None,
                last: None,
            })),
            counter: persona_ingest::tokens::TokenCounter::for_model(profile.model()),
        }
    }
}

impl RateLimited {
    /// A stand-in of `profile` behind a limit of `tokens_per_minute`; the state to read after.
    pub async fn start(
        profile: Profile,
        tokens_per_minute: u64,
    ) -> (MockServer, std::sync::Arc<std::sync::Mutex<RateState>>) {
        let limited = Self::new(profile, tokens_per_minute);
        let state = limited.state.clone();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("{}/embeddings", profile.base_path())))
            .respond_with(limited)
            .mount(&server)
            .await;
        (server, state)
    }
}

impl wiremock::Respond for RateLimited {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let tokens: usize = body["input"]
            .as_array()
            .map(|inputs| {
                inputs
                    .iter()
                    .map(|i| self.counter.count(i.as_str().unwrap_or_default()))
                    .sum()
            })
            .unwrap_or(0);
        let mut state = self.state.lock().unwrap();
        let now = std::time::Instant::now();
        let refill = now.duration_since(state.at).as_secs_f64() * self.tokens_per_minute / 60.0;
        state.level = (state.level + refill).min(self.tokens_per_minute);
        state.at = now;
        if state.level < tokens as f64 {
            state.refused += 1;
            let since = state
                .first
                .map_or(0.0, |f| now.duration_since(f).as_secs_f64());
            let level = state.level;
            state.refusals.push((since, level, tokens));
            let wait_ms = (tokens as f64 - state.level) * 60_000.0 / self.tokens_per_minute;
            return error(self.profile, 429, "Rate limit reached for requests")
                .insert_header("retry-after-ms", format!("{}", wait_ms.ceil() as u64));
        }
        state.level -= tokens as f64;
        state.tokens += tokens as u64;
        state.first.get_or_insert(now);
        state.last = Some(now);
        drop(state);
        self.profile.answer(request)
    }
}
