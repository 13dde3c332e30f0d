//! The Redis trigger: serving the calls the web app makes to Celery, as a drop-in for its Celery
//! workers. Celery's wire format (`celery`); the Redis side behind small traits (`ports`):
//! delivery (`broker`), the result backend (`results`), persona locks (`persona_lock`) and
//! events (`events`); the actor that fetches, schedules and serves (`redis_trigger`); the
//! handling of one task (`task`); remote control on Celery's pidbox (`pidbox`); and sending tasks
//! as the web app does (`enqueue`).

pub mod broker;
pub mod celery;
pub mod control;
pub mod enqueue;
pub mod events;
pub mod persona_lock;
pub mod pidbox;
pub mod ports;
pub mod redis_trigger;
pub mod results;
pub mod subscription;
pub mod task;
