//! EmbeddingBatcher: one for the whole engine. It packs the texts of every running job into
//! provider calls of at most `max_inputs` texts (fewer if the server says so) and `max_tokens`
//! estimated tokens, waits at most `linger` for a partly filled batch to fill, keeps at most
//! `max_in_flight` calls running. A window of the data path ([`EmbedWindow`]) has its texts lent
//! to the calls (taken out of its records and put back, never copied), its vectors put in place,
//! and goes on to its writer; an [`EmbedTexts`] caller gets its vectors back in order. How a call
//! is retried, halved or searched for the input at fault is `call`'s. A window or caller whose
//! text the provider refuses gets that error naming the text's position; the others of the call
//! go on; a text proven bad fails at once when it comes again.
//!
//! Over 400 lines because its two messages of the data path (a window, texts to answer) share
//! one queue, one set of pending requests and one way of finishing a call, kept beside their
//! handlers; how a call is made is `call.rs`'s.

mod call;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

use super::window::{EmbedWindow, Window, WindowFailed, WriteWindow};
use super::{jittered_backoff, Observe};
use crate::config::EmbeddingSettings;
use crate::embed::rate_limit::RateLimiter;
use crate::embed::{EmbedError, EmbeddingProvider};
use crate::tokens::estimate as estimate_tokens;

/// Texts proven bad remembered at most, so that a text that keeps coming does not cost a search
/// each time; forgotten all at once past this.
const KNOWN_BAD_TEXTS: usize = 4096;

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
    /// [50%, 100%], and never shorter than what the provider asked for up to `backoff_max`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let asked = retry_after.unwrap_or_default();
        if asked > self.backoff_max {
            // An hour's Retry-After (a spent quota) would hold every job silently: try again
            // at the longest backoff, and say so.
            tracing::warn!(
                "the embedding provider asks to wait {asked:?}; trying again in at most {:?}",
                self.backoff_max
            );
        }
        jittered_backoff(self.backoff_base, attempt, self.backoff_max)
            .max(asked.min(self.backoff_max))
    }
}

/// Embeds `texts`; the answer holds one vector per text, in order. For a caller that wants the
/// vectors back (the tests); the data path sends [`EmbedWindow`].
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
    /// Calls made after the server said a batch was too large.
    pub split_calls: u64,
    /// Calls made looking for the input at fault in a failing call.
    pub isolation_calls: u64,
    /// Texts the provider refused alone (their callers failed, no one else's).
    pub bad_inputs: u64,
    /// The most inputs a call carries now.
    pub batch_cap: usize,
    pub in_flight: usize,
    pub max_in_flight_seen: usize,
    pub queued_texts: usize,
    /// Requests dropped because their caller or job had gone (aborted).
    pub abandoned: u64,
}

struct Pending {
    missing: usize,
    waiting: Waiting,
}

/// Where a request's vectors go.
enum Waiting {
    /// Back to an [`EmbedTexts`] caller, in order.
    Reply {
        vectors: Vec<Option<Vec<f32>>>,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
    },
    /// Into the window's records (positions are theirs), then on to its writer.
    Window(Window),
}

impl Pending {
    /// Its caller or job has gone.
    fn abandoned(&self) -> bool {
        match &self.waiting {
            Waiting::Reply { reply, .. } => reply.is_closed(),
            Waiting::Window(window) => window.abandoned(),
        }
    }

