//! A persona: one author whose corpus is ingested. Its status summarises its latest run.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "personas")]
pub struct Model {
    /// The persona's slug, e.g. `mark-twain`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub status: PersonaStatus,
    pub error_message: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// `draft → ingesting → active | failed`; a new run moves `active` or `failed` back to `ingesting`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum PersonaStatus {
    #[sea_orm(string_value = "draft")]
    Draft,
    #[sea_orm(string_value = "ingesting")]
    Ingesting,
    #[sea_orm(string_value = "active")]
    Active,
    #[sea_orm(string_value = "failed")]
    Failed,
}

impl PersonaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Ingesting => "ingesting",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PersonaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::ingestion_job::Entity")]
    IngestionJobs,
}

impl Related<super::ingestion_job::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::IngestionJobs.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
