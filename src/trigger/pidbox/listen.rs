//! The pidbox's subscription: every command PUBLISHed on the broker's `celery.pidbox` channel
//! forwarded to the Pidbox actor, subscribing again after a lost connection.

use actix::Recipient;
use tokio::sync::watch;

use super::ControlMessage;
use crate::trigger::subscription::{forward, Topic};

/// Forwards every control message PUBLISHed on `channel` of the Redis at `url` to `pidbox`,
/// subscribing again after a lost connection, until `stop` turns true.
pub async fn listen(
    client: redis::Client,
    channel: String,
    pidbox: Recipient<ControlMessage>,
    stop: watch::Receiver<bool>,
) {
    let deliver = |bytes| pidbox.do_send(ControlMessage(bytes));
    forward(client, Topic::Channel(channel), deliver, stop).await;
}
