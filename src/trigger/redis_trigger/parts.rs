//! What a RedisTrigger is made of: its settings, its Redis side (the ports, stand-ins in tests)
//! and the engine it serves.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;

use crate::actors::supervisor::{AbortPersona, AbortRuns, RunTask};
use crate::config::FullPersonaAnswers;
use crate::trigger::celery::TaskNames;
use crate::trigger::ports::{Events, Locks, Queue, ResultStore, Revocations};

/// How a RedisTrigger serves.
pub struct TriggerConfig {
    /// Unique per process (`hostname:pid:uuid`), so that a restarted process never inherits a
    /// dead one's lease.
    pub worker_id: String,
    /// The node name (Celery's `--hostname`).
    pub hostname: String,
    pub concurrency: usize,
    /// Messages taken per concurrency slot (Celery's `worker_prefetch_multiplier`).
    pub prefetch: usize,
    pub visibility_timeout: Duration,
    pub shutdown_grace: Duration,
    pub names: TaskNames,
    pub answers: FullPersonaAnswers,
    /// The first queue served: where callbacks without a queue of their own go.
    pub default_queue: String,
    /// How long a revocation is kept (`worker.revokes_expire`).
    pub revokes_expire: Duration,
}

impl TriggerConfig {
    /// A worker id no other process has had: `hostname:pid:uuid`.
    pub fn new_worker_id() -> String {
        format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )
    }
}

pub use crate::naming::hostname;

/// The trigger's Redis side (stand-ins in tests).
#[derive(Clone)]
pub struct TriggerPorts {
    pub queue: Arc<dyn Queue>,
    pub results: Arc<dyn ResultStore>,
    pub locks: Arc<dyn Locks>,
    pub revocations: Arc<dyn Revocations>,
    pub events: Option<Arc<dyn Events>>,
}

/// The engine, as the trigger sees it.
#[derive(Clone)]
pub struct TriggerPeers {
    pub engine: Recipient<RunTask>,
    pub abort_runs: Recipient<AbortRuns>,
    pub abort_persona: Recipient<AbortPersona>,
}
