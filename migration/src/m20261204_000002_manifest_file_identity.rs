//! `ingestion_manifest` gains each file's change time and inode: a file replaced by one of the
//! same size and modification time (`touch -r`, `mv` of a copy, `rsync -t`) still has another
//! change time or inode, as git's index also compares. Rows written before hold 0: their files
//! are hashed once, then described whole.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [IngestionManifest; 2] = [IngestionManifest::ChangedNs, IngestionManifest::Inode];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A column a statement: SQLite's ALTER TABLE adds one at a time.
        for column in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(IngestionManifest::Table)
                        .add_column(ColumnDef::new(column).big_integer().not_null().default(0))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(IngestionManifest::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum IngestionManifest {
    Table,
    ChangedNs,
    Inode,
}
