//! The daemon's HTTP server (`http.listen`, loopback by default; empty turns it off): health and
//! readiness for orchestrators, Prometheus metrics, a JSON API over jobs, personas, tasks,
//! workers, the broker and dead letters, and a dashboard at `/`, with an optional bearer token
//! (`http.token`) on everything but `/health` and the dashboard's page.
//!
//! The server runs beside the consumer in `persona-ingest run` and stops with it: the handle
//! `start` answers is stopped explicitly at shutdown.

mod api;
mod dashboard;
mod error;
mod probes;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use sea_orm::DatabaseConnection;

use crate::actors::supervisor::Supervisor;
use crate::actors::Observe;
use crate::config::Settings;
use crate::monitor::Monitor;
use crate::sources::SourceFactory;
use crate::store::VectorStore;
use crate::trigger::broker::Broker;
use crate::trigger::redis_trigger::TriggerCounters;
use crate::trigger::results::ResultBackend;

pub use error::{parse_limit, ApiError};

/// What the handlers work with.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub store: Arc<dyn VectorStore>,
    /// The model and vector size the engine writes (what an audit expects of a collection).
    pub model: String,
    pub dimension: usize,
    pub sources: Arc<dyn SourceFactory>,
    pub broker: Arc<Broker>,
    pub supervisor: actix::Addr<Supervisor>,
    /// This process's trigger, for its counters (tasks running, ready, held for their eta).
    pub trigger: Option<actix::Recipient<Observe<TriggerCounters>>>,
    /// Every task and worker on the broker as Celery's events tell them, and the charts'
    /// history (the dashboard's task, worker and chart views).
    pub monitor: Option<actix::Addr<Monitor>>,
    /// The result backend, for a task's result as Celery stores it.
    pub results: Option<Arc<ResultBackend>>,
    /// Turns true as the daemon stops: live streams end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Binds `listen` and starts serving; the handle stops the server.
pub fn start(listen: &str, state: AppState) -> std::io::Result<ServerHandle> {
    let token = state.settings.http.token.clone().map(Arc::new);
    let server = HttpServer::new(move || {
        let token = token.clone();
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
            )
            .wrap(from_fn(move |req, next| {
                let token = token.clone();
                authorize(token, req, next)
            }))
            .configure(probes::routes)
            .configure(api::routes)
            .configure(dashboard::routes)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::not_found("no such endpoint"))
            }))
    })
    // One worker thread: the engine's actors need the other core more.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(listen)?
    .run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("the HTTP server stopped: {e}");
        }
    });
    Ok(handle)
}

/// With a token configured, every endpoint but `/health` wants `Authorization: Bearer <token>`.
async fn authorize(
    token: Option<Arc<String>>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if cross_site_write(&req) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "a request that changes something must come from this server's own page (its Origin \
             names another site)",
        )
        .into());
    }
    if let Some(token) = token {
        // The scheme is case-insensitive (RFC 9110).
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // The dashboard's page holds no data; its API calls carry the token.
        let open = matches!(req.path(), "/health" | "/");
        if !open && given != Some(token.as_str()) {
            return Err(ApiError::unauthorized().into());
        }
    }
    next.call(req).await
}

/// A request that is not a read, sent by a browser from a page of another site: without a token
/// (the loopback default) any page the operator opens could otherwise post an ingestion or a
/// terminate to the daemon (a form post needs no CORS preflight). Clients that are not browsers
/// send no `Origin`, and pass.
fn cross_site_write(req: &ServiceRequest) -> bool {
    use actix_web::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site").is_some_and(|site| site == "cross-site" || site == "same-site") {
        return true;
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin == "null" || !origin_host.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        _ => false,
    }
}
