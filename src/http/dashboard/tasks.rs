//! The dashboard's tasks: `GET /api/tasks?state=&persona=&worker=&q=&limit=` lists every task
//! the Monitor heard of (top-level and sub-tasks, most recent first); `GET /api/tasks/{id}` is
//! one task's page: its events' timeline, its sub-tasks, its jobs' rows and its result as
//! Celery stores it in the result backend.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{ApiError, AppState};
use crate::jobs;
use crate::monitor::tasks::{TaskFilter, TaskView};
use crate::monitor::{GetTask, ListTasks, Monitor};

const MAX_LIMIT: usize = 1000;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/tasks", web::get().to(list))
        .route("/api/tasks/{id}", web::get().to(task));
}

pub(super) fn monitor(state: &AppState) -> Result<&actix::Addr<Monitor>, ApiError> {
    state.monitor.as_ref().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "tasks and workers are known from Celery events, which this process does not hear",
        )
    })
}

pub(super) fn mailbox(e: actix::MailboxError) -> ApiError {
    ApiError::unavailable("the monitor", e)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksQuery {
    state: Option<String>,
    persona: Option<String>,
    worker: Option<String>,
    q: Option<String>,
    limit: Option<String>,
}

const STATES: [&str; 8] = [
    "PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED",
];

async fn list(
    state: web::Data<AppState>,
    query: web::Query<TasksQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let task_state = given(query.state)
        .map(|s| {
            let upper = s.to_ascii_uppercase();
            STATES
                .contains(&upper.as_str())
                .then_some(upper)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "state {s:?} is not one of {}",
                        STATES.join(", ")
                    ))
                })
        })
        .transpose()?;
    let limit = super::super::parse_limit(query.limit.as_deref(), 100, MAX_LIMIT as u64)? as usize;
    let filter = TaskFilter {
        state: task_state,
        persona: given(query.persona),
        worker: given(query.worker),
        search: given(query.q).map(|q| q.trim().to_owned()),
        limit,
    };
    let (total, tasks) = monitor(&state)?
        .send(ListTasks(filter))
        .await
        .map_err(mailbox)?;
    Ok(HttpResponse::Ok().json(json!({
        "total": total,
        "tasks": tasks.iter().map(TaskView::summary).collect::<Vec<_>>(),
    })))
}

async fn task(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{id:?} is not a task id")));
    }
    let heard = monitor(&state)?
        .send(GetTask(id.clone()))
        .await
        .map_err(mailbox)?;
    let result = match &state.results {
        Some(results) => results
            .meta(&id)
            .await
            .map_err(|e| ApiError::unavailable("the result backend", e))?,
        None => None,
    };
    // An `ingest_full_persona` task's jobs are its sub-tasks': their ids are in its result.
    let mut task_ids = vec![id.clone()];
    if let Some(children) = result.as_ref().and_then(|r| r["result"].as_object()) {
        task_ids.extend(
            children
                .values()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
    }
    if let Some((_, children)) = &heard {
        task_ids.extend(children.iter().map(|c| c.id.clone()));
    }
    task_ids.sort();
    task_ids.dedup();
    let job_rows = jobs::jobs_of_tasks(&state.db, &task_ids)
        .await
        .map_err(|e| ApiError::unavailable("database", e))?;
    if heard.is_none() && result.is_none() && job_rows.is_empty() {
        return Err(ApiError::not_found(format!(
            "no task {id}: no event, result or job row names it"
        )));
    }
    let (task, children) = match heard {
        Some((task, children)) => (Some(task), children),
        None => (None, Vec::new()),
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "task": task,
        "children": children.iter().map(TaskView::summary).collect::<Vec<_>>(),
        "jobs": job_rows,
        "result": result,
    })))
}
