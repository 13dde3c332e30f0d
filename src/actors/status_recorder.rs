//! StatusRecorder: the only writer to the jobs database. Updates are applied in arrival order,
//! one batch at a time (so SQLite never sees two writers): what waits when a batch starts goes
//! in one transaction (see `apply`). A run's start and its jobs' starts are answered before
//! they are written where it is sure they will apply (see `open_runs`), and are written with
//! the next update somebody waits for (see `StatusRecorder::drain`). Progress updates are
//! coalesced and written with the batch after the flush timer rings, and every applied change
//! is published as a [`JobEvent`] for live views.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use self::apply::{apply_batch, read_start, Applied};
use self::open_runs::{Doomed, OpenRuns, Reply, Start};
pub use self::update::{JobEvent, Recorded, StatusUpdate};
use super::Observe;
use crate::db::JobsWriter;
use crate::jobs::TransitionError;
use crate::{JobStatus, PersonaId};

/// How often coalesced progress reaches the database.
pub const PROGRESS_FLUSH_EVERY: Duration = Duration::from_millis(250);

/// A status update to apply; answered once it is in the database.
#[derive(Clone, Debug, PartialEq, Message, Serialize)]
#[rtype(result = "Result<Recorded, TransitionError>")]
pub struct RecordStatus(pub StatusUpdate);

/// Writes the coalesced progress now; answered once written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushProgress;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecorderCounters {
    /// Transactions that applied several writes together (see `apply`).
    pub batches: u64,
    pub applied: u64,
    pub refused: u64,
    pub failed_writes: u64,
    pub progress_received: u64,
    pub progress_written: u64,
}

pub struct StatusRecorder {
    db: JobsWriter,
    events: broadcast::Sender<JobEvent>,
    /// Updates waiting for the next batch, in arrival order, each with whom to answer.
    queue: VecDeque<(StatusUpdate, Reply)>,
    /// A batch is being applied: the next starts when it ends, so writes stay in order.
    applying: bool,
    /// A batch is due and waits for what is ready on this thread to run first.
    gathering: bool,
    /// The personas and jobs the batch being applied writes.
    in_flight: (HashSet<PersonaId>, HashSet<Uuid>),
    open: OpenRuns,
    doomed: Doomed,
    pending_progress: BTreeMap<Uuid, u8>,
    /// Progress is to go with the next batch; these wait for it to be written.
    flush_wanted: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    flush_every: Duration,
    /// How long an update waits for an unavailable database before it fails.
    ride_out: Duration,
    /// Set when a flush found the database unavailable.
    flush_paused_until: Option<Instant>,
    /// Updates nobody waits for (answered early) wait for one somebody does, or for the next
    /// progress flush, to be written with it (see [`StatusRecorder::drain`]); false in tests
    /// that make their batches themselves.
    hold_early: bool,
    counters: RecorderCounters,
}

/// How long progress flushes pause after one found the database unavailable.
const FLUSH_PAUSE: Duration = Duration::from_secs(5);

/// The most updates applied in one transaction: enough for every run of a busy daemon at once,
/// few enough that a transaction stays short.
const MAX_BATCH: usize = 256;

/// How long updates wait for a database that went away: long enough for a restart or a
/// failover, short enough that a database gone for good fails the jobs.
pub const DATABASE_RIDE_OUT: Duration = Duration::from_secs(60);

impl StatusRecorder {
    /// Writes to `db`, in place when it is a SQLite file (see [`JobsWriter::for_db`]).
    pub fn new(db: DatabaseConnection, events: broadcast::Sender<JobEvent>) -> Self {
        Self {
            db: JobsWriter::for_db(&db),
            events,
            queue: VecDeque::new(),
            applying: false,
            gathering: false,
            in_flight: Default::default(),
            open: OpenRuns::default(),
            doomed: Doomed::default(),
            pending_progress: BTreeMap::new(),
            flush_wanted: false,
            flush_waiters: Vec::new(),
            flush_every: PROGRESS_FLUSH_EVERY,
            ride_out: DATABASE_RIDE_OUT,
            flush_paused_until: None,
            hold_early: true,
            counters: RecorderCounters::default(),
        }
    }

    /// Every update written as it comes, for tests that make their batches themselves.
    #[cfg(test)]
    fn writing_at_once(mut self) -> Self {
        self.hold_early = false;
        self
    }

