//! The Redis trigger: serving the calls the web app makes to Celery. So far, Celery's wire
//! format (`celery`) and the Redis side of delivery (`broker`); the consumer, the result writer
//! and the daemon come with issue #4.

pub mod broker;
pub mod celery;