    /// Tells the caller or job of `error`.
    fn fail(self, error: EmbedError) {
        match self.waiting {
            Waiting::Reply { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Waiting::Window(window) => {
                window.failed(|window| WindowFailed::Embedding { error, window });
            }
        }
    }
}

struct Piece {
    request: u64,
    position: usize,
    text: String,
    tokens: usize,
    queued_at: Instant,
}

struct CallDone {
    /// (request, position, the text's hash) of each input.
    pieces: Vec<(u64, usize, u64)>,
    /// The texts lent to the call, in the order of `pieces`.
    texts: Vec<String>,
    results: call::Results,
    spent: call::Spent,
}

pub struct EmbeddingBatcher {
    caller: call::Caller,
    limits: BatchLimits,
    /// Hash of a text the provider refused alone → the error.
    known_bad: HashMap<u64, EmbedError>,
    pending: HashMap<u64, Pending>,
    queue: VecDeque<Piece>,
    queued_tokens: usize,
    next_request: u64,
    linger_timer: Option<SpawnHandle>,
    counters: BatcherCounters,
}

impl EmbeddingBatcher {
    /// The batcher of `provider`: calls within `limits`, and within the provider's own largest
    /// batch when it states one.
    pub fn new(provider: Arc<dyn EmbeddingProvider>, limits: BatchLimits) -> Self {
        let cap = provider
            .max_batch_inputs()
            .map_or(limits.max_inputs, |n| n.min(limits.max_inputs))
            .max(1);
        Self {
            caller: call::Caller {
                provider,
                limits,
                cap: Arc::new(AtomicUsize::new(cap)),
                successes: Arc::default(),
                limiter: None,
            },
            known_bad: HashMap::new(),
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
            let full =
                self.queue.len() >= self.cap() || self.queued_tokens >= self.limits.max_tokens;
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

    /// Every provider call first takes its request and tokens from `limiter`.
    pub fn with_rate_limiter(mut self, limiter: Option<Arc<dyn RateLimiter>>) -> Self {
        self.caller.limiter = limiter;
        self
    }

    /// The most inputs a call may carry now.
    fn cap(&self) -> usize {
        self.caller.cap.load(Ordering::SeqCst)
    }

    /// Pieces whose caller has gone away (its job was aborted) are not worth a call.
    fn drop_abandoned(&mut self) {
        let before = self.pending.len();
        self.pending.retain(|_, p| !p.abandoned());
        self.counters.abandoned += (before - self.pending.len()) as u64;
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
        let cap = self.cap();
        let mut texts = Vec::new();
        let mut pieces = Vec::new();
        let mut tokens = 0;
        while let Some(piece) = self.queue.front() {
            let over_tokens = !texts.is_empty() && tokens + piece.tokens > self.limits.max_tokens;
            if texts.len() >= cap || over_tokens {
                break;
            }
            let piece = self.queue.pop_front().expect("front exists");
            tokens += piece.tokens;
            self.queued_tokens -= piece.tokens;
            pieces.push((
                piece.request,
                piece.position,
                xxh3_64(piece.text.as_bytes()),
            ));
            texts.push(piece.text);
        }
        self.counters.calls += 1;
        self.counters.in_flight += 1;
        self.counters.max_in_flight_seen = self
            .counters
            .max_in_flight_seen
            .max(self.counters.in_flight);
        let caller = self.caller.clone();
        let call = async move {
            let (results, spent) = caller.embed(&texts).await;
            (results, spent, texts)
        };
        ctx.spawn(
            call.into_actor(self)
                .map(move |(results, spent, texts), act, ctx| {
                    act.finish_call(CallDone {
                        pieces,
                        texts,
                        results,
                        spent,
                    });
                    act.pump(ctx);
                }),
        );
    }

    fn finish_call(&mut self, done: CallDone) {
        self.counters.in_flight -= 1;
        self.counters.calls += done.spent.calls.saturating_sub(1);
        self.counters.retries += done.spent.retries;
        self.counters.split_calls += done.spent.split_calls;
        self.counters.isolation_calls += done.spent.isolation_calls;
        self.counters.batch_cap = self.cap();
        if done
            .results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.input.is_none()))
        {
            self.counters.failed_calls += 1;
        }
        let answered = done.pieces.into_iter().zip(done.texts).zip(done.results);
        for (((request, position, hash), text), result) in answered {
            match result {
                Ok(vector) => self.deliver(request, position, vector, text),
                Err(mut error) => {
                    if error.input.is_some() {
                        self.counters.bad_inputs += 1;
                        if self.known_bad.len() >= KNOWN_BAD_TEXTS {
                            self.known_bad.clear();
                        }
                        self.known_bad.insert(hash, error.clone());
                        error.input = Some(position);
                    }
                    if let Some(pending) = self.pending.remove(&request) {
                        pending.fail(error);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, request: u64, position: usize, vector: Vec<f32>, text: String) {
        let Some(pending) = self.pending.get_mut(&request) else {
            return;
        };
        match &mut pending.waiting {
            Waiting::Reply { vectors, .. } => vectors[position] = Some(vector),
            Waiting::Window(window) => {
                let record = &mut window.records[position];
                record.embedding = vector;
                record.document = text;
            }
        }
        pending.missing -= 1;
        if pending.missing == 0 {
            match self.pending.remove(&request).expect("present").waiting {
                Waiting::Reply { vectors, reply } => {
                    let vectors = vectors.into_iter().map(|v| v.expect("filled")).collect();
                    let _ = reply.send(Ok(vectors));
                }
                Waiting::Window(window) if window.abandoned() => self.counters.abandoned += 1,
                Waiting::Window(window) => window.write_to.clone().do_send(WriteWindow(window)),
            }
        }
    }

    /// Queues `texts` (position, text, tokens) as a new request, waiting as `waiting` says.
    fn enqueue(
        &mut self,
        texts: impl ExactSizeIterator<Item = (usize, String, usize)>,
        waiting: Waiting,
        ctx: &mut Context<Self>,
    ) {
        let request = self.next_request;
        self.next_request += 1;
        self.counters.requests += 1;
        self.counters.texts += texts.len() as u64;
        let now = Instant::now();
        self.pending.insert(
            request,
            Pending {
                missing: texts.len(),
                waiting,
            },
        );
        for (position, text, tokens) in texts {
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

    /// The error of the first of `texts` already proven bad, naming its position.
    fn known_bad_text<'a>(
        &self,
        mut texts: impl Iterator<Item = (usize, &'a str)>,
    ) -> Option<EmbedError> {
        if self.known_bad.is_empty() {
            return None;
        }
        texts.find_map(|(position, text)| {
            let error = self.known_bad.get(&xxh3_64(text.as_bytes()))?;
            Some(EmbedError {
                input: Some(position),
                ..error.clone()
            })
        })
    }
}

impl Actor for EmbeddingBatcher {
    type Context = Context<Self>;
}

impl Handler<EmbedTexts> for EmbeddingBatcher {
    type Result = ResponseFuture<Result<Vec<Vec<f32>>, EmbedError>>;

    fn handle(&mut self, msg: EmbedTexts, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        let known_bad = self.known_bad_text(msg.texts.iter().map(String::as_str).enumerate());
        if msg.texts.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
        } else if let Some(error) = known_bad {
            let _ = reply.send(Err(error));
        } else {
            let waiting = Waiting::Reply {
                vectors: vec![None; msg.texts.len()],
                reply,
            };
            let texts = msg.texts.into_iter().enumerate().map(|(at, text)| {
                let tokens = estimate_tokens(&text);
                (at, text, tokens)
            });
            self.enqueue(texts, waiting, ctx);
        }
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(EmbedError::permanent("the embedding batcher stopped")))
        })
    }
}

impl Handler<EmbedWindow> for EmbeddingBatcher {
    type Result = ();

    fn handle(&mut self, EmbedWindow(mut window): EmbedWindow, ctx: &mut Context<Self>) {
        if window.abandoned() {
            self.counters.abandoned += 1;
            return;
        }
        if window.to_embed.is_empty() {
            window.write_to.clone().do_send(WriteWindow(window));
            return;
        }
        let texts = window
            .to_embed
            .iter()
            .map(|&(at, _)| (at, window.records[at].document.as_str()));
        if let Some(error) = self.known_bad_text(texts) {
            window.failed(|window| WindowFailed::Embedding { error, window });
            return;
        }
        // Lent to the calls; each comes back to its record with the vector.
        let texts: Vec<(usize, String, usize)> = window
            .to_embed
            .iter()
            .map(|&(at, tokens)| {
                let text = std::mem::take(&mut window.records[at].document);
                (at, text, tokens as usize)
            })
            .collect();
        self.enqueue(texts.into_iter(), Waiting::Window(window), ctx);
    }
}

impl Handler<Observe<BatcherCounters>> for EmbeddingBatcher {
    type Result = MessageResult<Observe<BatcherCounters>>;

    fn handle(&mut self, _: Observe<BatcherCounters>, _: &mut Context<Self>) -> Self::Result {
        self.counters.batch_cap = self.cap();
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
