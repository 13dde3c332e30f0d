//! Celery's Redis result backend, written the way a Celery worker writes it, so that the web
//! app's `AsyncResult(id).status` and `.get()` work unchanged: the state under
//! `celery-task-meta-<id>` with an expiry, and PUBLISHed on that same name, which is what
//! `.get()` waits on. A SUCCESS is never overwritten (a redelivered task that runs again
//! leaves the first answer in place).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use async_trait::async_trait;

use super::celery::{result_key, result_value, ResultMeta, TaskState};
use super::ports::{BrokerError, ResultStore};

pub struct ResultBackend {
    con: ConnectionManager,
    expires: Duration,
    store: Script,
}

impl ResultBackend {
    pub async fn connect(url: &str, expires: Duration) -> Result<Self, RedisError> {
        let client = crate::urls::redis::client(url).map_err(|e| {
            RedisError::from((redis::ErrorKind::InvalidClientConfig, "results.url", e))
        })?;
        let con = ConnectionManager::new(client).await?;
        Ok(Self {
            con,
            expires,
            store: Script::new(include_str!("lua/store_result.lua")),
        })
    }
}

impl ResultBackend {
    /// A task's result as stored (`celery-task-meta-<id>`, JSON), if there is one.
    pub async fn meta(&self, task_id: &str) -> Result<Option<serde_json::Value>, RedisError> {
        let mut con = self.con.clone();
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(result_key(task_id))
            .query_async(&mut con)
            .await?;
        Ok(stored.map(|bytes| {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into())
        }))
    }
}

#[async_trait]
impl ResultStore for ResultBackend {
    async fn store(
        &self,
        task_id: &str,
        state: &TaskState,
        meta: &ResultMeta,
    ) -> Result<bool, BrokerError> {
        let value = result_value(task_id, state, meta, chrono::Utc::now());
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

    /// One pipeline of the script's EVALSHAs. A Redis that does not know the script (first use,
    /// or a `SCRIPT FLUSH`) refuses each of them alike, so nothing was stored: it is loaded and
    /// the pipeline sent again.
    async fn store_all(
        &self,
        states: &[(String, TaskState, ResultMeta)],
    ) -> Result<Vec<bool>, BrokerError> {
        match states {
            [] => return Ok(Vec::new()),
            [(task_id, state, meta)] => return Ok(vec![self.store(task_id, state, meta).await?]),
            _ => {}
        }
        let now = chrono::Utc::now();
        let invocations: Vec<_> = states
            .iter()
            .map(|(task_id, state, meta)| {
                let mut invocation = self.store.key(result_key(task_id));
                invocation
                    .arg(result_value(task_id, state, meta, now))
                    .arg(self.expires.as_secs().max(1));
                invocation
            })
            .collect();
        let mut con = self.con.clone();
        let mut loaded = false;
        loop {
            let mut pipe = redis::pipe();
            for invocation in &invocations {
                pipe.invoke_script(invocation);
            }
            match pipe.query_async::<Vec<i64>>(&mut con).await {
                Ok(stored) => return Ok(stored.into_iter().map(|s| s == 1).collect()),
                Err(e)
                    if !loaded
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let _: String = self.store.load_async(&mut con).await?;
                    loaded = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
