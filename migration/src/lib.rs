//! The database schema of persona-ingest as sea-orm migrations. The engine applies the
//! pending ones at start; `persona-ingest migrate` applies them alone.

pub use m20261129_000001_create_run_locks::RunLocks;
pub use sea_orm_migration::prelude::*;

mod m20261128_000001_create_personas_and_jobs;
mod m20261129_000001_create_run_locks;
mod m20261204_000001_create_manifest;
mod m20261204_000002_manifest_file_identity;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_personas_and_jobs::Migration),
            Box::new(m20261129_000001_create_run_locks::Migration),
            Box::new(m20261204_000001_create_manifest::Migration),
            Box::new(m20261204_000002_manifest_file_identity::Migration),
        ]
    }
}
