//! Pidbox: remote control, answered as a Celery 5 worker answers it (kombu's `pidbox.py`, Celery's
//! `worker/control.py`; replies checked against a real worker's in
//! `tests/fixtures/celery/control-replies.json`), so that `celery status`, `celery inspect ...`,
//! `app.control.revoke(...)` and Flower see this daemon as a worker.
//!
//! Commands arrive as kombu messages PUBLISHed on the `celery.pidbox` fanout exchange
//! (`/{db}.celery.pidbox` on Redis, `listen` below forwards them here); one with a `reply_to` is
//! answered `{node name: reply}` on the `reply.celery.pidbox` direct exchange with its `ticket`.
//! Served: `ping`, `stats`, `active`, `reserved`, `scheduled`, `registered`, `revoked`,
//! `active_queues`, `query_task`, `conf`, `report`, `clock`, `revoke` (with `terminate`),
//! `terminate`, `enable_events`, `disable_events`, `heartbeat`, `shutdown`; anything else gets
//! Celery's reply to an unknown command, `{"error": "KeyError('name')"}`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::ports::{ControlReplies, Events, Revocations};
use super::redis_trigger::{Inspect, Revoke};
use crate::actors::Observe;

/// A control message as PUBLISHed (a kombu envelope).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ControlMessage(pub Vec<u8>);

/// What `stats`, `conf` and `active_queues` tell of this worker.
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    /// The node name (Celery's `--hostname`).
    pub hostname: String,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub prefetch: usize,
    /// The task names served, sorted.
    pub registered: Vec<String>,
    /// The broker and result backend URLs, passwords hidden.
    pub broker_url: String,
    pub result_backend: String,
}

pub struct Pidbox {
    info: WorkerInfo,
    replies: Arc<dyn ControlReplies>,
    revocations: Arc<dyn Revocations>,
    events: Option<Arc<dyn Events>>,
    inspect: Recipient<Inspect>,
    revoke: Recipient<Revoke>,
    /// Turned true by the `shutdown` command.
    shutdown: watch::Sender<bool>,
    started: Instant,
    clock: u64,
    counters: PidboxCounters,
}

/// What remote control did, for tests and the status views.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PidboxCounters {
    /// Control messages heard.
    pub heard: u64,
    /// Commands meant for this worker, by method.
    pub commands: std::collections::BTreeMap<String, u64>,
    /// Heard but not for this worker: another node's, expired, or unreadable.
    pub ignored: u64,
}

impl Pidbox {
    pub fn new(
        info: WorkerInfo,
        replies: Arc<dyn ControlReplies>,
        revocations: Arc<dyn Revocations>,
        events: Option<Arc<dyn Events>>,
        trigger: (Recipient<Inspect>, Recipient<Revoke>),
        shutdown: watch::Sender<bool>,
    ) -> Self {
        Self {
            info,
            replies,
            revocations,
            events,
            inspect: trigger.0,
            revoke: trigger.1,
            shutdown,
            started: Instant::now(),
            clock: 0,
            counters: PidboxCounters::default(),
        }
    }
}

impl Actor for Pidbox {
    type Context = Context<Self>;
}

/// A command as kombu's `Mailbox._publish` writes it.
struct Command {
    method: String,
    arguments: Map<String, Value>,
    ticket: Option<String>,
    reply_to: Option<(String, String)>,
}

/// Reads a command meant for `hostname`; `None` for one that is not (another destination, a
/// pattern that does not match, expired, or unreadable: logged, as Celery logs it).
fn command_for(raw: &[u8], hostname: &str) -> Option<Command> {
    let envelope: Value = serde_json::from_slice(raw)
        .map_err(|e| tracing::warn!("pidbox: a control message that is not JSON: {e}"))
        .ok()?;
    let expires = envelope
        .pointer("/headers/expires")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if expires > 0.0 && now() > expires {
        return None;
    }
    let body = BASE64
        .decode(envelope.get("body")?.as_str()?)
        .map_err(|e| tracing::warn!("pidbox: a control message body that is not base64: {e}"))
        .ok()?;
    let body: Value = serde_json::from_slice(&body).ok()?;
    if let Some(destination) = body.get("destination").and_then(Value::as_array) {
        if !destination.is_empty() && !destination.iter().any(|d| d.as_str() == Some(hostname)) {
            return None;
        }
    }
    if let (Some(pattern), Some(matcher)) = (
        body.get("pattern").and_then(Value::as_str),
        body.get("matcher").and_then(Value::as_str),
    ) {
        let matches = match matcher {
            "glob" => glob(pattern, hostname),
            // PCRE patterns are not interpreted: only an exact name matches.
            _ => pattern == hostname,
        };
        if !matches {
            return None;
        }
    }
    let reply_to = body.get("reply_to").and_then(|r| {
        Some((
            r.get("exchange")?.as_str()?.to_owned(),
            r.get("routing_key")?.as_str()?.to_owned(),
        ))
    });
    Some(Command {
        method: body.get("method")?.as_str()?.to_owned(),
        arguments: body
            .get("arguments")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        ticket: body
            .get("ticket")
            .and_then(Value::as_str)
            .map(str::to_owned),
        reply_to,
    })
}

