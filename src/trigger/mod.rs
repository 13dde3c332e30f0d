//! The Redis trigger: serving the calls the web app makes to Celery. So far, Celery's wire
//! format (`celery`); the consumer, the result writer and the daemon come with issue #4.

pub mod celery;
