//! EmbeddingBatcher: one for the whole engine. It packs the texts of every running job into
//! provider calls of at most `max_inputs` texts and `max_tokens` estimated tokens, waits at
//! most `linger` for a partly filled batch to fill, keeps at most `max_in_flight` calls
//! running, retries transient failures with exponential backoff and jitter (honouring
//! `Retry-After`) up to `max_retries`, and answers each caller with its own vectors in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{jittered_backoff, panic_message, Observe};
use crate::config::EmbeddingSettings;
use crate::embed::{EmbedError, EmbeddingProvider};
use crate::sources::chunker::estimate_tokens;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_inputs: usize,
    pub max_tokens: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub max_retries: u32,
    /// First retry delay; doubled each time, capped at `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl BatchLimits {
    pub fn from_settings(s: &EmbeddingSettings) -> Self {
        Self {
            max_inputs: s.max_batch_inputs,
            max_tokens: s.max_batch_tokens,
            linger: s.linger(),
            max_in_flight: s.max_in_flight,
            max_retries: s.max_retries,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// The wait before retry number `attempt` (1-based): exponential with jitter in
    /// [50%, 100%], and never shorter than what the provider asked for.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        jittered_backoff(self.backoff_base, attempt, self.backoff_max)
            .max(retry_after.unwrap_or_default())
    }
}

/// Embeds `texts`; the answer holds one vector per text, in order.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Vec<Vec<f32>>, EmbedError>")]
pub struct EmbedTexts {
    pub texts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatcherCounters {
    pub requests: u64,
    pub texts: u64,
    pub calls: u64,
    pub retries: u64,
    pub failed_calls: u64,
    pub in_flight: usize,
    pub max_in_flight_seen: usize,
    pub queued_texts: usize,
}

struct Pending {
    vectors: Vec<Option<Vec<f32>>>,
    missing: usize,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

struct Piece {
    request: u64,
    position: usize,
    text: String,
    tokens: usize,
    queued_at: Instant,
}

struct CallDone {
    pieces: Vec<(u64, usize)>,
    result: Result<Vec<Vec<f32>>, EmbedError>,
    retries: u64,
}

pub struct EmbeddingBatcher {
    provider: Arc<dyn EmbeddingProvider>,
    limits: BatchLimits,
    pending: HashMap<u64, Pending>,
    queue: VecDeque<Piece>,
    queued_tokens: usize,
    next_request: u64,
    linger_timer: Option<SpawnHandle>,
    counters: BatcherCounters,
}

impl EmbeddingBatcher {
    pub fn new(provider: Arc<dyn EmbeddingProvider>, limits: BatchLimits) -> Self {
        Self {
            provider,
            limits,
            pending: HashMap::new(),
            queue: VecDeque::new(),
            queued_tokens: 0,
            next_request: 0,
            linger_timer: None,
            counters: BatcherCounters::default(),
        }
    }

    /// Starts as many calls as the limits allow; arms the linger timer for what must wait.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.drop_abandoned();
        while self.counters.in_flight < self.limits.max_in_flight && !self.queue.is_empty() {
            let full = self.queue.len() >= self.limits.max_inputs
                || self.queued_tokens >= self.limits.max_tokens;
            let deadline = self.queue[0].queued_at + self.limits.linger;
            if !full && Instant::now() < deadline {
                if let Some(timer) = self.linger_timer.take() {
                    ctx.cancel_future(timer);
                }
                let wait = deadline - Instant::now();
                self.linger_timer = Some(ctx.run_later(wait, |act, ctx| {
                    act.linger_timer = None;
                    act.pump(ctx);
                }));
                break;
            }
            self.start_call(ctx);
        }
        self.counters.queued_texts = self.queue.len();
    }

    /// Pieces whose caller has gone away (its job was aborted) are not worth a call.
    fn drop_abandoned(&mut self) {
        self.pending.retain(|_, p| !p.reply.is_closed());
        let pending = &self.pending;
        let mut dropped_tokens = 0;
        self.queue.retain(|piece| {
            let keep = pending.contains_key(&piece.request);
            if !keep {
                dropped_tokens += piece.tokens;
            }
            keep
        });
        self.queued_tokens -= dropped_tokens;
    }

    fn start_call(&mut self, ctx: &mut Context<Self>) {
        let mut texts = Vec::new();
        let mut pieces = Vec::new();
        let mut tokens = 0;
        while let Some(piece) = self.queue.front() {
            let over_tokens = !texts.is_empty() && tokens + piece.tokens > self.limits.max_tokens;
            if texts.len() >= self.limits.max_inputs || over_tokens {
                break;
            }
            let piece = self.queue.pop_front().expect("front exists");
            tokens += piece.tokens;
            self.queued_tokens -= piece.tokens;
            pieces.push((piece.request, piece.position));
            texts.push(piece.text);
        }
        self.counters.calls += 1;
        self.counters.in_flight += 1;
        self.counters.max_in_flight_seen = self
            .counters
            .max_in_flight_seen
            .max(self.counters.in_flight);
        let call = call_with_retries(self.provider.clone(), self.limits, texts);
        ctx.spawn(
            call.into_actor(self)
                .map(move |(result, retries), act, ctx| {
                    act.finish_call(CallDone {
                        pieces,
                        result,
                        retries,
                    });
                    act.pump(ctx);
                }),
        );
    }