    /// Progress flushed every `every` (tests).
    #[cfg(test)]
    fn flushing_every(mut self, every: Duration) -> Self {
        self.flush_every = every;
        self
    }

    fn publish(&self, event: JobEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// Starts applying what waits, unless a batch is being applied (its end calls this again)
    /// or only updates answered early wait: those wait for one that somebody waits for, or for
    /// the next progress flush ([`PROGRESS_FLUSH_EVERY`]), and go with it. Written at once, they
    /// made batches nobody waited for, which a job's end then queued behind: holding them took
    /// `trigger_overhead` from 605 to 672 messages a second (two sittings, eight runs each).
    ///
    /// A batch that is due starts once what is ready on this thread has run (one yield), so
    /// that the updates those send go with it: written in place, a batch takes tens of
    /// microseconds, and started at once it held one update, a commit (and its pages written to
    /// the WAL) an update.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.applying || self.gathering {
            return;
        }
        let due = !self.hold_early
            || self.flush_wanted
            || self.queue.iter().any(|(_, reply)| reply.waits());
        if !due {
            return;
        }
        self.gathering = true;
        ctx.spawn(
            tokio::task::yield_now()
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.gathering = false;
                    act.apply_waiting(ctx);
                }),
        );
    }

    /// Applies what waits as one batch (see [`StatusRecorder::drain`]).
    fn apply_waiting(&mut self, ctx: &mut Context<Self>) {
        // Progress can wait; while the database is away, flushes must not keep the job updates
        // waiting behind them.
        let paused = self
            .flush_paused_until
            .is_some_and(|until| Instant::now() < until);
        let progress: Vec<(Uuid, u8)> = if self.flush_wanted && !paused {
            std::mem::take(&mut self.pending_progress)
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        let mut flushed = Vec::new();
        if self.flush_wanted {
            self.flush_wanted = false;
            flushed = std::mem::take(&mut self.flush_waiters);
        }
        let take = self.queue.len().min(MAX_BATCH);
        let (updates, replies): (Vec<_>, Vec<_>) = self.queue.drain(..take).unzip();
        if updates.is_empty() && progress.is_empty() {
            for waiter in flushed {
                let _ = waiter.send(());
            }
            return;
        }
        self.applying = true;
        self.in_flight = Default::default();
        for update in &updates {
            let (personas, jobs) = open_runs::touched(update);
            self.in_flight.0.extend(personas.into_iter().cloned());
            self.in_flight.1.extend(jobs);
        }
        let db = self.db.clone();
        let ride_out = self.ride_out;
        let logged = updates.clone();
        let answered = replies.iter().map(Reply::answered_for).collect();
        let doomed = std::mem::take(&mut self.doomed);
        let batch =
            async move { apply_batch(&db, updates, answered, progress, ride_out, doomed).await };
        ctx.spawn(
            batch
                .into_actor(self)
                .map(move |(results, progress, doomed), act, ctx| {
                    act.applying = false;
                    act.in_flight = Default::default();
                    act.doomed = doomed;
                    for ((update, reply), result) in logged.into_iter().zip(replies).zip(results) {
                        act.settle(&update, &result);
                        reply.send(result);
                    }
                    act.counters.batches += u64::from(progress.together);
                    act.counters.progress_written += progress.written;
                    if !progress.unwritten.is_empty() {
                        act.flush_paused_until = Some(Instant::now() + FLUSH_PAUSE);
                    }
                    for (job_id, value) in progress.unwritten {
                        // Unless a newer value or the job's end came meanwhile.
                        act.pending_progress.entry(job_id).or_insert(value);
                    }
                    for waiter in flushed {
                        let _ = waiter.send(());
                    }
                    act.drain(ctx);
                }),
        );
    }

    /// Counts an applied update and publishes its event.
    fn settle(&mut self, update: &StatusUpdate, result: &Applied) {
        match result {
            Ok((event, _)) => {
                self.counters.applied += 1;
                if let Some(event) = event.clone() {
                    self.publish(event);
                }
            }
            Err(TransitionError::Refused(why)) => {
                self.counters.refused += 1;
                tracing::warn!("status update {update:?} refused: {why}");
            }
            Err(e) => {
                self.counters.failed_writes += 1;
                tracing::error!("status update {update:?} not written: {e}");
            }
        }
    }
}

