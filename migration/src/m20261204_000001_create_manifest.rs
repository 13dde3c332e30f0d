//! Incremental re-ingestion: `ingestion_manifest`, what the store holds of each source file of a
//! persona's kind (its size, modification time and content hash as last read, its chunks' ids
//! and hashes, and the fingerprint of the settings that made them), and on `ingestion_jobs` what
//! a run did (files read and skipped; chunks embedded, unchanged and deleted; tokens embedded).
//!
//! A column at a time: SQLite's `ALTER TABLE` adds one column a statement.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The counts a job row gains, each a non-negative integer, 0 for rows written before.
const JOB_COUNTS: [IngestionJobs; 6] = [
    IngestionJobs::FilesRead,
    IngestionJobs::FilesSkipped,
    IngestionJobs::ChunksEmbedded,
    IngestionJobs::ChunksUnchanged,
    IngestionJobs::ChunksDeleted,
    IngestionJobs::TokensEmbedded,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IngestionManifest::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(IngestionManifest::PersonaId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IngestionManifest::Kind)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(IngestionManifest::Source).text().not_null())
                    .col(
                        ColumnDef::new(IngestionManifest::Bytes)
                            .big_integer()
                            .not_null(),
                    )
                    // Nanoseconds since the epoch, as the file system last said.
                    .col(
                        ColumnDef::new(IngestionManifest::ModifiedNs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IngestionManifest::ContentHash)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IngestionManifest::ChunkCount)
                            .integer()
                            .not_null(),
                    )
                    // JSON: [[chunk index, record hash], ...].
                    .col(ColumnDef::new(IngestionManifest::Chunks).text().not_null())
                    .col(
                        ColumnDef::new(IngestionManifest::Fingerprint)
                            .string_len(32)
                            .not_null(),
                    )
                    // False from a run's start to its job's end: a run that died meanwhile may
                    // have written records this row does not describe.
                    .col(
                        ColumnDef::new(IngestionManifest::Settled)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(
                        ColumnDef::new(IngestionManifest::RecordedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IngestionManifest::PersonaId)
                            .col(IngestionManifest::Kind)
                            .col(IngestionManifest::Source),
                    )
                    .to_owned(),
            )
            .await?;
        for column in JOB_COUNTS {
            manager
                .alter_table(
                    Table::alter()
                        .table(IngestionJobs::Table)
                        .add_column(ColumnDef::new(column).big_integer().not_null().default(0))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in JOB_COUNTS {
            manager
                .alter_table(
                    Table::alter()
                        .table(IngestionJobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(IngestionManifest::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum IngestionManifest {
    Table,
    PersonaId,
    Kind,
    Source,
    Bytes,
    ModifiedNs,
    ContentHash,
    ChunkCount,
    Chunks,
    Fingerprint,
    Settled,
    RecordedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum IngestionJobs {
    Table,
    FilesRead,
    FilesSkipped,
    ChunksEmbedded,
    ChunksUnchanged,
    ChunksDeleted,
    TokensEmbedded,
}
