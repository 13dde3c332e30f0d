//! `MemoryBroker`: the trigger's Redis side in memory, for testing the RedisTrigger alone with
//! virtual time. It is the queue with its in-flight lists and dead letters, the result backend
//! (keeping every state a task was given, in order), the persona locks and the event sink, and
//! it lets a test push any bytes, read what landed where, and make Redis "go away".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;

use crate::trigger::celery::{ResultMeta, TaskState};
use crate::trigger::ports::{
    BrokerError, ControlReplies, Delivery, Events, Locks, Queue, ResultStore, Revocations,
};

#[derive(Default)]
struct State {
    /// Each queue as Redis keeps it: new messages at the front, the oldest taken from the back.
    queues: BTreeMap<String, VecDeque<Vec<u8>>>,
    /// Each worker's in-flight list: (queue, message), the newest first.
    in_flight: HashMap<String, Vec<(String, Vec<u8>)>>,
    /// (reason, queue, message), the newest last.
    dead_letters: Vec<(String, String, Vec<u8>)>,
    results: Vec<(String, TaskState)>,
    /// The task ids of each write to the result backend (one round trip each), in order.
    result_writes: Vec<Vec<String>>,
    locks: HashMap<String, usize>,
    events: Vec<(String, Option<String>)>,
    leases: HashMap<String, Duration>,
    revoked: Vec<String>,
    task_events_off: bool,
    /// (exchange/routing key, message) of every remote-control reply.
    replies: Vec<(String, Vec<u8>)>,
    retired: Vec<String>,
    down: bool,
}

/// See the module.
pub struct MemoryBroker {
    state: Mutex<State>,
    pushed: Notify,
    /// The queues a fetch serves, in order.
    served: Vec<String>,
}

