//! The daemon as a library: `run(settings, shutdown)` starts the engine, the Redis trigger (the
//! `RedisTrigger` actor over the broker, the result backend, persona locks and Celery events)
//! and the HTTP server, serves until `shutdown` resolves, then drains as `worker.shutdown_grace`
//! allows and answers what was done. `persona-ingest run` calls it with a future of SIGTERM or
//! SIGINT; the tests call it (or `start` and `Daemon::stop`, to look at the actors meanwhile)
//! in process.

use crate::embed::rate_limit::{RateLimiter, RateLimits, RedisLimiter};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Settings;
use crate::http::AppState;
use crate::monitor::{CeleryEvent, Inspect, Monitor, MonitorPorts, StopMonitor};
use crate::pipeline::Engine;
use crate::sources::FileSources;
use crate::trigger::broker::Broker;
use crate::trigger::celery::TaskNames;
use crate::trigger::events::EventPublisher;
use crate::trigger::persona_lock::PersonaLocks;
use crate::trigger::pidbox::{listen, Pidbox, WorkerInfo};
use crate::trigger::ports::Events;
use crate::trigger::redis_trigger::{
    hostname, RedisTrigger, Shutdown, TriggerConfig, TriggerCounters, TriggerPeers, TriggerPorts,
};
use crate::trigger::results::ResultBackend;
use crate::trigger::subscription::{self, Topic};

/// What a daemon did, once stopped.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonReport {
    pub worker_id: String,
    pub trigger: TriggerCounters,
}

/// A running daemon.
pub struct Daemon {
    pub worker_id: String,
    pub engine: Engine,
    pub trigger: Addr<RedisTrigger>,
    pub broker: Arc<Broker>,
    http: Option<actix_web::dev::ServerHandle>,
    /// Turns true when remote control asks this worker to shut down.
    pub stopped_remotely: watch::Receiver<bool>,
    stop_listening: watch::Sender<bool>,
    /// Where the trigger, the pidbox and the HTTP server run (see [`start`]).
    _front_thread: FrontThread,
}

/// The front's thread, stopped when the daemon is dropped, stopped first or not.
struct FrontThread(Arbiter);

impl Drop for FrontThread {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Serves until `shutdown` resolves, then stops (see the module).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<DaemonReport> {
    let daemon = start(settings).await?;
    let mut remote = daemon.stopped_remotely.clone();
    tokio::select! {
        _ = shutdown => {}
        _ = remote.wait_for(|stop| *stop) => {}
    }
    Ok(daemon.stop().await)
}

/// The provider's rate limits in buckets on the broker's Redis, shared with every daemon there
/// that calls the same provider with the same key; `None` when no limit is set.
async fn shared_rate_limit(settings: &Settings) -> anyhow::Result<Option<Arc<dyn RateLimiter>>> {
    if !RateLimits::from_settings(&settings.embedding).is_limited() {
        return Ok(None);
    }
    let client = crate::urls::redis::client(&settings.redis.url)
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
    let con = redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|e| anyhow::anyhow!("redis {}: {e}", crate::urls::redact(&settings.redis.url)))?;
    Ok(Some(Arc::new(RedisLimiter::new(
        con,
        &settings.redis.key_prefix,
        &settings.embedding,
    ))))
}

/// Connects everything and starts serving. Must be called inside an actix system.
///
/// The engine's actors run on the caller's thread; the trigger (its Redis connections, its
/// tasks, the pidbox) and the HTTP server on a thread of their own, `front`. A message's Redis
/// work (reading it, its results, its events, its acknowledgement) and its ingestion then use
/// both cores, where on one thread they took turns (`trigger_overhead`: the daemon's main thread
/// was 80 % busy at 1,000 messages a second). They meet only at the engine's facade: a
/// `RunTask`, its events and its outcome.
pub async fn start(settings: Settings) -> anyhow::Result<Daemon> {
    let engine =
        Engine::start_sharing(settings.clone(), shared_rate_limit(&settings).await?).await?;
    let handles = EngineHandles {
        settings: engine.settings.clone(),
        db: engine.db.clone(),
        store: engine.store.clone(),
        provider: engine.provider.clone(),
        supervisor: engine.supervisor.clone(),
    };
    let front_thread = FrontThread(Arbiter::new());
    let (started, front) = tokio::sync::oneshot::channel();
    front_thread.0.spawn(async move {
        let _ = started.send(start_front(settings, handles).await);
    });
    let front = match front.await {
        Ok(Ok(front)) => front,
        Ok(Err(e)) => return Err(e),
        Err(_) => anyhow::bail!("the trigger's thread stopped while starting"),
    };
    Ok(Daemon {
        worker_id: front.worker_id,
        engine,
        trigger: front.trigger,
        broker: front.broker,
        http: front.http,
        stopped_remotely: front.stopped_remotely,
        stop_listening: front.stop_listening,
        _front_thread: front_thread,
    })
}

