//! `persona-ingest run`: the engine daemon, serving the Celery queues on Redis until SIGTERM or
//! SIGINT, then stopping intake, letting running work finish within `worker.shutdown_grace`,
//! requeueing the rest, and exiting 0. Beside the consumer: the HTTP server (`http.listen`),
//! stopped after it, and Celery events (`events.enabled`).

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Settings;
use crate::http::AppState;
use crate::pipeline::Engine;
use crate::sources::FileSources;
use crate::trigger::broker::Broker;
use crate::trigger::celery::TaskNames;
use crate::trigger::consumer::{hostname, serve, ConsumerConfig, ConsumerPeers};
use crate::trigger::events::EventPublisher;
use crate::trigger::persona_lock::PersonaLocks;
use crate::trigger::results::ResultBackend;

pub async fn run(settings: Settings) -> anyhow::Result<i32> {
    let redis = crate::db::redact(&settings.redis.url);
    let engine = Engine::start(settings.clone()).await?;
    let broker = Broker::connect(
        &settings.redis.url,
        &settings.redis.key_prefix,
        &settings.worker.queues,
    )
    .await
    .map_err(|e| anyhow::anyhow!("redis {redis}: {e}"))?;
    let results = ResultBackend::connect(
        &settings.redis.url,
        Duration::from_secs(settings.results.expires),
    )
    .await
    .map_err(|e| anyhow::anyhow!("redis {redis}: {e}"))?;
    let node = match settings.worker.name.as_str() {
        "" => format!("persona-ingest.{}@{}", std::process::id(), hostname()),
        name => name.to_owned(),
    };
    let broker = Arc::new(broker);
    let events = if settings.events.enabled {
        // Events are PUBLISHed on the broker's own connection, in the channels of its db.
        let db = redis::Client::open(settings.redis.url.as_str())?
            .get_connection_info()
            .redis_settings()
            .db();
        Some(EventPublisher::new(broker.connection(), db, node.clone()))
    } else {
        None
    };
    let (stop, shutdown) = watch::channel(false);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    actix::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = stop.send(true);
    });
    let config = ConsumerConfig {
        worker_id: ConsumerConfig::worker_id(),
        hostname: node,
        concurrency: settings.worker.concurrency,
        prefetch: settings.worker.prefetch,
        max_retries: settings.worker.max_retries,
        retry_delay: Duration::from_secs_f64(settings.worker.retry_delay),
        visibility_timeout: Duration::from_secs(settings.worker.visibility_timeout),
        shutdown_grace: Duration::from_secs(settings.worker.shutdown_grace),
        names: TaskNames::from_settings(&settings.tasks),
    };
    eprintln!(
        "persona-ingest worker {} serving {} on {redis} ({} at once)",
        config.worker_id,
        settings.worker.queues.join(", "),
        config.concurrency
    );
    let locks = PersonaLocks::new(broker.clone(), &config.worker_id);
    let peers = ConsumerPeers {
        broker,
        results: Arc::new(results),
        supervisor: engine.supervisor.clone().recipient(),
        abort_runs: engine.supervisor.clone().recipient(),
        db: engine.db.clone(),
        events: events.map(Arc::new),
        locks: Arc::new(locks),
    };
    let http = match settings.http.listen.as_str() {
        "" => None,
        listen => {
            let state = AppState {
                settings: engine.settings.clone(),
                db: engine.db.clone(),
                store: engine.store.clone(),
                sources: Arc::new(FileSources::new(engine.settings.clone())),
                broker: peers.broker.clone(),
                supervisor: engine.supervisor.clone(),
            };
            let handle = crate::http::start(listen, state)
                .map_err(|e| anyhow::anyhow!("http.listen {listen}: {e}"))?;
            eprintln!("http on http://{listen}");
            Some(handle)
        }
    };
    let report = serve(config, peers, shutdown).await?;
    if let Some(http) = http {
        http.stop(true).await;
    }
    engine.shutdown().await;
    eprintln!(
        "stopped: {} task(s) answered, {} dead-lettered, {} requeued",
        report.served, report.dead_lettered, report.requeued_at_exit
    );
    Ok(0)
}
