//! The dashboard's broker: `GET /api/broker` (each served queue with its waiting messages by
//! priority, each worker's in-flight messages with the countdown holding them, the newest dead
//! letters with their reason and a preview of their bytes) and the operator's actions on a dead
//! letter, `POST /api/dead-letters/{id}/requeue` and `.../drop` (404 when it is gone already).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::super::{ApiError, AppState};
use crate::trigger::broker::Settle;

/// How many dead letters the view shows.
const DEAD_LETTERS: usize = 50;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/broker", web::get().to(broker))
        .route(
            "/api/dead-letters/{id}/requeue",
            web::post().to(|s, id| settle(s, id, Settle::Requeue)),
        )
        .route(
            "/api/dead-letters/{id}/drop",
            web::post().to(|s, id| settle(s, id, Settle::Drop)),
        );
}

fn redis(e: redis::RedisError) -> ApiError {
    ApiError::unavailable("redis", e)
}

async fn broker(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let overview = state
        .broker
        .overview(&state.settings.worker.queues)
        .await
        .map_err(redis)?;
    let (total, dead_letters) = state
        .broker
        .dead_letter_page(DEAD_LETTERS)
        .await
        .map_err(redis)?;
    Ok(HttpResponse::Ok().json(json!({
        "queues": overview.queues,
        "workers": overview.workers,
        "dead_letters": { "total": total, "latest": dead_letters },
    })))
}

async fn settle(
    state: web::Data<AppState>,
    id: web::Path<String>,
    settle: Settle,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{id:?} is not a dead letter's id (16 hex digits)"
        )));
    }
    match state
        .broker
        .settle_dead_letter(&id, settle)
        .await
        .map_err(redis)?
    {
        Some(queue) => Ok(HttpResponse::Ok().json(json!({
            "id": id,
            "action": if settle == Settle::Requeue { "requeued" } else { "dropped" },
            "queue": (!queue.is_empty()).then_some(queue),
        }))),
        None => Err(ApiError::not_found(format!(
            "no dead letter {id} (requeued or dropped already?)"
        ))),
    }
}
