//! Celery's Redis result backend, written the way a Celery worker writes it, so that the web
//! app's `AsyncResult(id).status` and `.get()` work unchanged: the state under
//! `celery-task-meta-<id>` with an expiry, and PUBLISHed on that same name, which is what
//! `.get()` waits on. A SUCCESS is never overwritten (a redelivered task that runs again
//! leaves the first answer in place).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use super::celery::{result_key, result_value, TaskState};

/// SETEX and PUBLISH, unless a SUCCESS is already there. KEYS: the key. ARGV: value, seconds.
const STORE: &str = r#"
local previous = redis.call('GET', KEYS[1])
if previous and string.find(previous, '"status": *"SUCCESS"') then
  return 0
end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

pub struct ResultBackend {
    con: ConnectionManager,
    expires: Duration,
    store: Script,
}

impl ResultBackend {
    pub async fn connect(url: &str, expires: Duration) -> Result<Self, RedisError> {
        let con = ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(Self {
            con,
            expires,
            store: Script::new(STORE),
        })
    }

    /// Records a task's state; answers false when a SUCCESS was there already and stays.
    pub async fn store(&self, task_id: &str, state: &TaskState) -> Result<bool, RedisError> {
        let value = result_value(task_id, state, chrono::Utc::now());
        let mut con = self.con.clone();
        let stored: i64 = self
            .store
            .key(result_key(task_id))
            .arg(value)
            .arg(self.expires.as_secs().max(1))
            .invoke_async(&mut con)
            .await?;
        Ok(stored == 1)
    }
}
