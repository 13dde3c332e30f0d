//! `persona-ingest run`: the daemon (`daemon::run`) until SIGTERM or SIGINT; then it stops intake,
//! lets running work finish within `worker.shutdown_grace`, requeues the rest, and exits 0.

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<i32> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let report = crate::daemon::run(settings, shutdown).await?;
    let t = &report.trigger;
    eprintln!(
        "stopped: {} task(s) answered, {} dead-lettered, {} requeued; {} retried",
        t.answered, t.dead_lettered, t.requeued_at_exit, t.retried
    );
    Ok(0)
}
