//! Probes: stand-in actors for a peer. A probe records each message it receives and answers it
//! with a scripted reply, at once or, while held, only once released.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{watch, Notify};

type Reply<M> = Box<dyn FnMut(&M) -> <M as Message>::Result + Send>;

struct State<M: Message> {
    received: Mutex<Vec<M>>,
    unread: Mutex<VecDeque<M>>,
    arrived: Notify,
    reply: Mutex<Reply<M>>,
    held: watch::Sender<bool>,
}

/// The test's side of a probe.
pub struct ProbeHandle<M>
where
    M: Message + Send,
    M::Result: Send,
{
    state: Arc<State<M>>,
    recipient: Recipient<M>,
}

impl<M> Clone for ProbeHandle<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            recipient: self.recipient.clone(),
        }
    }
}

struct Probe<M: Message> {
    state: Arc<State<M>>,
}

impl<M> Actor for Probe<M>
where
    M: Message + Send + Clone + 'static,
    M::Result: Send,
{
    type Context = Context<Self>;
}

impl<M> Handler<M> for Probe<M>
where
    M: Message + Send + Clone + 'static,
    M::Result: Send,
{
    type Result = ResponseFuture<M::Result>;

    fn handle(&mut self, msg: M, _: &mut Context<Self>) -> Self::Result {
        let reply = (self.state.reply.lock().expect("not poisoned"))(&msg);
        self.state
            .received
            .lock()
            .expect("not poisoned")
            .push(msg.clone());
        self.state
            .unread
            .lock()
            .expect("not poisoned")
            .push_back(msg);
        self.state.arrived.notify_waiters();
        let mut held = self.state.held.subscribe();
        Box::pin(async move {
            while *held.borrow_and_update() {
                if held.changed().await.is_err() {
                    break;
                }
            }
            reply
        })
    }
}

/// Starts a probe (in the current actix system) that answers each message with `reply`.
pub fn probe<M>(reply: impl FnMut(&M) -> M::Result + Send + 'static) -> ProbeHandle<M>
where
    M: Message + Send + Clone + 'static,
    M::Result: Send,
{
    let state = Arc::new(State {
        received: Mutex::new(Vec::new()),
        unread: Mutex::new(VecDeque::new()),
        arrived: Notify::new(),
        reply: Mutex::new(Box::new(reply) as Reply<M>),
        held: watch::channel(false).0,
    });
    let recipient = Probe {
        state: state.clone(),
    }
    .start()
    .recipient();
    ProbeHandle { state, recipient }
}

impl<M> ProbeHandle<M>
where
    M: Message + Send + Clone + 'static,
    M::Result: Send,
{
    /// What the actor under test should hold in place of the peer.
    pub fn recipient(&self) -> Recipient<M> {
        self.recipient.clone()
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<M> {
        self.state.received.lock().expect("not poisoned").clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().expect("not poisoned").len()
    }

    /// The messages not yet taken by `expect_message` or `drain`.
    pub fn drain(&self) -> Vec<M> {
        self.state
            .unread
            .lock()
            .expect("not poisoned")
            .drain(..)
            .collect()
    }

    /// The next message not yet taken, waiting for it if need be (a minute of virtual time at
    /// most, then the test fails).
    pub async fn expect_message(&self) -> M {
        let wait = async {
            loop {
                let arrived = self.state.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if let Some(msg) = self.state.unread.lock().expect("not poisoned").pop_front() {
                    return msg;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the probe expected a message that never came")
    }

    /// From now on, replies are kept until `release_replies`.
    pub fn hold_replies(&self) {
        self.state.held.send_replace(true);
    }

    pub fn release_replies(&self) {
        self.state.held.send_replace(false);
    }

    /// Changes how the probe answers from now on.
    pub fn reply_with(&self, reply: impl FnMut(&M) -> M::Result + Send + 'static) {
        *self.state.reply.lock().expect("not poisoned") = Box::new(reply);
    }
}
