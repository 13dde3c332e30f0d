//! A task's answers: the states it and its sub-tasks are given in the result backend, with
//! their events, and its `link`/`link_error` callbacks once it ends.

use std::sync::atomic::{AtomicBool, Ordering};
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
    pub(super) async fn dispatched(&mut self) {
        let Some((persona_id, job_ids)) = self.full_persona() else {
            return;
        };
        if let Some(events) = &self.ctx.events {
            for (kind, job_id) in job_ids {
                let name = self.ctx.names.of_kind(*kind);
                let fields = subtask_received_fields(name, persona_id, job_id, self.msg);
                events
                    .task("task-received", &subtask_id(&self.msg.id, *kind), fields)
                    .await;
            }
        }
        let children = self.children();
        self.answer_top(TaskState::Success(children)).await;
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

    pub(super) async fn sub_task_started(&mut self, kind: Kind) {
        if self.full_persona().is_none() {
            return;
        }
        let id = subtask_id(&self.msg.id, kind);
        self.sub_started.insert(id.clone(), Instant::now());
        let state = self.started_state();
        self.answer(&id, state).await;
    }

    /// A sub-task's state as its job ends: its vector count, or a failure (RETRY while the task
    /// will run it again, REVOKED when a revoke ended it).
    pub(super) async fn sub_task_ended(&mut self, job: &JobEnded) {
        if self.full_persona().is_none() {
            return;
        }
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
        self.answer(&subtask_id(&self.msg.id, kind), state).await;
    }

    /// Gives every sub-task not yet answered for good the same `state`.
    pub(super) async fn answer_unanswered(&mut self, state: &TaskState) {
        if let Some((_, job_ids)) = self.full_persona() {
            for kind in job_ids.keys() {
                if self.answered.insert(*kind) {
                    self.answer(&subtask_id(&self.msg.id, *kind), state.clone())
                        .await;
                }
            }
        }
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
                self.answer(&subtask_id(&self.msg.id, *kind), state).await;
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
        self.answer_top(state).await;
    }

    /// The task's own final state (once), its metric, and its `link` or `link_error` callbacks.
    pub(super) async fn answer_top(&mut self, state: TaskState) {
        if self.top_answered {
            return;
        }
        self.top_answered = true;
        let ended = state.status();
        crate::metrics::METRICS
            .tasks
            .with_label_values(&[ended])
            .inc();
        let callbacks = match &state {
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
        let msg_id = self.msg.id.clone();
        if !self.answer(&msg_id, state).await {
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
        let top = task_id == self.msg.id;
        let meta = if top {
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
        };
        let stored = if top && self.msg.ignore_result {
            true
        } else {
            let results = &self.ctx.results;
            let stored = AtomicBool::new(false);
            write_until_done("recording a task result", || async {
                let kept = results.store(task_id, &state, &meta).await?;
                stored.store(kept, Ordering::SeqCst);
                Ok(())
            })
            .await;
            stored.into_inner()
        };
        // A state that did not change (a SUCCESS stays) makes no event.
        if !stored {
            return false;
        }
        let Some(events) = &self.ctx.events else {
            return true;
        };
        let runtime = if top {
            self.started.elapsed()
        } else {
            self.sub_started
                .get(task_id)
                .map_or(Duration::ZERO, Instant::elapsed)
        };
        let (event_type, fields) = event_of(&state, runtime);
        events.task(event_type, task_id, fields).await;
        true
    }

    pub(super) fn started_state(&self) -> TaskState {
        TaskState::Started {
            pid: std::process::id(),
            hostname: self.ctx.hostname.clone(),
        }
    }
}
