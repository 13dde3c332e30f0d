//! The dead letters as an operator sees them on the dashboard: each entry with an id (a hash of
//! the entry as stored, so the id names one entry whoever else touches the list), its reason,
//! where it came from, and a preview of its raw bytes; and the two things to do with one:
//! requeue its message at the end of its queue's line, or drop it. Both are one Lua step
//! (`lua/settle_dead_letter.lua`) and are logged.

use std::sync::LazyLock;

use base64::Engine as _;
use redis::{RedisError, Script};
use serde::Serialize;
use serde_json::Value;

use super::{Broker, BASE64};

static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/settle_dead_letter.lua")));

/// How many bytes of a message the preview shows.
const PREVIEW_BYTES: usize = 240;

/// One dead letter, for reading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    /// xxh3-64 of the entry as stored, in hex.
    pub id: String,
    pub reason: Option<String>,
    /// The list it was taken from, where a requeue sends it.
    pub queue: Option<String>,
    pub worker: Option<String>,
    pub at: Option<String>,
    /// The message's size in bytes.
    pub size: usize,
    /// Its first bytes as text, with what is not UTF-8 shown as U+FFFD.
    pub preview: String,
    pub utf8: bool,
}

/// What to do with a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Send its message again, at the end of its queue's line.
    Requeue,
    Drop,
}

fn entry_id(entry: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(entry))
}

/// The message an entry holds: its `raw` bytes (base64), or its text for entries without them.
fn message_of(entry: &Value) -> Option<Vec<u8>> {
    if let Some(raw) = entry.get("raw").and_then(Value::as_str) {
        return BASE64.decode(raw).ok();
    }
    entry
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.as_bytes().to_vec())
}

fn read(entry: &[u8]) -> DeadLetter {
    let parsed: Value = serde_json::from_slice(entry).unwrap_or(Value::Null);
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_owned);
    // An entry someone else wrote, not of our shape, is shown as it is.
    let message = message_of(&parsed).unwrap_or_else(|| entry.to_vec());
    let head = &message[..message.len().min(PREVIEW_BYTES)];
    DeadLetter {
        id: entry_id(entry),
        reason: text("reason"),
        queue: text("queue"),
        worker: text("worker"),
        at: text("at"),
        size: message.len(),
        preview: String::from_utf8_lossy(head).into_owned(),
        utf8: std::str::from_utf8(&message).is_ok(),
    }
}

impl Broker {
    /// How many messages are dead-lettered, and the newest `limit` of them.
    pub async fn dead_letter_page(
        &self,
        limit: usize,
    ) -> Result<(u64, Vec<DeadLetter>), RedisError> {
        let (total, newest) = self.newest_dead_letters(limit).await?;
        Ok((total, newest.iter().map(|e| read(e)).collect()))
    }

    /// Requeues or drops the dead letter `id`; answers the list its message went to (requeued)
    /// or `""` (dropped), or `None` when no entry has that id (already settled by another).
    pub async fn settle_dead_letter(
        &self,
        id: &str,
        settle: Settle,
    ) -> Result<Option<String>, RedisError> {
        let mut con = self.con.clone();
        let key = self.dead_letters_key();
        let entries: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await?;
        let Some(entry) = entries.into_iter().find(|e| entry_id(e) == id) else {
            return Ok(None);
        };
        let parsed: Value = serde_json::from_slice(&entry).unwrap_or(Value::Null);
        let (queue, message) = match settle {
            Settle::Drop => (String::new(), Vec::new()),
            Settle::Requeue => (
                parsed
                    .get("queue")
                    .and_then(Value::as_str)
                    .filter(|q| !q.is_empty())
                    .unwrap_or(&self.default_queue)
                    .to_owned(),
                message_of(&parsed).unwrap_or_else(|| entry.clone()),
            ),
        };
        let settled: i64 = SETTLE
            .key(&key)
            .key(if queue.is_empty() { &key } else { &queue })
            .arg(&entry)
            .arg(&message)
            .invoke_async(&mut con)
            .await?;
        if settled == 0 {
            return Ok(None);
        }
        let reason = parsed.get("reason").and_then(Value::as_str).unwrap_or("?");
        match settle {
            Settle::Requeue => tracing::info!(
                "dead letter {id} ({reason}) requeued to {queue:?} from the dashboard"
            ),
            Settle::Drop => {
                tracing::info!("dead letter {id} ({reason}) dropped from the dashboard")
            }
        }
        Ok(Some(queue))
    }
}
