//! A task's answers: the states it and its sub-tasks are given in the result backend, with
//! their events, and its `link`/`link_error` callbacks once it ends.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::states::{event_of, retry_state, subtask_received_fields};
use super::{exception, subtask_id, write_until_done, Task};
use crate::actors::orchestrator::RunOutcome;
use crate::actors::supervisor::JobEnded;
use crate::trigger::celery::{callback_message, IngestCall, ResultMeta, TaskState};
use crate::Kind;

impl Task<'_> {
    /// The seed's `ingest_full_persona` answered: its sub-task ids, the sub-tasks received.
    /// Answers the task's SUCCESS, for [`Task::answer_batch`].
    pub(super) async fn dispatched(&mut self) -> Option<(String, TaskState)> {
        let (persona_id, job_ids) = self.full_persona()?;
        if let Some(events) = &self.ctx.events {
            for (kind, job_id) in job_ids {
                let name = self.ctx.names.of_kind(*kind);
                let fields = subtask_received_fields(name, persona_id, job_id, self.msg);
                events
                    .task("task-received", &subtask_id(&self.msg.id, *kind), fields)
                    .await;
            }
        }
        Some((self.msg.id.clone(), TaskState::Success(self.children())))
    }

    /// `{"profile": id, "works": id, "quotes": id}`.
    pub(super) fn children(&self) -> Value {
        let Some((_, job_ids)) = self.full_persona() else {
            return Value::Null;
        };
        Value::Object(
            job_ids
                .keys()
                .map(|kind| (kind.to_string(), subtask_id(&self.msg.id, *kind).into()))
                .collect(),
        )
    }

    /// A sub-task's STARTED, for [`Task::answer_batch`].
    pub(super) fn sub_task_started(&mut self, kind: Kind) -> Option<(String, TaskState)> {
        self.full_persona()?;
        let id = subtask_id(&self.msg.id, kind);
        self.sub_started.insert(id.clone(), Instant::now());
        Some((id, self.started_state()))
    }

    /// A sub-task's state as its job ends: its vector count, or a failure (RETRY while the task
    /// will run it again, REVOKED when a revoke ended it); for [`Task::answer_batch`].
    pub(super) fn sub_task_ended(&mut self, job: &JobEnded) -> Option<(String, TaskState)> {
        self.full_persona()?;
        let kind = job.outcome.kind;
        let state = match &job.outcome.result {
            Ok(stats) => TaskState::Success(json!(stats.vectors)),
            Err(_) if self.terminated.load(Ordering::SeqCst) => TaskState::Revoked {
                reason: "terminated".into(),
            },
            Err(e) if job.will_retry => retry_state(e.to_string()),
            Err(e) => exception("RuntimeError", e.to_string()),
        };
        if state.is_ready() {
            self.answered.insert(kind);
        }
        Some((subtask_id(&self.msg.id, kind), state))
    }

    /// Gives every sub-task not yet answered for good the same `state`, in one round trip.
    pub(super) async fn answer_unanswered(&mut self, state: &TaskState) {
        let Some((_, job_ids)) = self.full_persona() else {
            return;
        };
        let answers = job_ids
            .keys()
            .filter(|kind| self.answered.insert(**kind))
            .map(|kind| (subtask_id(&self.msg.id, *kind), state.clone()))
            .collect();
        self.answer_all(answers).await;
    }

    /// The task's final answer, and its sub-tasks' where their jobs did not end for good.
    pub(super) async fn finish(&mut self, outcome: &RunOutcome) {
        if self.terminated.load(Ordering::SeqCst) {
            let state = TaskState::Revoked {
                reason: "terminated".into(),
            };
            self.answer_unanswered(&state).await;
            self.answer_top(state).await;
            return;
        }
        let run_error = || outcome.error.clone().unwrap_or_else(|| "not run".into());
        let mut answers = Vec::new();
        if let Some((_, job_ids)) = self.full_persona() {
            for kind in job_ids.keys() {
                if !self.answered.insert(*kind) {
                    continue;
                }
                let state = match outcome.jobs.iter().find(|j| j.kind == *kind) {
                    Some(job) => match &job.result {
                        Ok(stats) => TaskState::Success(json!(stats.vectors)),
                        Err(e) => exception("RuntimeError", e.to_string()),
                    },
                    None => exception("RuntimeError", run_error()),
                };
                answers.push((subtask_id(&self.msg.id, *kind), state));
            }
        }
        let state = match (self.call, outcome.jobs.first()) {
            (Ok(IngestCall::FullPersona { .. }), _) if outcome.succeeded() => {
                TaskState::Success(self.children())
            }
            (Ok(IngestCall::OneKind { .. }), Some(job)) => match &job.result {
                Ok(stats) if outcome.succeeded() => TaskState::Success(json!(stats.vectors)),
                Err(e) => exception("RuntimeError", e.to_string()),
                Ok(_) => exception("RuntimeError", run_error()),
            },
            _ => exception("RuntimeError", run_error()),
        };
        answers.push((self.msg.id.clone(), state));
        self.answer_batch(answers).await;
    }

    /// The task's own final state (once), its metric, and its `link` or `link_error` callbacks.
    pub(super) async fn answer_top(&mut self, state: TaskState) {
        self.answer_batch(vec![(self.msg.id.clone(), state)]).await;
    }

    /// Stores states of the task and of its sub-tasks in order, in one round trip (see
    /// [`Task::answer_all`]). The task's own final state is given once, with its metric, and
    /// its `link` or `link_error` callbacks are sent once it is stored.
    pub(super) async fn answer_batch(&mut self, mut answers: Vec<(String, TaskState)>) {
        let top_final = |(id, state): &(String, TaskState)| *id == self.msg.id && state.is_ready();
        if self.top_answered {
            answers.retain(|answer| !top_final(answer));
        }
        let Some(top) = answers.iter().position(top_final) else {
            self.answer_all(answers).await;
            return;
        };
        self.top_answered = true;
        let state = &answers[top].1;
        let ended = state.status();
        crate::metrics::METRICS
            .tasks
            .with_label_values(&[ended])
            .inc();
        let callbacks: Vec<_> = match state {
            TaskState::Success(value) => self
                .msg
                .callbacks
                .iter()
                .map(|s| (s, value.clone()))
                .collect(),
            TaskState::Failure { .. } | TaskState::Revoked { .. } => self
                .msg
                .errbacks
                .iter()
                .map(|s| (s, Value::from(self.msg.id.clone())))
                .collect(),
            _ => Vec::new(),
        };
        if !self.answer_all(answers).await[top] {
            // Answered before (a redelivered task): so were its callbacks.
            return;
        }
        for (signature, first) in callbacks {
            let origin = &self.ctx.hostname;
            let Some((queue, message)) =
                callback_message(signature, first, self.msg, &self.ctx.default_queue, origin)
            else {
                continue;
            };
            let sent = &self.ctx.queue;
            write_until_done("sending a callback", || {
                sent.publish(&queue, message.as_bytes())
            })
            .await;
        }
    }

    /// Stores a state of the task or of one of its sub-tasks, and sends its event; false when a
    /// SUCCESS was there already and stays.
    pub(super) async fn answer(&self, task_id: &str, state: TaskState) -> bool {
        self.answer_all(vec![(task_id.to_owned(), state)]).await[0]
    }

    /// Stores states of the task and of its sub-tasks in order, in one round trip, then sends
    /// their events; answers, in order, whether each was stored (false where a SUCCESS was
    /// there already and stays). The task's own state is not stored when its message says
    /// `ignore_result`.
    pub(super) async fn answer_all(&self, answers: Vec<(String, TaskState)>) -> Vec<bool> {
        let ignored = |task_id: &str| task_id == self.msg.id && self.msg.ignore_result;
        let to_store: Vec<(String, TaskState, ResultMeta)> = answers
            .iter()
            .filter(|(task_id, _)| !ignored(task_id))
            .map(|(task_id, state)| (task_id.clone(), state.clone(), self.meta(task_id, state)))
            .collect();
        let mut stored = Vec::new();
        if !to_store.is_empty() {
            let results = &self.ctx.results;
            let kept = std::sync::Mutex::new(Vec::new());
            write_until_done("recording a task result", || async {
                let written = results.store_all(&to_store).await?;
                *kept.lock().expect("not poisoned") = written;
                Ok(())
            })
            .await;
            stored = kept.into_inner().expect("not poisoned");
        }
        let mut stored = stored.into_iter();
        let stored: Vec<bool> = answers
            .iter()
            .map(|(task_id, _)| ignored(task_id) || stored.next().unwrap_or(false))
            .collect();
        if let Some(events) = &self.ctx.events {
            // A state that did not change (a SUCCESS stays) makes no event.
            for ((task_id, state), _) in answers.iter().zip(&stored).filter(|(_, kept)| **kept) {
                let runtime = if *task_id == self.msg.id {
                    self.started.elapsed()
                } else {
                    self.sub_started
                        .get(task_id)
                        .map_or(Duration::ZERO, Instant::elapsed)
                };
                let (event_type, fields) = event_of(state, runtime);
                events.task(event_type, task_id, fields).await;
            }
        }
        stored
    }

    /// The result metadata Celery writes with a state of the task or of one of its sub-tasks.
    fn meta(&self, task_id: &str, state: &TaskState) -> ResultMeta {
        if task_id == self.msg.id {
            ResultMeta {
                parent_id: self.msg.parent_id.clone(),
                children: state.is_ready().then(|| match self.full_persona() {
                    Some((_, job_ids)) => job_ids
                        .keys()
                        .map(|kind| subtask_id(&self.msg.id, *kind))
                        .collect(),
                    None => Vec::new(),
                }),
            }
        } else {
            ResultMeta {
                parent_id: Some(self.msg.id.clone()),
                children: state.is_ready().then(Vec::new),
            }
        }
    }

    pub(super) fn started_state(&self) -> TaskState {
        TaskState::Started {
            pid: std::process::id(),
            hostname: self.ctx.hostname.clone(),
        }
    }
}
