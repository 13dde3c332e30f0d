//! The RedisTrigger's side of remote control: `Revoke` (Celery's `revoke`, with `terminate`)
//! and `Inspect` (what this worker holds, for `inspect active`, `reserved`, `scheduled`, `stats`).

use std::sync::atomic::Ordering;

use actix::prelude::*;
use chrono::Utc;

use super::{RedisTrigger, TriggerCounters};
use crate::actors::supervisor::AbortPersona;
use crate::trigger::celery::{IngestCall, ResultMeta, TaskState};
use crate::trigger::task::{self, write_until_done, Accepted};

/// Revokes tasks (Celery's `revoke`): they are remembered on the broker for every worker; one
/// held for its eta or waiting for a slot here is answered REVOKED at once; with `terminate`, a
/// running one's run is aborted and it is answered REVOKED. Answered with the ids terminated.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Vec<String>")]
pub struct Revoke {
    pub task_ids: Vec<String>,
    pub terminate: bool,
}

/// What this worker holds, for remote control's `inspect`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Held")]
pub struct Inspect;

/// The tasks a worker holds, by where they are.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// Running (in a run slot), with when they started.
    pub active: Vec<(Accepted, chrono::DateTime<Utc>)>,
    /// Due, waiting for a slot.
    pub reserved: Vec<Accepted>,
    /// Held for their eta.
    pub scheduled: Vec<Accepted>,
    pub counters: TriggerCounters,
    /// Tasks answered, by name.
    pub total: std::collections::BTreeMap<String, u64>,
}

impl RedisTrigger {
    /// Answers a task that holds no slot REVOKED without running it.
    fn revoke_held(&mut self, task: Accepted, ctx: &mut Context<Self>) {
        self.counters.revoked += 1;
        self.counters.answered += 1;
        let task_ctx = self.task_ctx.clone();
        ctx.spawn(async move { task::revoke(task_ctx, task, "revoked").await }.into_actor(self));
    }
}

impl Handler<Revoke> for RedisTrigger {
    type Result = MessageResult<Revoke>;

    fn handle(&mut self, msg: Revoke, ctx: &mut Context<Self>) -> Self::Result {
        let ids: std::collections::HashSet<&String> = msg.task_ids.iter().collect();
        let named = |task: &Accepted| task.task_ids().iter().any(|id| ids.contains(id));
        // Remembered for every worker, and stored REVOKED at once, as Celery 5.7 does.
        let (revocations, results) = (self.ports.revocations.clone(), self.ports.results.clone());
        let (task_ids, keep) = (msg.task_ids.clone(), self.config.revokes_expire);
        ctx.spawn(
            async move {
                write_until_done("remembering revoked tasks", || {
                    revocations.revoke(&task_ids, keep)
                })
                .await;
                let state = TaskState::Revoked {
                    reason: "revoked".into(),
                };
                for id in &task_ids {
                    write_until_done("recording a task result", || async {
                        results
                            .store(id, &state, &ResultMeta::default())
                            .await
                            .map(|_| ())
                    })
                    .await;
                }
            }
            .into_actor(self),
        );
        let held: Vec<u64> = self
            .scheduled
            .iter()
            .filter(|(_, (task, _))| named(task))
            .map(|(key, _)| *key)
            .collect();
        for key in held {
            if let Some((task, timer)) = self.scheduled.remove(&key) {
                ctx.cancel_future(timer);
                self.revoke_held(task, ctx);
            }
        }
        let (revoked, ready): (Vec<Accepted>, Vec<Accepted>) =
            self.ready.drain(..).partition(|task| named(task));
        self.ready = ready.into();
        for task in revoked {
            self.revoke_held(task, ctx);
        }
        let mut terminated = Vec::new();
        if msg.terminate {
            for running in self.running.values() {
                if !named(&running.task) || running.task.terminated.swap(true, Ordering::SeqCst) {
                    continue;
                }
                terminated.push(running.task.msg.id.clone());
                let persona = match &running.task.call {
                    Ok(IngestCall::FullPersona { persona_id, .. })
                    | Ok(IngestCall::OneKind { persona_id, .. }) => persona_id.clone(),
                    Err(_) => continue,
                };
                let Ok(persona) = crate::PersonaId::parse(&persona) else {
                    continue;
                };
                tracing::warn!(task_id = %running.task.msg.id, %persona, "revoked: terminating its run");
                self.peers.abort_persona.do_send(AbortPersona {
                    persona,
                    reason: "revoked".into(),
                });
            }
        }
        MessageResult(terminated)
    }
}

impl Handler<Inspect> for RedisTrigger {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Held {
            active: self
                .running
                .values()
                .map(|r| (r.task.clone(), r.since))
                .collect(),
            reserved: self.ready.iter().cloned().collect(),
            scheduled: self.scheduled.values().map(|(t, _)| t.clone()).collect(),
            counters: self.counters(),
            total: self.total.clone(),
        })
    }
}
