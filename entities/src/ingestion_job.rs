//! One ingestion job: one kind of a persona's corpus (works, quotes or profile) in one run.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "ingestion_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub persona_id: String,
    pub kind: Kind,
    pub status: JobStatus,
    /// 0 to 100; 100 only once the job has completed.
    pub progress: i32,
    pub total_vectors: i64,
    pub error_message: Option<String>,
    /// What a completed job wants known: skipped records, a missing optional file.
    pub warning_message: Option<String>,
    pub task_id: Option<String>,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    /// What the job's run did (0 until it completes): files read, and files skipped as
    /// unchanged since the last run (`ingestion_manifest`).
    pub files_read: i64,
    pub files_skipped: i64,
    /// Chunks sent to the embedding provider and written; chunks left as they were; records
    /// deleted (of files or chunks that are gone).
    pub chunks_embedded: i64,
    pub chunks_unchanged: i64,
    pub chunks_deleted: i64,
    /// Tokens of the chunks embedded, as the model's tokenizer counts them where it is known,
    /// else as estimated (see the README's `chunking` settings).
    pub tokens_embedded: i64,
}

/// The three parts of a persona's corpus, each ingested into its own collection.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[sea_orm(string_value = "works")]
    Works,
    #[sea_orm(string_value = "quotes")]
    Quotes,
    #[sea_orm(string_value = "profile")]
    Profile,
}

impl Kind {
    /// In the order a run starts them: the profile first, as it is the fastest.
    pub const ALL: [Kind; 3] = [Kind::Profile, Kind::Works, Kind::Quotes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Works => "works",
            Self::Quotes => "quotes",
            Self::Profile => "profile",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "works" => Ok(Self::Works),
            "quotes" => Ok(Self::Quotes),
            "profile" => Ok(Self::Profile),
            other => Err(format!(
                "unknown kind `{other}` (expected works, quotes or profile)"
            )),
        }
    }
}

/// `pending → processing → completed | failed`; never backwards but on an explicit retry.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "processing")]
    Processing,
    #[sea_orm(string_value = "completed")]
    Completed,
    #[sea_orm(string_value = "failed")]
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::persona::Entity",
        from = "Column::PersonaId",
        to = "super::persona::Column::Id",
        on_delete = "Cascade"
    )]
    Persona,
}

impl Related<super::persona::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Persona.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
