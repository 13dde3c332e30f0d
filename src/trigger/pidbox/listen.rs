//! The pidbox's subscription: every command PUBLISHed on the broker's `celery.pidbox` channel
//! forwarded to the Pidbox actor, subscribing again after a lost connection.

use std::time::Duration;

use actix::Recipient;
use tokio::sync::watch;

use super::ControlMessage;

/// Forwards every control message PUBLISHed on `channel` of the Redis at `url` to `pidbox`,
/// subscribing again after a lost connection, until `stop` turns true.
pub async fn listen(
    client: redis::Client,
    channel: String,
    pidbox: Recipient<ControlMessage>,
    mut stop: watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let mut attempt = 0;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                attempt = 0;
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => pidbox.do_send(ControlMessage(message.get_payload_bytes().to_vec())),
                            None => break,
                        },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                tracing::warn!("pidbox: the subscription to {channel} was lost; subscribing again");
            }
            Err(e) => tracing::warn!("pidbox: subscribing to {channel} failed: {e}"),
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
