//! The dashboard: `GET /` serves one plain HTML page (no build step, no request outside the
//! daemon) with five views (overview, tasks, broker, workers, personas), each reading its own
//! endpoints: `GET /api/dashboard` here (the overview: personas with a progress bar per job of
//! their latest run, recent completions and failures, the broker's summary, this trigger's
//! counters), and the modules below for the rest (`tasks`, `broker`, `workers`, `personas`, and
//! `live` for the charts and the event stream the page updates from).
//!
//! The page itself holds no data, so it is served without the token; the page sends the token
//! it finds after `#token=` in its address with every API call.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::{jobs, JobStatus};

const PAGE: &str = include_str!("dashboard.html");

/// How many rows each list of the dashboard shows.
const RECENT: u64 = 12;

mod broker;
mod live;
mod personas;
mod tasks;
mod workers;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(page))
        .route("/api/dashboard", web::get().to(dashboard))
        .configure(tasks::routes)
        .configure(broker::routes)
        .configure(workers::routes)
        .configure(personas::routes)
        .configure(live::routes);
}

/// What the page may load and who may frame it: itself only (no other site is ever asked, and
/// no other page can overlay its buttons). The script and styles are inline, in the page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(PAGE)
}

fn database(e: sea_orm::DbErr) -> ApiError {
    ApiError::unavailable("database", e)
}

use personas::{group_runs, job_json};

async fn dashboard(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let db = &state.db;
    let mut personas = Vec::new();
    for persona in jobs::recent_personas(db, RECENT).await.map_err(database)? {
        let all = jobs::jobs_of_persona(db, &persona.id)
            .await
            .map_err(database)?;
        // The latest run as the persona's page groups runs.
        let latest = group_runs(all).into_iter().next().unwrap_or_default();
        personas.push(json!({
            "id": persona.id,
            "status": persona.status,
            "error": persona.error_message,
            "updated_at": persona.updated_at,
            "jobs": latest.iter().map(job_json).collect::<Vec<_>>(),
        }));
    }
    let completed = jobs::find_jobs(db, Some(JobStatus::Completed), None, Some(RECENT))
        .await
        .map_err(database)?;
    let failed = jobs::find_jobs(db, Some(JobStatus::Failed), None, Some(RECENT))
        .await
        .map_err(database)?;
    let broker = match state.broker.overview(&state.settings.worker.queues).await {
        Ok(overview) => serde_json::to_value(overview).unwrap_or(Value::Null),
        Err(e) => json!({ "error": e.to_string() }),
    };
    // Previews only: a dead letter may be megabytes, and this is read every second.
    let dead_letters = match state.broker.dead_letter_page(RECENT as usize).await {
        Ok((total, latest)) => json!({ "total": total, "latest": latest }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let trigger = match &state.trigger {
        Some(trigger) => trigger
            .send(crate::actors::Observe::new())
            .await
            .ok()
            .map(|c: crate::trigger::redis_trigger::TriggerCounters| json!(c)),
        None => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "personas": personas,
        "trigger": trigger,
        "completed": completed.iter().map(job_json).collect::<Vec<_>>(),
        "failed": failed.iter().map(job_json).collect::<Vec<_>>(),
        "broker": broker,
        "dead_letters": dead_letters,
    })))
}
