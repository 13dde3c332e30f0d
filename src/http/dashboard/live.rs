//! The dashboard's live parts: `GET /api/charts` (the Monitor's short history: records written
//! and embedding calls a second and queue depth over the last 15 minutes, and the runtimes of
//! the jobs that ended in them) and `GET /api/stream`, Server-Sent Events: `task` with a task's
//! new state as its event is heard, and `tick` every second (the page reloads what it shows);
//! the stream ends when the daemon stops, so a browser left open never holds up a shutdown.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::super::{ApiError, AppState};
use super::tasks::{mailbox, monitor};
use crate::monitor::history::WINDOW;
use crate::monitor::{Charts, Subscribe};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/charts", web::get().to(charts))
        .route("/api/stream", web::get().to(stream));
}

async fn charts(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (series, durations) = monitor(&state)?.send(Charts).await.map_err(mailbox)?;
    Ok(HttpResponse::Ok().json(json!({
        "window_seconds": WINDOW.as_secs(),
        "now": crate::monitor::history::unix_now(),
        "series": series,
        "durations": durations,
    })))
}

async fn stream(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let updates = monitor(&state)?.send(Subscribe).await.map_err(mailbox)?;
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let stopping = state.stopping.clone();
    let events = futures::stream::unfold(
        (updates, ticks, stopping, 0u64),
        |(mut updates, mut ticks, mut stopping, n)| async move {
            let chunk = tokio::select! {
                _ = stopping.wait_for(|s| *s) => return None,
                update = updates.recv() => match update {
                    Ok(task) => format!("event: task\ndata: {task}\n\n"),
                    // Too slow a reader missed some: a tick makes it reload.
                    Err(RecvError::Lagged(_)) => format!("event: tick\ndata: {n}\n\n"),
                    Err(RecvError::Closed) => return None,
                },
                _ = ticks.tick() => format!("event: tick\ndata: {n}\n\n"),
            };
            let bytes = web::Bytes::from(chunk);
            Some((
                Ok::<_, actix_web::Error>(bytes),
                (updates, ticks, stopping, n + 1),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}
