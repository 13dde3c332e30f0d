//! The Redis side of delivery against the real Redis server, each test with queues and keys of
//! its own (a unique name prefix), deleted afterwards.

use std::collections::HashSet;
use std::time::Duration;

use persona_ingest::trigger::broker::Broker;
use persona_ingest::trigger::celery::{encode, priority_queue};
use persona_ingest::trigger::ports::Queue;
use serde_json::{Map, Value};

fn redis_url() -> String {
    std::env::var("PERSONA_INGEST_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Keys of its own, deleted when dropped.
struct Names {
    prefix: String,
}

impl Names {
    fn new() -> Self {
        Self {
            prefix: format!("pi-test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn queue(&self) -> String {
        format!("{}-q", self.prefix)
    }

    async fn broker(&self) -> Broker {
        Broker::connect(&redis_url(), &self.prefix, &[self.queue()])
            .await
            .unwrap()
    }

    async fn push(&self, priority: u8, n: usize) -> Vec<String> {
        let mut con = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut sent = Vec::new();
        for i in 0..n {
            let mut raw: Value = serde_json::from_str(&encode(
                "workers.tasks.ingest_persona_quotes",
                &format!("{}-{priority}-{i}", self.prefix),
                &[],
                &Map::new(),
                &self.queue(),
                "test@host",
            ))
            .unwrap();
            raw["properties"]["priority"] = priority.into();
            let raw = raw.to_string();
            redis::cmd("LPUSH")
                .arg(priority_queue(&self.queue(), priority))
                .arg(&raw)
                .query_async::<()>(&mut con)
                .await
                .unwrap();
            sent.push(raw);
        }
        sent
    }

    async fn len(&self, key: &str) -> usize {
        let mut con = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap()
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        if let Ok(client) = redis::Client::open(redis_url()) {
            if let Ok(mut con) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query(&mut con)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut con);
                }
            }
        }
    }
}

#[tokio::test]
async fn messages_are_served_oldest_first_and_by_priority_into_the_inflight_list() {
    let names = Names::new();
    let broker = names.broker().await;
    let low = names.push(9, 2).await;
    let normal = names.push(0, 2).await;
    let mut got = Vec::new();
    while let Some(delivery) = broker
        .fetch("w1", Duration::from_millis(100))
        .await
        .unwrap()
    {
        got.push(String::from_utf8(delivery.raw).unwrap());
    }
    assert_eq!(
        got,
        [
            normal[0].clone(),
            normal[1].clone(),
            low[0].clone(),
            low[1].clone()
        ]
    );
    assert_eq!(
        names.len(&broker.inflight_key("w1")).await,
        4,
        "held until acknowledged"
    );
}

#[tokio::test]
async fn acknowledged_and_dead_lettered_messages_leave_the_inflight_list() {
    let names = Names::new();
    let broker = names.broker().await;
    names.push(0, 2).await;
    let first = broker
        .fetch("w1", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    let second = broker
        .fetch("w1", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    broker.ack("w1", &first).await.unwrap();
    broker
        .dead_letter("w1", &second, "unknown task \"x\"")
        .await
        .unwrap();
    assert_eq!(names.len(&broker.inflight_key("w1")).await, 0);
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dead: Vec<String> = redis::cmd("LRANGE")
        .arg(broker.dead_letters_key())
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    let entry: Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(entry["reason"], "unknown task \"x\"");
    assert_eq!(entry["message"].as_str().unwrap().as_bytes(), second.raw);
}

#[tokio::test]
async fn a_dead_workers_messages_go_back_to_the_head_of_their_queues() {
    let names = Names::new();
    let broker = names.broker().await;
    let sent = names.push(0, 3).await;
    let urgent = names.push(6, 1).await;
    broker
        .renew_lease("dead", Duration::from_millis(50))
        .await
        .unwrap();
    for _ in 0..3 {
        broker
            .fetch("dead", Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap();
    }
    let newer = names.push(0, 1).await;
    broker
        .renew_lease("alive", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        broker.requeue_orphans().await.unwrap(),
        0,
        "the lease still holds"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        broker.requeue_orphans().await.unwrap(),
        3,
        "the dead worker's three"
    );
    assert_eq!(names.len(&broker.inflight_key("dead")).await, 0);
    let mut order = Vec::new();
    while let Some(delivery) = broker
        .fetch("alive", Duration::from_millis(100))
        .await
        .unwrap()
    {
        order.push(String::from_utf8(delivery.raw).unwrap());
    }
    // The requeued ones first, oldest first, then what came meanwhile; priority 6 after all 0s.
    let expected: Vec<String> = [&sent[..], &newer[..], &urgent[..]].concat();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn competing_workers_never_take_the_same_message() {
    let names = Names::new();
    let sent: HashSet<String> = names.push(0, 200).await.into_iter().collect();
    let mut workers = Vec::new();
    for w in 0..4 {
        let broker = names.broker().await;
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(d) = broker
                .fetch(&format!("w{w}"), Duration::from_millis(100))
                .await
                .unwrap()
            {
                got.push(String::from_utf8(d.raw).unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    assert_eq!(all.len(), 200);
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), sent);
}

#[tokio::test]
async fn a_dead_letter_is_requeued_with_its_bytes_or_dropped_once_by_its_id() {
    use persona_ingest::trigger::broker::Settle;
    let names = Names::new();
    let broker = names.broker().await;
    let sent = names.push(3, 1).await;
    // A second message that is not UTF-8, as a producer gone wrong sends it.
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("LPUSH")
        .arg(names.queue())
        .arg(&b"\xff\xfe\x00 broken"[..])
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    for reason in ["unknown task", "not a JSON envelope"] {
        let delivery = broker
            .fetch("w1", Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap();
        broker.dead_letter("w1", &delivery, reason).await.unwrap();
    }
    let (total, letters) = broker.dead_letter_page(10).await.unwrap();
    assert_eq!(total, 2);
    let broken = letters.iter().find(|d| !d.utf8).unwrap();
    assert_eq!(broken.size, 10);
    assert!(broken.preview.ends_with(" broken"), "{broken:?}");
    let good = letters.iter().find(|d| d.utf8).unwrap();
    assert_eq!(
        good.queue.as_deref(),
        Some(priority_queue(&names.queue(), 3).as_str())
    );

    // Requeued: the very bytes, back in the list they came from; once only.
    let queue = broker
        .settle_dead_letter(&good.id, Settle::Requeue)
        .await
        .unwrap();
    assert_eq!(queue, Some(priority_queue(&names.queue(), 3)));
    let back: Vec<String> = redis::cmd("LRANGE")
        .arg(priority_queue(&names.queue(), 3))
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(back, sent);
    assert_eq!(
        broker
            .settle_dead_letter(&good.id, Settle::Requeue)
            .await
            .unwrap(),
        None
    );
    // Dropped: gone, and nothing queued.
    let before = names.len(&names.queue()).await;
    assert_eq!(
        broker
            .settle_dead_letter(&broken.id, Settle::Drop)
            .await
            .unwrap(),
        Some(String::new())
    );
    assert_eq!(names.len(&names.queue()).await, before);
    assert_eq!(broker.dead_letter_page(10).await.unwrap().0, 0);
}
