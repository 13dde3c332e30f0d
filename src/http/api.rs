//! The JSON API: `GET /api/jobs/{id}`, `GET /api/jobs?status=&persona=&limit=`,
//! `GET /api/personas/{id}` (with its jobs), `POST /api/personas/{id}/ingest` (creates the job
//! rows and sends the Celery message the web app sends; answers the job and task ids) and
//! `GET /api/dead-letters?limit=`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::trigger::enqueue::enqueue_ingestion;
use crate::{jobs, JobStatus, Kind, PersonaId};

/// The most rows one listing answers.
const MAX_LIMIT: u64 = 1000;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/jobs", web::get().to(list_jobs))
        .route("/api/jobs/{id}", web::get().to(job))
        .route("/api/personas/{id}", web::get().to(persona))
        .route("/api/personas/{id}/ingest", web::post().to(ingest))
        .route("/api/personas/{id}/audit", web::get().to(audit))
        .route("/api/dead-letters", web::get().to(dead_letters))
        .route("/api/tasks/{id}/revoke", web::post().to(revoke));
}

fn database(e: sea_orm::DbErr) -> ApiError {
    ApiError::unavailable("database", e)
}

fn persona_id(given: &str) -> Result<PersonaId, ApiError> {
    PersonaId::parse(given).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn limit(given: Option<&str>) -> Result<u64, ApiError> {
    super::parse_limit(given, 100, MAX_LIMIT)
}

async fn job(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request(format!("job id {:?} is not a UUID", id.as_str())))?;
    let job = jobs::job_by_id(&state.db, id)
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(HttpResponse::Ok().json(job))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    status: Option<String>,
    persona: Option<String>,
    limit: Option<String>,
}

fn job_status(given: &str) -> Result<JobStatus, ApiError> {
    match given {
        "pending" => Ok(JobStatus::Pending),
        "processing" => Ok(JobStatus::Processing),
        "completed" => Ok(JobStatus::Completed),
        "failed" => Ok(JobStatus::Failed),
        other => Err(ApiError::bad_request(format!(
            "status {other:?} is not one of pending, processing, completed, failed"
        ))),
    }
}

async fn list_jobs(
    state: web::Data<AppState>,
    query: web::Query<JobsQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = query.status.as_deref().map(job_status).transpose()?;
    let persona = query.persona.as_deref().map(persona_id).transpose()?;
    let limit = limit(query.limit.as_deref())?;
    let found = jobs::find_jobs(
        &state.db,
        status,
        persona.as_ref().map(PersonaId::as_str),
        Some(limit),
    )
    .await
    .map_err(database)?;
    Ok(HttpResponse::Ok().json(json!({ "jobs": found })))
}

async fn persona(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = persona_id(&id)?;
    let persona = jobs::persona(&state.db, id.as_str())
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::not_found(format!("no persona {id}")))?;
    let jobs = jobs::jobs_of_persona(&state.db, id.as_str())
        .await
        .map_err(database)?;
    Ok(HttpResponse::Ok().json(json!({ "persona": persona, "jobs": jobs })))
}

/// The persona's job rows and manifest against the vector store (see `audit`): 200 with the
/// report whether or not it is clean (`clean` says which), 404 for a persona the database
/// does not know.
async fn audit(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = persona_id(&id)?;
    if jobs::persona(&state.db, id.as_str())
        .await
        .map_err(database)?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "no persona {id} in the database"
        )));
    }
    let expected = crate::audit::Expected {
        name_template: &state.settings.collections.name_template,
        model: &state.model,
        dimension: state.dimension,
    };
    let report = crate::audit::audit(
        &state.db,
        state.store.as_ref(),
        &expected,
        std::slice::from_ref(&id),
    )
    .await
    .map_err(|e| ApiError::unavailable("auditing", e))?;
    let persona = report.personas.into_iter().next();
    let clean = persona
        .as_ref()
        .is_none_or(|p| p.kinds.iter().all(|k| k.findings.is_empty()));
    Ok(HttpResponse::Ok().json(json!({ "persona": persona, "clean": clean })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IngestBody {
    /// Every kind when left out.
    kinds: Option<Vec<Kind>>,
    /// Embed every file again, changed or not; only what changed when left out.
    #[serde(default)]
    force: bool,
}

async fn ingest(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = persona_id(&id)?;
    let known = jobs::persona(&state.db, id.as_str())
        .await
        .map_err(database)?
        .is_some();
    if !known && !state.sources.persona_exists(&id) {
        return Err(ApiError::not_found(format!(
            "no persona {id}: not in the database, nothing at {}",
            state.sources.describe(&id)
        )));
    }
    let body: IngestBody = if body.iter().all(u8::is_ascii_whitespace) {
        IngestBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "body: {e} (expected {{\"kinds\": [...], \"force\": false}})"
            ))
        })?
    };
    let mut kinds = body.kinds.unwrap_or_else(|| Kind::ALL.to_vec());
    kinds.sort_by_key(|k| Kind::ALL.iter().position(|x| x == k));
    kinds.dedup();
    if kinds.is_empty() {
        return Err(ApiError::bad_request("kinds must name at least one kind"));
    }
    let mut redis = state.broker.connection();
    let sent = enqueue_ingestion(
        &state.db,
        &mut redis,
        &state.settings,
        &id,
        &kinds,
        body.force,
    )
    .await
    .map_err(|e| ApiError::unavailable("enqueueing", e))?;
    Ok(HttpResponse::Accepted().json(sent))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLettersQuery {
    limit: Option<String>,
}

async fn dead_letters(
    state: web::Data<AppState>,
    query: web::Query<DeadLettersQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(query.limit.as_deref())?;
    let (total, entries) = state
        .broker
        .dead_letters(limit as usize)
        .await
        .map_err(|e| ApiError::unavailable("redis", e))?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|raw| serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw.as_str())))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "total": total, "dead_letters": entries })))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    terminate: bool,
}

/// Celery's `revoke` of one task, broadcast to every worker; 202 with their replies.
async fn revoke(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{id:?} is not a task id")));
    }
    let body: RevokeBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("body: {e} (expected {{\"terminate\": true}})"))
        })?
    };
    let client = crate::urls::redis::client(&state.settings.redis.url)
        .map_err(|e| ApiError::unavailable("redis", e))?;
    let replies = crate::trigger::control::revoke(
        &client,
        std::slice::from_ref(&id),
        body.terminate,
        std::time::Duration::from_secs(1),
    )
    .await
    .map_err(|e| ApiError::unavailable("redis", e))?;
    Ok(HttpResponse::Accepted()
        .json(json!({ "task_id": id, "terminate": body.terminate, "replies": replies })))
}
