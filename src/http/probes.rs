//! `GET /health` (the process answers), `GET /ready` (the database, Redis and the vector store
//! answer, each within 2 s; 503 naming those that do not) and `GET /metrics` (Prometheus text:
//! the engine's counters, and gauges read now: jobs by kind and status, queues, in-flight
//! messages, dead letters, live workers, running personas).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::{json, Map, Value};

use super::{ApiError, AppState};
use crate::actors::supervisor::SupervisorCounters;
use crate::actors::Observe;
use crate::metrics::METRICS;
use crate::trigger::redis_trigger::TriggerCounters;

const CHECK_WITHIN: Duration = Duration::from_secs(2);

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// A read with a time limit (a check, or a scrape that must answer whatever is down); `Err`
/// says why it failed.
async fn within<T, E, F>(read: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_WITHIN, read).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_WITHIN:?}")),
    }
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (database, redis, store) = tokio::join!(
        within(state.db.ping()),
        within(state.broker.ping()),
        within(async {
            state
                .store
                .collection("persona-ingest-readiness")
                .await
                .map(|_| ())
        }),
    );
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for (name, result) in [("database", database), ("redis", redis), ("store", store)] {
        let value = match result {
            Ok(()) => Value::from("ok"),
            Err(e) => {
                failing.push(format!("{name} ({e})"));
                Value::from(e)
            }
        };
        checks.insert(name.into(), value);
    }
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({ "ready": true, "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "error": format!("not ready: {}", failing.join(", ")),
            "status": 503,
            "checks": checks,
        }))
    }
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = Registry::new();
    let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
        let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
        now.register(Box::new(gauge.clone()))
            .expect("registered once");
        gauge
    };
    let gauge = |name: &str, help: &str| {
        let gauge = IntGauge::new(name, help).expect("a valid metric");
        now.register(Box::new(gauge.clone()))
            .expect("registered once");
        gauge
    };
    let jobs = gauge_vec(
        "persona_ingest_jobs",
        "Jobs in the database, by kind and status.",
        &["kind", "status"],
    );
    // A scrape still answers when a dependency is down (that is when it matters most): what
    // could not be read is left out, and `persona_ingest_up` says which.
    let up = gauge_vec(
        "persona_ingest_up",
        "Whether the metrics could read each dependency (1) or not (0).",
        &["dependency"],
    );
    match within(crate::jobs::job_counts(&state.db)).await {
        Ok(counts) => {
            up.with_label_values(&["database"]).set(1);
            for (kind, status, n) in counts {
                jobs.with_label_values(&[kind.as_str(), status.as_str()])
                    .set(n);
            }
        }
        Err(e) => {
            up.with_label_values(&["database"]).set(0);
            tracing::warn!("metrics: jobs not counted: {e}");
        }
    }
    let queued = gauge_vec(
        "persona_ingest_queue_messages",
        "Messages waiting in each served queue.",
        &["queue"],
    );
    let in_flight = gauge(
        "persona_ingest_in_flight_messages",
        "Messages taken by workers and not yet acknowledged.",
    );
    let dead = gauge(
        "persona_ingest_dead_letter_messages",
        "Messages in the dead-letter list now.",
    );
    let workers = gauge("persona_ingest_workers", "Workers whose lease holds.");
    match within(state.broker.overview(&state.settings.worker.queues)).await {
        Ok(overview) => {
            up.with_label_values(&["redis"]).set(1);
            for queue in &overview.queues {
                queued
                    .with_label_values(&[queue.queue.as_str()])
                    .set(queue.waiting as i64);
            }
            let holding = overview.workers.iter().map(|w| w.in_flight.len() as i64);
            in_flight.set(holding.sum());
            dead.set(overview.dead_letters as i64);
            let alive = overview
                .workers
                .iter()
                .filter(|w| w.lease_left_ms.is_some());
            workers.set(alive.count() as i64);
        }
        Err(e) => {
            up.with_label_values(&["redis"]).set(0);
            tracing::warn!("metrics: the broker not read: {e}");
        }
    }
    let running = gauge(
        "persona_ingest_running_personas",
        "Personas this worker is ingesting now.",
    );
    let waiting = gauge(
        "persona_ingest_waiting_runs",
        "Runs this worker has taken and not started yet.",
    );
    if let Ok(counters) = state
        .supervisor
        .send(Observe::<SupervisorCounters>::new())
        .await
    {
        running.set(counters.running.len() as i64);
        waiting.set(counters.waiting as i64);
    }
    let tasks = gauge_vec(
        "persona_ingest_trigger_tasks",
        "Tasks this worker holds now: running (in a run slot), ready (due, waiting for a slot), scheduled (held for their eta, without a slot).",
        &["state"],
    );
    if let Some(trigger) = &state.trigger {
        if let Ok(counters) = within(trigger.send(Observe::<TriggerCounters>::new())).await {
            tasks
                .with_label_values(&["running"])
                .set(counters.running as i64);
            tasks
                .with_label_values(&["ready"])
                .set(counters.ready as i64);
            tasks
                .with_label_values(&["scheduled"])
                .set(counters.scheduled as i64);
        }
    }
    let mut families = METRICS.registry.gather();
    families.extend(now.gather());
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut body)
        .map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            )
        })?;
    Ok(HttpResponse::Ok()
        .content_type(TextEncoder::new().format_type())
        .body(body))
}
