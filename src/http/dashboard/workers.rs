//! The dashboard's workers: `GET /api/workers`, every worker heard of on the broker (Celery's
//! own and this engine's daemons) with name, version, host, pid, concurrency, queues, running
//! and processed tasks and its task events by outcome (from the Monitor), and, for this
//! engine's daemons, the lease and in-flight messages the broker holds for it.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::super::{ApiError, AppState};
use super::tasks::{mailbox, monitor};
use crate::monitor::ListWorkers;
use crate::trigger::broker::WorkerState;

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/api/workers", web::get().to(workers));
}

/// Whether the broker's worker id (`host:pid:uuid`) is the daemon named `node` (`name@host`)
/// with process `pid`: for daemons whose events do not carry their worker id (older ones).
fn same_daemon(broker_id: &str, node: &str, pid: Option<u64>) -> bool {
    let mut parts = broker_id.split(':');
    let (Some(host), Some(id_pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let host_matches = node.rsplit_once('@').is_none_or(|(_, h)| h == host);
    pid.is_some_and(|p| p.to_string() == id_pid) && host_matches
}

async fn workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let heard = monitor(&state)?.send(ListWorkers).await.map_err(mailbox)?;
    // The broker's side is shown when it can be read; the events' side stands without it.
    let (leases, broker_error) = match state.broker.overview(&state.settings.worker.queues).await {
        Ok(overview) => (overview.workers, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut matched = vec![false; leases.len()];
    let mut workers: Vec<Value> = heard
        .iter()
        .map(|(worker, alive)| {
            let lease = leases.iter().position(|l| {
                worker.worker_id.as_deref() == Some(l.worker.as_str())
                    || worker.worker_id.is_none()
                        && same_daemon(&l.worker, &worker.hostname, worker.pid)
            });
            let lease: Option<&WorkerState> = lease.map(|i| {
                matched[i] = true;
                &leases[i]
            });
            let host = worker.hostname.rsplit_once('@').map(|(_, h)| h);
            let mut value = json!(worker);
            value["alive"] = json!(alive);
            value["host"] = json!(host);
            value["worker_id"] = json!(lease.map(|l| &l.worker).or(worker.worker_id.as_ref()));
            value["lease_left_ms"] = json!(lease.and_then(|l| l.lease_left_ms));
            value["in_flight"] = json!(lease.map_or(0, |l| l.in_flight.len()));
            value
        })
        .collect();
    // Daemons the broker knows but whose events were not heard (events off, or just started).
    for (lease, _) in leases.iter().zip(&matched).filter(|(_, m)| !**m) {
        workers.push(json!({
            "hostname": lease.worker,
            "worker_id": lease.worker,
            "host": lease.worker.split(':').next(),
            "alive": lease.lease_left_ms.is_some(),
            "lease_left_ms": lease.lease_left_ms,
            "in_flight": lease.in_flight.len(),
            "queues": [],
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "workers": workers, "broker_error": broker_error })))
}

#[cfg(test)]
mod tests {
    use super::same_daemon;

    #[test]
    fn a_lease_is_matched_to_its_daemon_by_host_and_pid() {
        assert!(same_daemon(
            "box:42:ab12",
            "persona-ingest.42@box",
            Some(42)
        ));
        assert!(same_daemon("box:42:ab12", "custom-name", Some(42)));
        assert!(!same_daemon(
            "box:42:ab12",
            "persona-ingest.42@other",
            Some(42)
        ));
        assert!(!same_daemon(
            "box:42:ab12",
            "persona-ingest.43@box",
            Some(43)
        ));
        assert!(!same_daemon("box:42:ab12", "celery@box", None));
    }
}
