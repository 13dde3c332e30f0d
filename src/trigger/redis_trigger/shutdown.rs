//! The RedisTrigger's shutdown: intake stops, running tasks get the grace to finish, then the
//! runs still going are aborted (their jobs failed with the reason) and every message still in
//! flight goes back to its queue before the worker's lease is retired.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;

use super::{RedisTrigger, TriggerCounters, FETCH_BLOCK};
use crate::actors::orchestrator::ABORT_GRACE;
use crate::actors::supervisor::AbortRuns;
use crate::trigger::task::write_until_done;

/// Stop intake, drain within the grace, requeue the rest; answered once done.
#[derive(Message)]
#[rtype(result = "TriggerCounters")]
pub struct Shutdown;

impl Handler<Shutdown> for RedisTrigger {
    type Result = ResponseActFuture<Self, TriggerCounters>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.counters.stopping = true;
        self.stop.send_replace(true);
        // Held and ready messages stay in flight: requeued below.
        for (_, (_, timer)) in self.scheduled.drain() {
            ctx.cancel_future(timer);
        }
        self.ready.clear();
        let grace = self.config.shutdown_grace;
        tracing::info!("stopping: no new messages; running work has {grace:?} to finish");
        let running = self.running_count.subscribe();
        let abort_runs = self.peers.abort_runs.clone();
        let abandoning = self.abandoning.clone();
        let drain = async move {
            let mut idle = running.clone();
            if tokio::time::timeout(grace, idle.wait_for(|n| *n == 0))
                .await
                .is_ok()
            {
                return;
            }
            // Their runs are aborted first, so that no job stays processing: the jobs fail with
            // the reason, and the next worker to take the message runs them again.
            abandoning.store(true, Ordering::SeqCst);
            tracing::warn!("shutdown grace over: aborting the runs still going");
            let reason =
                "the worker shut down before the run ended; its message went back to the queue";
            let _ = abort_runs
                .send(AbortRuns {
                    reason: reason.into(),
                })
                .await;
            let mut idle = running;
            let _ = tokio::time::timeout(
                ABORT_GRACE + Duration::from_secs(5),
                idle.wait_for(|n| *n == 0),
            )
            .await;
        };
        Box::pin(drain.into_actor(self).then(|(), act, ctx| {
            for (_, running) in act.running.drain() {
                ctx.cancel_future(running.handle);
            }
            act.running_changed();
            let queue = act.ports.queue.clone();
            let worker = act.config.worker_id.clone();
            let events = act.ports.events.clone();
            let fetching = act.fetching;
            async move {
                if fetching {
                    // A fetch under way may still move a message in flight: let it land first.
                    tokio::time::sleep(FETCH_BLOCK + Duration::from_millis(500)).await;
                }
                if let Some(events) = events {
                    events.worker("worker-offline").await;
                }
                let requeued = std::sync::atomic::AtomicUsize::new(0);
                write_until_done("requeueing the messages in flight", || async {
                    let moved = queue.requeue(&worker).await?;
                    requeued.fetch_add(moved, Ordering::Relaxed);
                    Ok(())
                })
                .await;
                let requeued = requeued.into_inner();
                // Nothing of ours is in flight: the lease goes now, and with it any persona
                // lock a task aborted above still held, rather than when it would have lapsed.
                write_until_done("retiring the worker", || queue.retire(&worker)).await;
                requeued
            }
            .into_actor(act)
            .map(|requeued, act, ctx| {
                act.counters.requeued_at_exit = requeued;
                ctx.stop();
                act.counters()
            })
        }))
    }
}
