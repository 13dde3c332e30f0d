//! The engine's actors (actix), one file each; `pipeline` wires them together.
//!
//! ```text
//! Supervisor ─► Orchestrator(persona) ─► Ingestor(job) ─┬─► EmbeddingBatcher ─► provider
//!                                                       └─► StoreWriter ─► vector store
//! every actor ─► StatusRecorder ─► database
//! ```
//!
//! Actors know their peers as `Recipient<M>` (or small handle types), never as another
//! actor's `Addr`, so each one can be started alone against probes in tests.

pub mod embedding_batcher;
pub mod ingestor;
pub mod orchestrator;
pub mod status_recorder;
pub mod store_writer;
pub mod supervisor;
pub mod window;

use std::marker::PhantomData;

use actix::Message;

/// Asks an actor for its counters (Quickwit's "observable state"): tests and the status
/// views read the same numbers.
pub struct Observe<C>(PhantomData<C>);

impl<C> Observe<C> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<C> Default for Observe<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: 'static> Message for Observe<C> {
    type Result = C;
}

pub use crate::retry::jittered_backoff;

/// The text of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
