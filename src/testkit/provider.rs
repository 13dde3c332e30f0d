//! A scripted embedding provider: records every call, answers with deterministic vectors or
//! with the failures a test lines up, and can hold calls open to count them in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::embed::{EmbedError, EmbeddingProvider};

/// How the next call is answered.
#[derive(Clone, Debug)]
pub enum ScriptedReply {
    /// One vector per text.
    Vectors,
    /// One vector fewer than asked for.
    Short,
    Fail(EmbedError),
    Panic(String),
    /// Vectors, the one at this position all NaN.
    NanAt(usize),
}

/// Decides a call by its texts: an error, or `None` to go on with the script.
type Rule = Box<dyn Fn(&[String]) -> Option<EmbedError> + Send + Sync>;

pub struct ScriptedProvider {
    dimension: usize,
    calls: Mutex<Vec<Vec<String>>>,
    script: Mutex<VecDeque<ScriptedReply>>,
    gate: watch::Sender<bool>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    rule: Mutex<Option<Rule>>,
    max_batch_inputs: Option<usize>,
}

impl ScriptedProvider {
    pub fn new(dimension: usize) -> Self {
        Self {
            dimension,
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            gate: watch::channel(true).0,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            rule: Mutex::new(None),
            max_batch_inputs: None,
        }
    }

    /// A provider that says it takes at most `n` inputs a call.
    pub fn with_max_batch_inputs(mut self, n: usize) -> Self {
        self.max_batch_inputs = Some(n);
        self
    }

    /// Every call from now on is first put to `rule`: a server that always refuses some text or
    /// any batch over a size.
    pub fn fail_when(
        &self,
        rule: impl Fn(&[String]) -> Option<EmbedError> + Send + Sync + 'static,
    ) -> &Self {
        *self.rule.lock().expect("not poisoned") = Some(Box::new(rule));
        self
    }

    /// The vector given for `text`: its length, then zeros, so tests can tell texts apart.
    pub fn vector_for(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0; self.dimension];
        v[0] = text.len() as f32;
        v
    }

    /// Answers for the next calls, in order; calls past the script get vectors.
    pub fn then(&self, replies: impl IntoIterator<Item = ScriptedReply>) -> &Self {
        self.script.lock().expect("not poisoned").extend(replies);
        self
    }

    /// Every call's texts, oldest first.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// Calls wait until `open_gate`.
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight_seen(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EmbeddingProvider for ScriptedProvider {
    fn model(&self) -> &str {
        "scripted"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_batch_inputs(&self) -> Option<usize> {
        self.max_batch_inputs
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.lock().expect("not poisoned").push(texts.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut gate = self.gate.subscribe();
        while !*gate.borrow_and_update() {
            if gate.changed().await.is_err() {
                break;
            }
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(rule) = &*self.rule.lock().expect("not poisoned") {
            if let Some(error) = rule(&texts) {
                return Err(error);
            }
        }
        let reply = self
            .script
            .lock()
            .expect("not poisoned")
            .pop_front()
            .unwrap_or(ScriptedReply::Vectors);
        match reply {
            ScriptedReply::Vectors => Ok(texts.iter().map(|t| self.vector_for(t)).collect()),
            ScriptedReply::Short => Ok(texts.iter().skip(1).map(|t| self.vector_for(t)).collect()),
            ScriptedReply::Fail(e) => Err(e),
            ScriptedReply::Panic(message) => panic!("{message}"),
            ScriptedReply::NanAt(bad) => Ok(texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut v = self.vector_for(t);
                    if i == bad {
                        v.fill(f32::NAN);
                    }
                    v
                })
                .collect()),
        }
    }
}
