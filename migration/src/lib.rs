//! The database schema of persona-ingest as sea-orm migrations. The engine applies the
//! pending ones at start; `persona-ingest migrate` applies them alone.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_create_personas_and_jobs;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(
            m20261128_000001_create_personas_and_jobs::Migration,
        )]
    }
}
