//! Remote control from this side, as Celery's client (`app.control`) sends it: a command
//! broadcast on the pidbox to every worker on the broker (Celery's and this engine's alike), and
//! the replies collected for a while. `persona-ingest revoke` and `POST /api/tasks/{id}/revoke`
//! send their revokes this way, so that every daemon and Celery worker on the Redis hears them.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use redis::RedisError;
use serde_json::{json, Value};
use uuid::Uuid;

/// The exchange replies come back on (kombu's `reply.{namespace}.pidbox`).
const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// Broadcasts `method(arguments)` and answers the replies that came within `timeout`, each
/// `{node name: reply}`.
pub async fn broadcast(
    client: &redis::Client,
    method: &str,
    arguments: Value,
    timeout: Duration,
) -> Result<Vec<Value>, RedisError> {
    let db = client.get_connection_info().redis_settings().db();
    // BRPOP blocks for up to `timeout`: the connection must wait longer than that for answers.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(timeout + Duration::from_secs(5)));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let oid = Uuid::new_v4().to_string();
    let queue = format!("{oid}.{REPLY_EXCHANGE}");
    let binding = format!("{oid}\x06\x16\x06\x16{queue}");
    let bindings = format!("_kombu.binding.{REPLY_EXCHANGE}");
    let ticket = Uuid::new_v4().to_string();
    redis::cmd("SADD")
        .arg(&bindings)
        .arg(&binding)
        .query_async::<()>(&mut con)
        .await?;
    let body = json!({
        "method": method, "arguments": arguments, "destination": null, "pattern": null,
        "matcher": null, "ticket": ticket,
        "reply_to": { "exchange": REPLY_EXCHANGE, "routing_key": oid },
    });
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        + timeout.as_secs_f64();
    let message = json!({
        "body": BASE64.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": { "clock": 1, "expires": expires },
        "properties": {
            "delivery_mode": 2,
            "delivery_info": { "exchange": "celery.pidbox", "routing_key": "" },
            "priority": 0, "body_encoding": "base64", "delivery_tag": Uuid::new_v4().to_string(),
        },
    });
    redis::cmd("PUBLISH")
        .arg(format!("/{db}.celery.pidbox"))
        .arg(message.to_string())
        .query_async::<()>(&mut con)
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut replies = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
            .arg(&queue)
            .arg(left.as_secs_f64().max(0.01))
            .query_async(&mut con)
            .await?;
        let Some((_, raw)) = popped else { break };
        let reply = serde_json::from_slice::<Value>(&raw)
            .ok()
            .and_then(|envelope| {
                if envelope.pointer("/headers/ticket").and_then(Value::as_str) != Some(&ticket) {
                    return None;
                }
                let body = BASE64.decode(envelope.get("body")?.as_str()?).ok()?;
                serde_json::from_slice::<Value>(&body).ok()
            });
        replies.extend(reply);
    }
    redis::pipe()
        .cmd("SREM")
        .arg(&bindings)
        .arg(&binding)
        .ignore()
        .cmd("DEL")
        .arg(&queue)
        .ignore()
        .query_async::<()>(&mut con)
        .await?;
    Ok(replies)
}

/// Revokes tasks on every worker (Celery's `app.control.revoke`), answering the replies.
pub async fn revoke(
    client: &redis::Client,
    task_ids: &[String],
    terminate: bool,
    timeout: Duration,
) -> Result<Vec<Value>, RedisError> {
    let arguments = json!({ "task_id": task_ids, "terminate": terminate, "signal": "SIGTERM" });
    broadcast(client, "revoke", arguments, timeout).await
}
