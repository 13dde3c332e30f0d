//! The two tables of the seed's schema, `personas` and `ingestion_jobs`, with the indexes
//! the status queries use.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Personas::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Personas::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Personas::Name).string().not_null())
                    .col(
                        ColumnDef::new(Personas::Status)
                            .string_len(16)
                            .not_null()
                            .default("draft"),
                    )
                    .col(ColumnDef::new(Personas::ErrorMessage).text().null())
                    .col(
                        ColumnDef::new(Personas::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Personas::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IngestionJobs::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(IngestionJobs::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::PersonaId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::Kind)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::Status)
                            .string_len(16)
                            .not_null()
                            .default("pending"),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::Progress)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::TotalVectors)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(IngestionJobs::ErrorMessage).text().null())
                    .col(ColumnDef::new(IngestionJobs::WarningMessage).text().null())
                    .col(ColumnDef::new(IngestionJobs::TaskId).string_len(255).null())
                    .col(
                        ColumnDef::new(IngestionJobs::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::StartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(IngestionJobs::CompletedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_ingestion_jobs_persona")
                            .from(IngestionJobs::Table, IngestionJobs::PersonaId)
                            .to(Personas::Table, Personas::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_ingestion_jobs_persona", IngestionJobs::PersonaId),
            ("idx_ingestion_jobs_status", IngestionJobs::Status),
            ("idx_ingestion_jobs_task", IngestionJobs::TaskId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(IngestionJobs::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IngestionJobs::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Personas::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Personas {
    Table,
    Id,
    Name,
    Status,
    ErrorMessage,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum IngestionJobs {
    Table,
    Id,
    PersonaId,
    Kind,
    Status,
    Progress,
    TotalVectors,
    ErrorMessage,
    WarningMessage,
    TaskId,
    Attempts,
    CreatedAt,
    StartedAt,
    CompletedAt,
}
