//! The sea-orm entities of persona-ingest: `personas` and `ingestion_jobs`, and the
//! status and kind enums they store as strings (readable from SQL and from the web app).

pub mod ingestion_job;
pub mod persona;

pub use ingestion_job::{JobStatus, Kind};
pub use persona::PersonaStatus;
