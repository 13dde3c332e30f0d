//! End-to-end tests of the engine against real SQLite, PostgreSQL and files: one test binary,
//! one module per concern.

mod audit;
mod auth_proxy;
mod bad_input;
mod broker;
mod browser;
mod celery_control;
mod celery_events;
mod celery_results;
mod celery_worker;
mod chroma;
mod chroma_as_found;
mod chroma_server;
mod cli;
mod cli_signals;
mod common;
mod corpus;
mod dashboard;
mod dashboard_api;
mod dashboard_views;
mod delivery;
mod http_api;
mod incremental;
mod many_personas;
mod migrations;
#[cfg(feature = "minilm")]
mod minilm;
mod openai;
mod openai_compatible;
mod own_postgres;
mod rate_limit;
mod redis_urls;
mod servers;
mod trigger;
mod two_workers;
mod worker_kit;