/// What the trigger's side uses of the engine.
struct EngineHandles {
    settings: Arc<Settings>,
    db: sea_orm::DatabaseConnection,
    store: Arc<dyn crate::store::VectorStore>,
    provider: Arc<dyn crate::embed::EmbeddingProvider>,
    supervisor: Addr<crate::actors::supervisor::Supervisor>,
}

/// The trigger's side, started on its own thread.
struct Front {
    worker_id: String,
    trigger: Addr<RedisTrigger>,
    broker: Arc<Broker>,
    http: Option<actix_web::dev::ServerHandle>,
    stopped_remotely: watch::Receiver<bool>,
    stop_listening: watch::Sender<bool>,
}

async fn start_front(settings: Settings, engine: EngineHandles) -> anyhow::Result<Front> {
    let redis = crate::urls::redact(&settings.redis.url);
    let broker = Broker::connect(
        &settings.redis.url,
        &settings.redis.key_prefix,
        &settings.worker.queues,
    )
    .await
    .map_err(|e| anyhow::anyhow!("redis {redis}: {e}"))?;
    let results_url = settings
        .results
        .url
        .clone()
        .unwrap_or_else(|| settings.redis.url.clone());
    let results = Arc::new(
        ResultBackend::connect(&results_url, Duration::from_secs(settings.results.expires))
            .await
            .map_err(|e| {
                anyhow::anyhow!("results.url {}: {e}", crate::urls::redact(&results_url))
            })?,
    );
    let node = match settings.worker.name.as_str() {
        "" => format!("persona-ingest.{}@{}", std::process::id(), hostname()),
        name => name.to_owned(),
    };
    let broker = Arc::new(broker);
    let worker_id = TriggerConfig::new_worker_id();
    let events: Option<Arc<dyn Events>> = if settings.events.enabled {
        // Events are PUBLISHed on the broker's own connection, in the channels of its db.
        let db = crate::urls::redis::db(&settings.redis.url)
            .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
        Some(Arc::new(EventPublisher::new(
            broker.connection(),
            db,
            node.clone(),
            worker_id.clone(),
        )))
    } else {
        None
    };
    let names = TaskNames::from_settings(&settings.tasks);
    let config = TriggerConfig {
        worker_id: worker_id.clone(),
        hostname: node.clone(),
        concurrency: settings.worker.concurrency,
        prefetch: settings.worker.prefetch,
        visibility_timeout: Duration::from_secs(settings.worker.visibility_timeout),
        shutdown_grace: Duration::from_secs(settings.worker.shutdown_grace),
        names: names.clone(),
        answers: settings.tasks.full_persona_answers,
        default_queue: settings
            .worker
            .queues
            .first()
            .cloned()
            .unwrap_or_else(|| "celery".into()),
        revokes_expire: Duration::from_secs(settings.worker.revokes_expire),
    };
    eprintln!(
        "persona-ingest worker {worker_id} serving {} on {redis} ({} at once)",
        settings.worker.queues.join(", "),
        config.concurrency
    );
    let ports = TriggerPorts {
        queue: broker.clone(),
        results: results.clone(),
        locks: Arc::new(PersonaLocks::new(broker.clone(), &worker_id)),
        revocations: broker.clone(),
        events: events.clone(),
    };
    let peers = TriggerPeers {
        engine: engine.supervisor.clone().recipient(),
        abort_runs: engine.supervisor.clone().recipient(),
        abort_persona: engine.supervisor.clone().recipient(),
    };
    // Everything that can fail comes before any actor of the daemon starts: an actor started
    // and never run would be polled after the runtime is gone, and panic there.
    let client = crate::urls::redis::client(&settings.redis.url)
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
    let channel = format!(
        "/{}.celery.pidbox",
        client.get_connection_info().redis_settings().db()
    );
    let trigger_context = Context::<RedisTrigger>::new();
    let trigger = trigger_context.address();
    let (stop_listening, listening) = watch::channel(false);
    let http = match settings.http.listen.as_str() {
        "" => None,
        listen => {
            let monitor = start_monitor(&client, &broker, &names, listening.clone());
            let state = AppState {
                settings: engine.settings.clone(),
                db: engine.db.clone(),
                store: engine.store.clone(),
                model: engine.provider.model().to_owned(),
                dimension: engine.provider.dimension(),
                sources: Arc::new(
                    FileSources::new(engine.settings.clone())
                        .with_token_counter(engine.provider.token_counter()),
                ),
                broker: broker.clone(),
                supervisor: engine.supervisor.clone(),
                trigger: Some(trigger.clone().recipient()),
                monitor: Some(monitor),
                results: Some(results.clone()),
                stopping: listening.clone(),
            };
            let handle = crate::http::start(listen, state)
                .map_err(|e| anyhow::anyhow!("http.listen {listen}: {e}"))?;
            eprintln!("http on http://{listen}");
            Some(handle)
        }
    };
    trigger_context.run(RedisTrigger::new(config, ports, peers));
    let (remote_stop, stopped_remotely) = watch::channel(false);
    let info = WorkerInfo {
        hostname: node,
        queues: settings.worker.queues.clone(),
        concurrency: settings.worker.concurrency,
        prefetch: settings.worker.prefetch,
        registered: names.all(),
        broker_url: redis.clone(),
        result_backend: crate::urls::redact(&results_url),
    };
    let pidbox = Pidbox::new(
        info,
        broker.clone(),
        broker.clone(),
        events,
        (trigger.clone().recipient(), trigger.clone().recipient()),
        remote_stop,
    )
    .start();
    actix::spawn(listen(client, channel, pidbox.recipient(), listening));
    Ok(Front {
        worker_id,
        trigger,
        broker,
        http,
        stopped_remotely,
        stop_listening,
    })
}

