//! What an audit found, as `--json`, `/api` and the table show it.

use serde::Serialize;
use uuid::Uuid;

use crate::Kind;

/// The ids a JSON report names at most, per finding (the count is always whole).
const NAMED: usize = 20;

#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditReport {
    pub personas: Vec<PersonaAudit>,
    /// Collections named as the engine names them, for personas the database does not know.
    pub orphans: Vec<Orphan>,
}

impl AuditReport {
    /// Nothing disagrees.
    pub fn is_clean(&self) -> bool {
        self.orphans.is_empty()
            && self
                .personas
                .iter()
                .all(|p| p.kinds.iter().all(|k| k.findings.is_empty()))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PersonaAudit {
    pub persona: String,
    /// The kinds with a job row, a manifest or records.
    pub kinds: Vec<KindAudit>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindAudit {
    pub kind: Kind,
    pub collection: String,
    /// Records the collection holds (0 when there is none).
    pub store_records: u64,
    /// Records the manifest says it holds (`None`: no manifest).
    pub manifest_records: Option<u64>,
    pub findings: Vec<Finding>,
}

/// One disagreement between the database and the store.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Records the manifest lists and the store does not hold.
    Missing(Listed),
    /// Records the store holds and the manifest does not list.
    Extra(Listed),
    /// Records in both whose document or metadata differ from what was written.
    Altered(Listed),
    /// The kind's newest job row says completed with a vector count the store contradicts.
    RowContradicted {
        job_id: Uuid,
        row_says: u64,
        store_holds: u64,
    },
    /// A run of the kind is under way, or died: the manifest may not describe all it wrote.
    Unsettled,
    /// Records, and no manifest to say what they should be (written before manifests, or by
    /// other code).
    NoManifest { store_records: u64 },
    /// The collection holds vectors of another model or size than the engine makes.
    OtherModel {
        collection_model: String,
        collection_dimension: usize,
        engine_model: String,
        engine_dimension: usize,
    },
}

impl Finding {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Missing(ids) => format!("{} record(s) missing: {}", ids.count, ids.sample()),
            Self::Extra(ids) => format!(
                "{} record(s) the manifest does not list: {}",
                ids.count,
                ids.sample()
            ),
            Self::Altered(ids) => format!(
                "{} record(s) altered since written: {}",
                ids.count,
                ids.sample()
            ),
            Self::RowContradicted {
                job_id,
                row_says,
                store_holds,
            } => format!(
                "job {job_id} says completed with {row_says} vectors; the collection holds \
                 {store_holds}"
            ),
            Self::Unsettled => "a run is under way or died before its end".into(),
            Self::NoManifest { store_records } => {
                format!("{store_records} record(s) and no manifest to check them against")
            }
            Self::OtherModel {
                collection_model,
                collection_dimension,
                engine_model,
                engine_dimension,
            } => format!(
                "the collection holds {collection_model} vectors of dimension \
                 {collection_dimension}; the engine makes {engine_model} ({engine_dimension})"
            ),
        }
    }
}

/// Record ids: how many, the first few named.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    pub count: usize,
    pub first: Vec<String>,
    /// Every id, for `--repair`.
    #[serde(skip)]
    pub all: Vec<String>,
}

impl Listed {
    pub fn of(all: Vec<String>) -> Self {
        Self {
            count: all.len(),
            first: all.iter().take(NAMED).cloned().collect(),
            all,
        }
    }

    fn sample(&self) -> String {
        let shown: Vec<&str> = self.first.iter().take(3).map(String::as_str).collect();
        let more = self.count.saturating_sub(shown.len());
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }
}

/// A collection the engine would have made for a persona the database does not know.
#[derive(Clone, Debug, Serialize)]
pub struct Orphan {
    pub collection: String,
    pub persona: String,
    pub kind: Kind,
    pub records: u64,
}
