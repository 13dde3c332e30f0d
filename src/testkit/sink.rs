//! Sinks: stand-in actors for a peer of the one-way data path. A window is owned by one actor at
//! a time and is not `Clone`, so a probe (which keeps a copy of each message) cannot stand in
//! for the batcher or the writer; a sink takes each message whole and hands it to the test's
//! handler, at once or, while held, only once released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;

type Handle<M> = Box<dyn FnMut(M) + Send>;

struct State<M> {
    handle: Mutex<Handle<M>>,
    /// `Some` while held: the messages kept, in order.
    held: Mutex<Option<Vec<M>>>,
    received: AtomicUsize,
}

/// The test's side of a sink.
pub struct SinkHandle<M: Message<Result = ()> + Send> {
    state: Arc<State<M>>,
    recipient: Recipient<M>,
}

struct Sink<M> {
    state: Arc<State<M>>,
}

impl<M: Message<Result = ()> + Send + 'static> Actor for Sink<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for Sink<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        self.state.received.fetch_add(1, Ordering::SeqCst);
        if let Some(held) = self.state.held.lock().expect("not poisoned").as_mut() {
            held.push(msg);
            return;
        }
        (self.state.handle.lock().expect("not poisoned"))(msg);
    }
}

/// Starts a sink (in the current actix system) that hands each message to `handle`.
pub fn sink<M: Message<Result = ()> + Send + 'static>(
    handle: impl FnMut(M) + Send + 'static,
) -> SinkHandle<M> {
    let state = Arc::new(State {
        handle: Mutex::new(Box::new(handle) as Handle<M>),
        held: Mutex::new(None),
        received: AtomicUsize::new(0),
    });
    let recipient = Sink {
        state: state.clone(),
    }
    .start()
    .recipient();
    SinkHandle { state, recipient }
}

impl<M: Message<Result = ()> + Send + 'static> SinkHandle<M> {
    /// What the actor under test should hold in place of the peer.
    pub fn recipient(&self) -> Recipient<M> {
        self.recipient.clone()
    }

    /// Messages received so far, held or handled.
    pub fn count(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    /// From now on, messages are kept until `release` (or `take_held`).
    pub fn hold(&self) {
        self.state
            .held
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(Vec::new);
    }

    /// Hands what was held to the handler, in order, and stops holding.
    pub fn release(&self) {
        let held = self.state.held.lock().expect("not poisoned").take();
        let mut handle = self.state.handle.lock().expect("not poisoned");
        for msg in held.into_iter().flatten() {
            handle(msg);
        }
    }

    /// The messages held so far, taken out (the sink keeps holding).
    pub fn take_held(&self) -> Vec<M> {
        self.state
            .held
            .lock()
            .expect("not poisoned")
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Changes what the sink does with each message from now on.
    pub fn handle_with(&self, handle: impl FnMut(M) + Send + 'static) {
        *self.state.handle.lock().expect("not poisoned") = Box::new(handle);
    }
}