/// The dashboard's Monitor, hearing every Celery event on the broker's db.
fn start_monitor(
    client: &redis::Client,
    broker: &Arc<Broker>,
    names: &TaskNames,
    stop: watch::Receiver<bool>,
) -> Addr<Monitor> {
    let ports = MonitorPorts {
        depth: Some(broker.clone()),
        inspect: Some(Arc::new(RemoteInspect(client.clone()))),
    };
    let monitor = Monitor::new(names.clone(), ports).start();
    let db = client.get_connection_info().redis_settings().db();
    let events = monitor.clone().recipient();
    let deliver = move |bytes| events.do_send(CeleryEvent(bytes));
    let pattern = Topic::Pattern(format!("/{db}.celeryev/*"));
    actix::spawn(subscription::forward(
        client.clone(),
        pattern,
        deliver,
        stop.clone(),
    ));
    // Stopped with the daemon, not with the process: tests run several daemons in one.
    let stopping = monitor.clone();
    let mut stop = stop;
    actix::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        stopping.do_send(StopMonitor);
    });
    monitor
}

/// `inspect` as Celery's client sends it, waiting half a second for replies.
struct RemoteInspect(redis::Client);

#[async_trait::async_trait]
impl Inspect for RemoteInspect {
    async fn inspect(&self, method: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let timeout = Duration::from_millis(500);
        Ok(
            crate::trigger::control::broadcast(&self.0, method, serde_json::json!({}), timeout)
                .await?,
        )
    }
}

impl Daemon {
    /// Stops intake, drains within `worker.shutdown_grace`, requeues the rest, stops the HTTP
    /// server and flushes the engine's buffered progress.
    pub async fn stop(self) -> DaemonReport {
        self.stop_listening.send_replace(true);
        let trigger = match self.trigger.send(Shutdown).await {
            Ok(counters) => counters,
            Err(e) => {
                tracing::error!("the trigger stopped before its shutdown: {e}");
                TriggerCounters::default()
            }
        };
        if let Some(http) = self.http {
            http.stop(true).await;
        }
        self.engine.shutdown().await;
        DaemonReport {
            worker_id: self.worker_id,
            trigger,
        }
    }
}
