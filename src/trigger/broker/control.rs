//! The broker's side of remote control: revoked task ids kept for every worker (a sorted set
//! scored by when each is forgotten), and replies delivered through kombu's bindings.

use std::time::Duration;

use async_trait::async_trait;

use super::Broker;
use crate::trigger::ports::{BrokerError, ControlReplies, Revocations};

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[async_trait]
impl Revocations for Broker {
    async fn revoke(&self, task_ids: &[String], keep: Duration) -> Result<(), BrokerError> {
        if task_ids.is_empty() {
            return Ok(());
        }
        let now = epoch_secs();
        let until = now + keep.as_secs_f64();
        let mut con = self.con.clone();
        let mut add = redis::cmd("ZADD");
        add.arg(self.revoked_key());
        for id in task_ids {
            add.arg(until).arg(id);
        }
        redis::pipe()
            .add_command(add)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.revoked_key())
            .arg("-inf")
            .arg(now)
            .ignore()
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    async fn is_revoked(&self, task_id: &str) -> Result<bool, BrokerError> {
        let mut con = self.con.clone();
        let until: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.revoked_key())
            .arg(task_id)
            .query_async(&mut con)
            .await?;
        Ok(until.is_some_and(|until| until > epoch_secs()))
    }

    async fn revoked(&self) -> Result<Vec<String>, BrokerError> {
        let mut con = self.con.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.revoked_key())
            .arg(epoch_secs())
            .arg("+inf")
            .query_async(&mut con)
            .await?;
        Ok(ids)
    }
}

/// kombu's separator in binding entries (`routing_key`, `pattern`, `queue`).
const BINDING_SEP: &str = "\x06\x16";

#[async_trait]
impl ControlReplies for Broker {
    async fn reply(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &[u8],
    ) -> Result<(), BrokerError> {
        let mut con = self.con.clone();
        let bindings: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(format!("_kombu.binding.{exchange}"))
            .query_async(&mut con)
            .await?;
        for binding in bindings {
            let binding = String::from_utf8_lossy(&binding);
            let mut parts = binding.split(BINDING_SEP);
            let (Some(key), _, Some(queue)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if key == routing_key {
                redis::cmd("LPUSH")
                    .arg(queue)
                    .arg(message)
                    .query_async::<()>(&mut con)
                    .await?;
            }
        }
        Ok(())
    }
}
