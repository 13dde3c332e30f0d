//! The Redis trigger: serving the calls the web app makes to Celery. So far, Celery's wire
//! format (`celery`), the Redis side of delivery (`broker`) and the result backend
//! (`results`); the consumer and the daemon (`persona-ingest run`) come with issue #4.

pub mod broker;
pub mod celery;
pub mod consumer;
pub mod results;