impl Actor for StatusRecorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.flush_every, |act, ctx| {
            act.flush_wanted = true;
            act.drain(ctx);
        });
    }
}

impl Handler<FlushProgress> for StatusRecorder {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushProgress, ctx: &mut Context<Self>) -> Self::Result {
        let (done, written) = oneshot::channel();
        self.flush_waiters.push(done);
        self.flush_wanted = true;
        self.drain(ctx);
        Box::pin(async move {
            let _ = written.await;
        })
    }
}

impl Handler<RecordStatus> for StatusRecorder {
    type Result = ResponseFuture<Result<Recorded, TransitionError>>;

    fn handle(
        &mut self,
        RecordStatus(update): RecordStatus,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if let StatusUpdate::JobProgress { job_id, progress } = update {
            self.counters.progress_received += 1;
            let progress = progress.min(99);
            let slot = self.pending_progress.entry(job_id).or_insert(progress);
            *slot = (*slot).max(progress);
            self.publish(JobEvent {
                job_id,
                status: JobStatus::Processing,
                progress,
                total_vectors: 0,
                message: None,
            });
            return Box::pin(async { Ok(Recorded::default()) });
        }
        // A job's final state supersedes its unwritten progress.
        if let StatusUpdate::JobCompleted { job_id, .. } | StatusUpdate::JobFailed { job_id, .. } =
            &update
        {
            self.pending_progress.remove(job_id);
        }
        let (answer, applied) = oneshot::channel();
        match &update {
            StatusUpdate::BeginRun { persona, jobs } if self.independent(&update) => {
                // Read now, apart from the queue, and answered from that read; written in its
                // turn. Whichever comes first, the read or the write, answers.
                let start = Arc::new(Mutex::new(Start {
                    answer: Some(answer),
                    read_ended: false,
                }));
                let (persona, jobs) = (persona.clone(), jobs.clone());
                self.queue.push_back((update, Reply::First(start.clone())));
                let db = self.db.clone();
                let read = async move {
                    let read = read_start(&db, &persona, &jobs).await;
                    (persona, read)
                };
                ctx.spawn(read.into_actor(self).map(move |(persona, read), act, ctx| {
                    let mut start = start.lock().unwrap();
                    start.read_ended = true;
                    // An error is for the write to find and answer: it is due now.
                    match read {
                        Ok((recorded, statuses)) => {
                            if let Some(answer) = start.answer.take() {
                                act.open.open(&persona, statuses);
                                let _ = answer.send(Ok((None, recorded)));
                            }
                        }
                        Err(_) => {
                            drop(start);
                            act.drain(ctx);
                        }
                    }
                }));
            }
            StatusUpdate::FinishRun { persona, .. } => {
                self.open.close(persona);
                self.queue.push_back((update, Reply::Waiting(answer)));
            }
            _ => match self.open.admit(&update) {
                Some(run) => {
                    let _ = answer.send(Ok((None, Recorded::default())));
                    self.queue.push_back((update, Reply::Answered(run)));
                }
                None => self.queue.push_back((update, Reply::Waiting(answer))),
            },
        }
        self.drain(ctx);
        Box::pin(async move {
            match applied.await {
                Ok(result) => result.map(|(_, recorded)| recorded),
                Err(_) => Err(TransitionError::Db(
                    "the status recorder stopped before applying the update".into(),
                )),
            }
        })
    }
}

impl StatusRecorder {
    /// Whether a run's start reads nothing that an update waiting or being written changes.
    fn independent(&self, start: &StatusUpdate) -> bool {
        let (personas, jobs) = open_runs::touched(start);
        let waiting = self
            .queue
            .iter()
            .map(|(update, _)| open_runs::touched(update));
        let clash = |(p, j): (Vec<&PersonaId>, Vec<Uuid>)| {
            p.iter().any(|p| personas.contains(p)) || j.iter().any(|j| jobs.contains(j))
        };
        !personas.iter().any(|p| self.in_flight.0.contains(*p))
            && !jobs.iter().any(|j| self.in_flight.1.contains(j))
            && !waiting.into_iter().any(clash)
    }
}

impl Handler<Observe<RecorderCounters>> for StatusRecorder {
    type Result = MessageResult<Observe<RecorderCounters>>;

    fn handle(&mut self, _: Observe<RecorderCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

mod apply;
#[cfg(test)]
mod early_tests;
mod open_runs;
#[cfg(test)]
mod tests;
mod update;
