//! Celery's wire format on Redis, as Celery 5 writes it (fixtures in `tests/fixtures/celery`):
//! task messages (`message`: protocol v2 and v1, compressed or not), the calls they make of the
//! engine (`call`), the states of the result backend (`result`), and the names of priority
//! sub-queues and result keys.

mod call;
mod message;
mod outgoing;
mod result;

pub use call::{ingest_call, CallError, IngestCall, TaskNames};
pub use message::{decode, DecodeError, TaskMessage, MAX_BODY_BYTES};
pub use outgoing::{callback_message, encode, encode_with, retry_message, Options};
pub use result::{result_value, ResultMeta, TaskState};

/// The Redis list a message of `priority` goes to: Celery's Redis transport keeps priorities
/// 0 to 9 in four lists, `queue` for 0 to 2 and `queue\x06\x16{3,6,9}` above; 0 is served first.
pub fn priority_queue(queue: &str, priority: u8) -> String {
    match priority {
        0..=2 => queue.to_owned(),
        3..=5 => format!("{queue}\x06\x163"),
        6..=8 => format!("{queue}\x06\x166"),
        _ => format!("{queue}\x06\x169"),
    }
}

/// Where the Redis result backend keeps a task's state (also the channel it publishes on).
pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

#[cfg(test)]
mod tests;
