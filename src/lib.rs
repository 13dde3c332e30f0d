//! persona-ingest: reads a persona's corpus (works, quotes, profile), chunks it, embeds it,
//! writes it into one vector collection per persona and kind, and tracks every job in SQL.

pub mod actors;
pub mod audit;
pub mod cli;
pub mod config;
pub mod counts;
pub mod daemon;
pub mod db;
pub mod embed;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod ids;
pub mod jobs;
#[cfg(test)]
mod layers;
pub mod manifest;
pub mod metrics;
pub mod monitor;
pub mod naming;
pub mod persona;
pub mod pipeline;
pub mod record;
pub mod retry;
pub mod run_lock;
pub mod sources;
pub mod store;
pub mod testkit;
pub mod tokens;
pub mod trigger;
pub mod urls;

pub use entities::{JobStatus, Kind, PersonaStatus};
pub use persona::PersonaId;
