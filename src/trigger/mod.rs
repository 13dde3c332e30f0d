//! The Redis trigger: serving the calls the web app makes to Celery, as a drop-in for its Celery
//! workers. Celery's wire format (`celery`), the Redis side of delivery (`broker`), the result
//! backend (`results`), the serving loop with its lease and shutdown (`consumer`) and the
//! handling of one message (`task`).

pub mod broker;
pub mod celery;
pub mod consumer;
pub mod enqueue;
pub mod events;
pub mod persona_lock;
pub mod results;
pub mod task;
