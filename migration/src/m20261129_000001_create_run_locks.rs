//! `run_locks`: one run per persona across processes that share the database, for the runs that
//! have no broker to lock on (`persona-ingest ingest`). A lock is held by a holder until it
//! expires (renewed while the run lives), so a process that died frees it by itself.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunLocks::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RunLocks::PersonaId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RunLocks::Holder).string().not_null())
                    // Seconds since the epoch: compared as numbers on every backend.
                    .col(ColumnDef::new(RunLocks::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunLocks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum RunLocks {
    Table,
    PersonaId,
    Holder,
    ExpiresAt,
}
