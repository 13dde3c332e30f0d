//! `ingest`'s live progress: one bar per job, moved by the StatusRecorder's events, and closed
//! with each job's outcome.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::actors::orchestrator::{RunOutcome, RunRequest};
use crate::JobStatus;

/// One bar per job, moved by the StatusRecorder's events.
pub(super) struct ProgressBars {
    _multi: MultiProgress,
    bars: HashMap<Uuid, ProgressBar>,
}

impl ProgressBars {
    pub(super) fn new(requests: &[RunRequest]) -> Self {
        let multi = MultiProgress::new();
        let style =
            ProgressStyle::with_template("{prefix:>24.bold} {bar:30.cyan/blue} {pos:>3}% {msg}")
                .expect("valid template")
                .progress_chars("█▉▊▋▌▍▎▏ ");
        let mut bars = HashMap::new();
        for request in requests {
            for job in &request.jobs {
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(style.clone());
                bar.set_prefix(format!("{} {}", request.persona, job.kind));
                bar.set_message("waiting");
                bars.insert(job.id, bar);
            }
        }
        Self {
            _multi: multi,
            bars,
        }
    }

    pub(super) fn follow(
        &self,
        mut events: tokio::sync::broadcast::Receiver<crate::actors::status_recorder::JobEvent>,
    ) -> tokio::task::JoinHandle<()> {
        let bars = self.bars.clone();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(bar) = bars.get(&event.job_id) else {
                    continue;
                };
                match event.status {
                    JobStatus::Processing => {
                        bar.set_position(event.progress.into());
                        bar.set_message("ingesting");
                    }
                    JobStatus::Completed => {
                        bar.set_position(100);
                        bar.finish_with_message(format!("{} vectors", event.total_vectors));
                    }
                    JobStatus::Failed => bar.abandon_with_message("failed"),
                    JobStatus::Pending => {}
                }
            }
        })
    }

    pub(super) fn finish(&self, outcomes: &[anyhow::Result<RunOutcome>]) {
        for outcome in outcomes.iter().flatten() {
            for job in &outcome.jobs {
                if let Some(bar) = self.bars.get(&job.job_id) {
                    match &job.result {
                        Ok(stats) => {
                            bar.set_position(100);
                            bar.finish_with_message(format!("{} vectors", stats.vectors));
                        }
                        Err(_) => bar.abandon_with_message("failed"),
                    }
                }
            }
        }
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon_with_message("failed");
            }
        }
    }
}
