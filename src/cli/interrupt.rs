//! `ingest` stopped by SIGINT (Ctrl-C) or SIGTERM: its runs are aborted, so that their unfinished
//! jobs end failed naming the signal (none is left `processing`), the run locks are freed and the
//! summary still printed; a second signal exits at once.

use std::sync::{Arc, OnceLock};

use actix::Addr;
use tokio::signal::unix::{signal, SignalKind};

use crate::actors::supervisor::{AbortRuns, Supervisor};

/// Watches for the signals while `ingest` runs; stops watching when dropped.
pub struct Interrupt {
    caught: Arc<OnceLock<&'static str>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Interrupt {
    /// Aborts `supervisor`'s runs on the first SIGINT or SIGTERM.
    ///
    /// Errors: the signal handlers could not be installed.
    pub fn watch(supervisor: Addr<Supervisor>) -> std::io::Result<Self> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let caught = Arc::new(OnceLock::new());
        let seen = caught.clone();
        let watcher = actix::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            let _ = seen.set(name);
            eprintln!(
                "{name}: stopping; unfinished jobs are marked failed (again to quit at once)"
            );
            supervisor.do_send(AbortRuns {
                reason: format!("interrupted by {name}"),
            });
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            std::process::exit(130);
        });
        Ok(Self { caught, watcher })
    }

    /// The signal that stopped the runs, if one did.
    pub fn caught(&self) -> Option<&'static str> {
        self.caught.get().copied()
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}
