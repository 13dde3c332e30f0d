//! The sea-orm entities of persona-ingest: `personas`, `ingestion_jobs` and `ingestion_manifest`,
//! and the status and kind enums they store as strings (readable from SQL and from the web app).

pub mod ingestion_job;
pub mod manifest_entry;
pub mod persona;

pub use ingestion_job::{JobStatus, Kind};
pub use persona::PersonaStatus;