impl MemoryBroker {
    /// A broker whose workers serve `queues`, in that order.
    pub fn new(queues: &[&str]) -> Self {
        Self {
            state: Mutex::default(),
            pushed: Notify::new(),
            served: queues.iter().map(|q| q.to_string()).collect(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `LPUSH queue raw`, as a producer does.
    pub fn push(&self, queue: &str, raw: impl Into<Vec<u8>>) {
        self.state()
            .queues
            .entry(queue.to_owned())
            .or_default()
            .push_front(raw.into());
        self.pushed.notify_waiters();
    }

    /// The messages waiting in `queue`, oldest first.
    pub fn waiting(&self, queue: &str) -> Vec<Vec<u8>> {
        self.state()
            .queues
            .get(queue)
            .map(|q| q.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The messages in `worker`'s in-flight list.
    pub fn in_flight(&self, worker: &str) -> Vec<Vec<u8>> {
        self.state()
            .in_flight
            .get(worker)
            .map(|l| l.iter().map(|(_, raw)| raw.clone()).collect())
            .unwrap_or_default()
    }

    /// (reason, message) of every dead letter, oldest first.
    pub fn dead_letters(&self) -> Vec<(String, Vec<u8>)> {
        self.state()
            .dead_letters
            .iter()
            .map(|(reason, _, raw)| (reason.clone(), raw.clone()))
            .collect()
    }

    /// Every state task `task_id` was given, in order.
    pub fn results_of(&self, task_id: &str) -> Vec<TaskState> {
        self.state()
            .results
            .iter()
            .filter(|(id, _)| id == task_id)
            .map(|(_, state)| state.clone())
            .collect()
    }

    /// The task ids each write to the result backend stored (a round trip to Redis each).
    pub fn result_writes(&self) -> Vec<Vec<String>> {
        self.state().result_writes.clone()
    }

    /// Every event published: (type, task id).
    pub fn events(&self) -> Vec<(String, Option<String>)> {
        self.state().events.clone()
    }

    /// Every remote-control reply: (exchange/routing key, message).
    pub fn replies(&self) -> Vec<(String, Vec<u8>)> {
        self.state().replies.clone()
    }

    /// Persona locks held now.
    pub fn locks_held(&self) -> usize {
        self.state().locks.values().filter(|n| **n > 0).count()
    }

    /// Workers that retired.
    pub fn retired(&self) -> Vec<String> {
        self.state().retired.clone()
    }

    /// While down, every call fails as an unreachable Redis would.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    fn up(&self) -> Result<MutexGuard<'_, State>, BrokerError> {
        let state = self.state();
        if state.down {
            return Err(BrokerError::Unavailable("the memory broker is down".into()));
        }
        Ok(state)
    }

    fn take(&self, worker: &str) -> Result<Option<Delivery>, BrokerError> {
        let mut state = self.up()?;
        for queue in &self.served {
            if let Some(raw) = state.queues.get_mut(queue).and_then(VecDeque::pop_back) {
                state
                    .in_flight
                    .entry(worker.to_owned())
                    .or_default()
                    .insert(0, (queue.clone(), raw.clone()));
                return Ok(Some(Delivery {
                    queue: queue.clone(),
                    raw,
                }));
            }
        }
        Ok(None)
    }

    /// Removes `raw` from `worker`'s in-flight list; answers whether it was there.
    fn remove(state: &mut State, worker: &str, raw: &[u8]) -> bool {
        let Some(list) = state.in_flight.get_mut(worker) else {
            return false;
        };
        match list.iter().position(|(_, r)| r == raw) {
            Some(at) => {
                list.remove(at);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl Queue for MemoryBroker {
    async fn fetch(&self, worker: &str, block: Duration) -> Result<Option<Delivery>, BrokerError> {
        let pushed = self.pushed.notified();
        tokio::pin!(pushed);
        pushed.as_mut().enable();
        if let Some(delivery) = self.take(worker)? {
            return Ok(Some(delivery));
        }
        let _ = tokio::time::timeout(block, pushed).await;
        self.take(worker)
    }

    async fn ack(&self, worker: &str, delivery: &Delivery) -> Result<(), BrokerError> {
        let mut state = self.up()?;
        Self::remove(&mut state, worker, &delivery.raw);
        Ok(())
    }

    async fn dead_letter(
        &self,
        worker: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut state = self.up()?;
        if Self::remove(&mut state, worker, &delivery.raw) {
            state.dead_letters.push((
                reason.to_owned(),
                delivery.queue.clone(),
                delivery.raw.clone(),
            ));
        }
        Ok(())
    }

    async fn republish(
        &self,
        worker: &str,
        delivery: &Delivery,
        again: &[u8],
    ) -> Result<(), BrokerError> {
        let mut state = self.up()?;
        if Self::remove(&mut state, worker, &delivery.raw) {
            state
                .queues
                .entry(delivery.queue.clone())
                .or_default()
                .push_front(again.to_vec());
        }
        drop(state);
        self.pushed.notify_waiters();
        Ok(())
    }

    async fn publish(&self, list: &str, raw: &[u8]) -> Result<(), BrokerError> {
        self.up()?
            .queues
            .entry(list.to_owned())
            .or_default()
            .push_front(raw.to_vec());
        self.pushed.notify_waiters();
        Ok(())
    }

    async fn requeue(&self, worker: &str) -> Result<usize, BrokerError> {
        let mut state = self.up()?;
        let taken = state.in_flight.remove(worker).unwrap_or_default();
        let moved = taken.len();
        // The newest first: each goes to the very end of the line, the oldest last.
        for (queue, raw) in taken {
            state.queues.entry(queue).or_default().push_back(raw);
        }
        drop(state);
        self.pushed.notify_waiters();
        Ok(moved)
    }

    async fn requeue_orphans(&self) -> Result<usize, BrokerError> {
        // Leases never lapse here: a test kills no memory worker.
        self.up().map(|_| 0)
    }

    async fn renew_lease(&self, worker: &str, lease: Duration) -> Result<(), BrokerError> {
        self.up()?.leases.insert(worker.to_owned(), lease);
        Ok(())
    }

    async fn retire(&self, worker: &str) -> Result<(), BrokerError> {
        let mut state = self.up()?;
        state.leases.remove(worker);
        state.retired.push(worker.to_owned());
        // As in Redis, a lock is good only while its holder's lease lives (one worker here).
        state.locks.clear();
        Ok(())
    }
}

#[async_trait]
impl ResultStore for MemoryBroker {
    async fn store(
        &self,
        task_id: &str,
        state: &TaskState,
        meta: &ResultMeta,
    ) -> Result<bool, BrokerError> {
        let one = [(task_id.to_owned(), state.clone(), meta.clone())];
        Ok(self.store_all(&one).await?[0])
    }

    async fn store_all(
        &self,
        states: &[(String, TaskState, ResultMeta)],
    ) -> Result<Vec<bool>, BrokerError> {
        let mut all = self.up()?;
        all.result_writes
            .push(states.iter().map(|(id, _, _)| id.clone()).collect());
        let mut stored = Vec::with_capacity(states.len());
        for (task_id, state, _) in states {
            let succeeded = all
                .results
                .iter()
                .any(|(id, s)| id == task_id && matches!(s, TaskState::Success(_)));
            if !succeeded {
                all.results.push((task_id.to_owned(), state.clone()));
            }
            stored.push(!succeeded);
        }
        Ok(stored)
    }
}

#[async_trait]
impl Locks for MemoryBroker {
    async fn try_acquire(&self, persona: &str) -> Result<bool, BrokerError> {
        *self.up()?.locks.entry(persona.to_owned()).or_default() += 1;
        Ok(true)
    }

    async fn release(&self, persona: &str) -> Result<(), BrokerError> {
        let mut state = self.up()?;
        let held = state.locks.entry(persona.to_owned()).or_default();
        *held = held.saturating_sub(1);
        Ok(())
    }
}

#[async_trait]
impl Events for MemoryBroker {
    async fn worker(&self, event_type: &str) {
        self.state().events.push((event_type.to_owned(), None));
    }

    async fn task(&self, event_type: &str, uuid: &str, _fields: Value) {
        if self.state().task_events_off {
            return;
        }
        self.state()
            .events
            .push((event_type.to_owned(), Some(uuid.to_owned())));
    }

    fn task_taken(&self) {}

    fn task_done(&self) {}

    fn set_task_events(&self, on: bool) -> bool {
        let mut state = self.state();
        let was = !state.task_events_off;
        state.task_events_off = !on;
        was
    }
}

#[async_trait]
impl ControlReplies for MemoryBroker {
    async fn reply(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &[u8],
    ) -> Result<(), BrokerError> {
        self.up()?
            .replies
            .push((format!("{exchange}/{routing_key}"), message.to_vec()));
        Ok(())
    }
}

#[async_trait]
impl Revocations for MemoryBroker {
    async fn revoke(&self, task_ids: &[String], _keep: Duration) -> Result<(), BrokerError> {
        self.up()?.revoked.extend(task_ids.iter().cloned());
        Ok(())
    }

    async fn is_revoked(&self, task_id: &str) -> Result<bool, BrokerError> {
        Ok(self.up()?.revoked.iter().any(|id| id == task_id))
    }

    async fn revoked(&self) -> Result<Vec<String>, BrokerError> {
        Ok(self.up()?.revoked.clone())
    }
}
