//! The actor test harness: start any one actor with probes in place of its peers, drive time by
//! hand, and read what happened. Used by the actors' own unit tests and open to `tests/`.
//!
//! - [`probe`] stands in for a peer: it records every message, answers with scripted replies,
//!   and can withhold its answers to prove backpressure. [`sink`] stands in for a peer of the
//!   one-way data path, whose messages (windows of records) are owned, not copied.
//! - [`ScriptedProvider`], [`MemoryStore`] and [`StaticSource`] stand in for the embedding
//!   provider, the vector store and a corpus, with scripted failures; [`MemoryBroker`] for the
//!   trigger's Redis side (queues, in-flight lists, dead letters, results, locks, events).
//! - Time is tokio's paused clock: [`pause`] in a test, [`advance`] to move it; timers, linger
//!   windows, backoff and time limits then take no real time. (Paused time and real database
//!   pools do not mix: tests of the StatusRecorder keep the real clock.)
//! - [`observe`] asks an actor for its counters; as actors handle messages in order, its answer
//!   also means every message sent before it has been handled.
//!
//! - [`conformance`] holds one suite a seam (vector store, embedding provider), run over every
//!   implementation.
//!
//! See `docs/testing.md` for a complete example.

mod broker;
pub mod conformance;
mod probe;
mod provider;
mod sink;
mod source;
mod store;

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler};

use crate::actors::Observe;

pub use broker::MemoryBroker;
pub use probe::{probe, ProbeHandle};
pub use provider::{ScriptedProvider, ScriptedReply};
pub use sink::{sink, SinkHandle};
pub use source::{StaticSource, StaticSources, STATIC_FILE};
pub use store::{MemoryStore, StoreFault};

/// Stops the clock: from here on, time moves only by [`advance`] or when every task is idle.
pub fn pause() {
    tokio::time::pause();
}

/// Moves the paused clock forward, firing the timers due meanwhile. Timers have a resolution
/// of a millisecond and round up: advance a millisecond past a deadline to be sure it fired.
pub async fn advance(by: Duration) {
    tokio::time::advance(by).await;
}

/// Lets every task that can run, run. The single-threaded scheduler turns its I/O and timer
/// driver once every 61 polls, so a few hundred yields let timers fire and what they wake run.
pub async fn settle() {
    for _ in 0..400 {
        tokio::task::yield_now().await;
    }
}

/// The actor's counters, once every message sent to it before has been handled.
pub async fn observe<A, C>(addr: &Addr<A>) -> C
where
    A: Actor + Handler<Observe<C>>,
    A::Context: ToEnvelope<A, Observe<C>>,
    C: Send + 'static,
{
    addr.send(Observe::new())
        .await
        .expect("the actor is running")
}