    fn finish_call(&mut self, done: CallDone) {
        self.counters.in_flight -= 1;
        self.counters.retries += done.retries;
        match done.result {
            Ok(vectors) => {
                for ((request, position), vector) in done.pieces.into_iter().zip(vectors) {
                    let Some(pending) = self.pending.get_mut(&request) else {
                        continue;
                    };
                    pending.vectors[position] = Some(vector);
                    pending.missing -= 1;
                    if pending.missing == 0 {
                        let pending = self.pending.remove(&request).expect("present");
                        let vectors = pending
                            .vectors
                            .into_iter()
                            .map(|v| v.expect("filled"))
                            .collect();
                        let _ = pending.reply.send(Ok(vectors));
                    }
                }
            }
            Err(error) => {
                self.counters.failed_calls += 1;
                for (request, _) in done.pieces {
                    if let Some(pending) = self.pending.remove(&request) {
                        let _ = pending.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

/// One provider call, retried while the failure is transient and the budget lasts. Returns
/// the result and how many retries it took.
async fn call_with_retries(
    provider: Arc<dyn EmbeddingProvider>,
    limits: BatchLimits,
    texts: Vec<String>,
) -> (Result<Vec<Vec<f32>>, EmbedError>, u64) {
    let expected = texts.len();
    let dimension = provider.dimension();
    let mut retries = 0;
    let metrics = &crate::metrics::METRICS;
    metrics.embedding_batch_size.observe(expected as f64);
    let timer = metrics.embedding_latency.start_timer();
    loop {
        let attempt = std::panic::AssertUnwindSafe(provider.embed(texts.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(EmbedError::permanent(format!(
                    "embedding provider panicked: {}",
                    panic_message(&*panic)
                )))
            });
        let result = attempt.and_then(|vectors| {
            if vectors.len() != expected {
                return Err(EmbedError::permanent(format!(
                    "embedding provider returned {} vectors for {expected} texts",
                    vectors.len()
                )));
            }
            if let Some(bad) = vectors.iter().find(|v| v.len() != dimension) {
                return Err(EmbedError::permanent(format!(
                    "embedding provider returned a vector of dimension {}, expected {dimension}",
                    bad.len()
                )));
            }
            Ok(vectors)
        });
        let outcome = match result {
            Err(e) if e.transient && (retries as u32) < limits.max_retries => {
                retries += 1;
                metrics.retries.with_label_values(&["embedding"]).inc();
                tokio::time::sleep(limits.backoff(retries as u32, e.retry_after)).await;
                continue;
            }
            Err(e) if e.transient => {
                let message = format!("{} (gave up after {} attempts)", e.message, retries + 1);
                Err(EmbedError { message, ..e })
            }
            other => other,
        };
        timer.observe_duration();
        match &outcome {
            Ok(_) => {
                metrics.embedding_calls.with_label_values(&["ok"]).inc();
                metrics.chunks_embedded.inc_by(expected as u64);
            }
            Err(_) => metrics.embedding_calls.with_label_values(&["error"]).inc(),
        }
        return (outcome, retries);
    }
}

impl Actor for EmbeddingBatcher {
    type Context = Context<Self>;
}

impl Handler<EmbedTexts> for EmbeddingBatcher {
    type Result = ResponseFuture<Result<Vec<Vec<f32>>, EmbedError>>;

    fn handle(&mut self, msg: EmbedTexts, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        if msg.texts.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
        } else {
            let request = self.next_request;
            self.next_request += 1;
            self.counters.requests += 1;
            self.counters.texts += msg.texts.len() as u64;
            let now = Instant::now();
            self.pending.insert(
                request,
                Pending {
                    vectors: vec![None; msg.texts.len()],
                    missing: msg.texts.len(),
                    reply,
                },
            );
            for (position, text) in msg.texts.into_iter().enumerate() {
                let tokens = estimate_tokens(&text);
                self.queued_tokens += tokens;
                self.queue.push_back(Piece {
                    request,
                    position,
                    text,
                    tokens,
                    queued_at: now,
                });
            }
            self.pump(ctx);
        }
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(EmbedError::permanent("the embedding batcher stopped")))
        })
    }
}

impl Handler<Observe<BatcherCounters>> for EmbeddingBatcher {
    type Result = MessageResult<Observe<BatcherCounters>>;

    fn handle(&mut self, _: Observe<BatcherCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod tests;