/// `fnmatch` with `*` and `?`.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The reply as kombu's `Mailbox._publish_reply` sends it.
fn reply_envelope(
    hostname: &str,
    reply: Value,
    exchange: &str,
    routing_key: &str,
    ticket: &str,
    clock: u64,
) -> Vec<u8> {
    let body = json!({ hostname: reply }).to_string();
    json!({
        "body": BASE64.encode(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": { "ticket": ticket, "clock": clock },
        "properties": {
            "delivery_mode": 1,
            "delivery_info": { "exchange": exchange, "routing_key": routing_key },
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    })
    .to_string()
    .into_bytes()
}

/// A set as Python prints it: `{'a', 'b'}`.
fn python_set(ids: &[String]) -> String {
    let items: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!("{{{}}}", items.join(", "))
}

impl Handler<ControlMessage> for Pidbox {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(
        &mut self,
        ControlMessage(raw): ControlMessage,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.clock += 1;
        self.counters.heard += 1;
        let Some(command) = command_for(&raw, &self.info.hostname) else {
            self.counters.ignored += 1;
            return Box::pin(fut::ready(()));
        };
        *self
            .counters
            .commands
            .entry(command.method.clone())
            .or_default() += 1;
        tracing::debug!(method = %command.method, "pidbox command");
        let info = self.info.clone();
        let inspect = self.inspect.clone();
        let revoke = self.revoke.clone();
        let revocations = self.revocations.clone();
        let events = self.events.clone();
        let replies = self.replies.clone();
        let uptime = self.started.elapsed();
        let clock = self.clock;
        let shutdown = self.shutdown.clone();
        let work = async move {
            let args = &command.arguments;
            let held = || async { inspect.send(Inspect).await.unwrap_or_default() };
            let reply: Option<Value> = match command.method.as_str() {
                "ping" => Some(json!({ "ok": "pong" })),
                "clock" => Some(json!({ "clock": clock })),
                "registered" => Some(json!(info.registered)),
                "active_queues" => Some(json!(info
                    .queues
                    .iter()
                    .map(|q| queue_info(q))
                    .collect::<Vec<_>>())),
                "conf" => Some(conf(&info)),
                "report" => Some(json!({ "ok": report(&info) })),
                "stats" => Some(stats(&info, &held().await, uptime, clock)),
                "active" => Some(json!(held()
                    .await
                    .active
                    .iter()
                    .map(|(t, since)| request_info(t, &info.hostname, Some(since)))
                    .collect::<Vec<_>>())),
                "reserved" => Some(json!(held()
                    .await
                    .reserved
                    .iter()
                    .map(|t| request_info(t, &info.hostname, None))
                    .collect::<Vec<_>>())),
                "scheduled" => Some(json!(held()
                    .await
                    .scheduled
                    .iter()
                    .map(|t| scheduled_info(t, &info.hostname))
                    .collect::<Vec<_>>())),
                "query_task" => Some(query_task(&held().await, args, &info.hostname)),
                "revoked" => Some(json!(revocations.revoked().await.unwrap_or_default())),
                "revoke" | "terminate" => {
                    let ids = id_list(args.get("task_id"));
                    let terminate = command.method == "terminate"
                        || args.get("terminate").and_then(Value::as_bool) == Some(true);
                    let terminated = revoke
                        .send(Revoke {
                            task_ids: ids.clone(),
                            terminate,
                        })
                        .await
                        .unwrap_or_default();
                    Some(if !terminate {
                        json!({ "ok": format!("tasks {} flagged as revoked", python_set(&ids)) })
                    } else if terminated.is_empty() {
                        json!({ "ok": "terminate: tasks unknown" })
                    } else {
                        json!({ "ok": format!("terminate: {}", terminated.join(", ")) })
                    })
                }
                "enable_events" | "disable_events" => Some(match &events {
                    None => json!({ "error": "event dispatcher unavailable" }),
                    Some(events) => {
                        let on = command.method == "enable_events";
                        let was = events.set_task_events(on);
                        let word = if on { "enabled" } else { "disabled" };
                        if was == on {
                            json!({ "ok": format!("task events already {word}") })
                        } else {
                            json!({ "ok": format!("task events {word}") })
                        }
                    }
                }),
                "heartbeat" => {
                    if let Some(events) = &events {
                        events.worker("worker-heartbeat").await;
                    }
                    Some(Value::Null)
                }
                "shutdown" => {
                    tracing::warn!("shutdown asked by remote control");
                    shutdown.send_replace(true);
                    // Celery's worker leaves without a reply.
                    None
                }
                other => Some(json!({ "error": format!("KeyError('{other}')") })),
            };
            if let (Some(reply), Some((exchange, routing_key)), Some(ticket)) =
                (reply, command.reply_to, command.ticket)
            {
                let message = reply_envelope(
                    &info.hostname,
                    reply,
                    &exchange,
                    &routing_key,
                    &ticket,
                    clock,
                );
                if let Err(e) = replies.reply(&exchange, &routing_key, &message).await {
                    tracing::warn!("pidbox: the reply to {} was not sent: {e}", command.method);
                }
            }
        };
        Box::pin(work.into_actor(self))
    }
}

impl Handler<Observe<PidboxCounters>> for Pidbox {
    type Result = MessageResult<Observe<PidboxCounters>>;

    fn handle(&mut self, _: Observe<PidboxCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

mod listen;
mod replies;

pub use listen::listen;
use replies::{conf, id_list, query_task, queue_info, report, request_info, scheduled_info, stats};

#[cfg(test)]
mod tests;
