//! A Redis Pub/Sub subscription that lasts: every message PUBLISHed on a channel (or on the
//! channels matching a pattern) handed to `deliver`, subscribing again after a lost connection
//! with the common backoff, until `stop` turns true. The pidbox hears remote control this way,
//! the dashboard's `Monitor` hears Celery's events.

use std::time::Duration;

use tokio::sync::watch;

/// What to subscribe to.
#[derive(Clone, Debug)]
pub enum Topic {
    /// `SUBSCRIBE channel`
    Channel(String),
    /// `PSUBSCRIBE pattern`
    Pattern(String),
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Channel(c) | Self::Pattern(c) => f.write_str(c),
        }
    }
}

/// Hands every message's payload to `deliver`, subscribing again after a lost connection,
/// until `stop` turns true.
pub async fn forward(
    client: redis::Client,
    topic: Topic,
    deliver: impl Fn(Vec<u8>),
    mut stop: watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let mut attempt = 0;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            match &topic {
                Topic::Channel(channel) => pubsub.subscribe(channel).await?,
                Topic::Pattern(pattern) => pubsub.psubscribe(pattern).await?,
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                attempt = 0;
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => deliver(message.get_payload_bytes().to_vec()),
                            None => break,
                        },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                tracing::warn!("the subscription to {topic} was lost; subscribing again");
            }
            Err(e) => tracing::warn!("subscribing to {topic} failed: {e}"),
        }
        attempt += 1;
        let wait = crate::retry::jittered_backoff(
            Duration::from_millis(200),
            attempt,
            Duration::from_secs(5),
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
