//! The dashboard's personas: `GET /api/personas` (the personas with the latest job of each kind) and
//! `GET /api/personas/{id}/runs` (a persona's page: every run, not only the latest, with what
//! each job did; the records each of its collections holds now; its failures as the job rows
//! tell them, naming the file and line). Ingesting again is the API's
//! `POST /api/personas/{id}/ingest`.

use actix_web::{web, HttpResponse};
use entities::ingestion_job::Model as Job;
use serde_json::{json, Value};

use super::super::{ApiError, AppState};
use crate::{jobs, JobStatus, Kind, PersonaId};

/// Jobs made within this many seconds of each other, of different kinds, are one run (rows
/// the engine makes share one timestamp; the web app's may differ a little).
const SAME_RUN_SECONDS: i64 = 2;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/personas", web::get().to(personas))
        .route("/api/personas/{id}/runs", web::get().to(runs));
}

fn database(e: sea_orm::DbErr) -> ApiError {
    ApiError::unavailable("database", e)
}

pub(super) fn seconds(job: &Job) -> Option<f64> {
    let (started, ended) = (job.started_at?, job.completed_at?);
    Some((ended - started).num_milliseconds() as f64 / 1000.0)
}

/// A persona's jobs grouped into runs, newest first.
pub(super) fn group_runs(mut all: Vec<Job>) -> Vec<Vec<Job>> {
    all.sort_by_key(|j| std::cmp::Reverse(j.created_at));
    let mut runs: Vec<Vec<Job>> = Vec::new();
    for job in all {
        let joins = runs.last().is_some_and(|run| {
            let first = &run[0];
            (first.created_at - job.created_at).num_seconds().abs() <= SAME_RUN_SECONDS
                && run.iter().all(|j| j.kind != job.kind)
        });
        match runs.last_mut() {
            Some(run) if joins => run.push(job),
            _ => runs.push(vec![job]),
        }
    }
    for run in &mut runs {
        run.sort_by_key(|j| Kind::ALL.iter().position(|k| *k == j.kind));
    }
    runs
}

/// A job row as the dashboard's views show it.
pub(super) fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id, "persona": j.persona_id, "kind": j.kind, "status": j.status, "progress": j.progress,
        "vectors": j.total_vectors, "files_read": j.files_read, "files_skipped": j.files_skipped,
        "embedded": j.chunks_embedded, "unchanged": j.chunks_unchanged,
        "deleted": j.chunks_deleted, "tokens": j.tokens_embedded, "seconds": seconds(j),
        "error": j.error_message, "warning": j.warning_message, "task_id": j.task_id,
        "attempts": j.attempts, "started_at": j.started_at, "completed_at": j.completed_at,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonasQuery {
    /// A part of the persona's id.
    q: Option<String>,
    limit: Option<String>,
}

/// The most personas one answer lists (the page shows the most recently updated).
const MAX_LIMIT: usize = 1000;

async fn personas(
    state: web::Data<AppState>,
    query: web::Query<PersonasQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::super::parse_limit(query.limit.as_deref(), 200, MAX_LIMIT as u64)? as usize;
    let db = &state.db;
    let mut latest_by_persona: std::collections::BTreeMap<String, Vec<Job>> = Default::default();
    for job in jobs::latest_jobs(db).await.map_err(database)? {
        latest_by_persona
            .entry(job.persona_id.clone())
            .or_default()
            .push(job);
    }
    let mut all = jobs::personas(db).await.map_err(database)?;
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        all.retain(|p| p.id.contains(q));
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.updated_at));
    let total = all.len();
    all.truncate(limit);
    let personas: Vec<Value> = all
        .iter()
        .map(|p| {
            let latest = latest_by_persona
                .get(&p.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            json!({
                "id": p.id, "name": p.name, "status": p.status, "error": p.error_message,
                "updated_at": p.updated_at,
                "vectors": latest.iter().map(|j| j.total_vectors).sum::<i64>(),
                "tokens": latest.iter().map(|j| j.tokens_embedded).sum::<i64>(),
                "jobs": latest.iter().map(job_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "total": total, "personas": personas })))
}

async fn runs(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = PersonaId::parse(&id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let persona = jobs::persona(&state.db, id.as_str())
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::not_found(format!("no persona {id}")))?;
    let all = jobs::jobs_of_persona(&state.db, id.as_str())
        .await
        .map_err(database)?;
    let failures: Vec<Value> = all
        .iter()
        .filter(|j| j.status == JobStatus::Failed)
        .map(|j| json!({ "job": j.id, "kind": j.kind, "at": j.completed_at, "error": j.error_message }))
        .collect();
    let runs: Vec<Value> = group_runs(all)
        .iter()
        .map(|run| {
            json!({
                "created_at": run[0].created_at,
                "jobs": run.iter().map(job_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    // What each collection holds now, as the store answers (not what the rows say).
    let mut collections = Vec::new();
    for kind in Kind::ALL {
        let name = state.settings.collection_name(id.as_str(), kind.as_str());
        let records = match state.store.collection(&name).await {
            Ok(Some(info)) => match state.store.count(&info).await {
                Ok(n) => json!(n),
                Err(e) => json!(format!("unreadable: {e}")),
            },
            Ok(None) => Value::Null,
            Err(e) => json!(format!("unreadable: {e}")),
        };
        collections.push(json!({ "kind": kind, "collection": name, "records": records }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "persona": persona,
        "runs": runs,
        "collections": collections,
        "failures": failures,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: Kind, seconds: i64) -> Job {
        let at = chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap();
        Job {
            id: uuid::Uuid::new_v4(),
            persona_id: "p".into(),
            kind,
            status: JobStatus::Completed,
            progress: 100,
            total_vectors: 0,
            error_message: None,
            warning_message: None,
            task_id: None,
            attempts: 1,
            created_at: at,
            started_at: None,
            completed_at: None,
            files_read: 0,
            files_skipped: 0,
            chunks_embedded: 0,
            chunks_unchanged: 0,
            chunks_deleted: 0,
            tokens_embedded: 0,
        }
    }

    #[test]
    fn jobs_made_together_are_one_run_and_a_repeated_kind_starts_another() {
        let jobs = vec![
            job(Kind::Works, 0),
            job(Kind::Quotes, 0),
            job(Kind::Profile, 1),
            // A works-only run a little later, and another much later.
            job(Kind::Works, 5),
            job(Kind::Works, 100),
        ];
        let runs = group_runs(jobs);
        let kinds: Vec<Vec<Kind>> = runs
            .iter()
            .map(|r| r.iter().map(|j| j.kind).collect())
            .collect();
        assert_eq!(
            kinds,
            vec![
                vec![Kind::Works],
                vec![Kind::Works],
                vec![Kind::Profile, Kind::Works, Kind::Quotes],
            ]
        );
    }
}
