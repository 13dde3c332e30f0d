//! Audit: the database (job rows and the manifest) against the vector store (collections,
//! counts, ids, each record's document and metadata, the model a collection holds), record by
//! record, and what disagrees. `persona-ingest audit` prints it (and with `--repair` mends it:
//! see `cli::audit`); `GET /api/personas/{id}/audit` answers it.
//!
//! A record is compared by its hash ([`manifest::record_hash`] of its id, document and
//! metadata as read back), so an edit made behind the engine's back through Chroma's own API is
//! found without reading the source files.

mod repair;
mod report;

use std::collections::{BTreeMap, HashMap};

use sea_orm::DatabaseConnection;

use crate::jobs;
use crate::manifest::{self, KindManifest};
use crate::store::{StoreError, VectorStore};
use crate::{JobStatus, Kind, PersonaId};

pub use repair::{repair, Repaired};
pub use report::{AuditReport, Finding, KindAudit, Listed, Orphan, PersonaAudit};

/// What the engine writes with: collections named by `name_template`, vectors of `model` and
/// `dimension` (0 when the settings leave it to the provider: not checked then).
pub struct Expected<'a> {
    pub name_template: &'a str,
    pub model: &'a str,
    pub dimension: usize,
}

/// Why an audit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("vector store: {0}")]
    Store(#[from] StoreError),
}

/// Audits `personas` (every persona the database knows, when empty), each of their kinds; when
/// auditing every persona, also lists the collections the engine made (stamped with a model)
/// and named for a persona the database does not know.
pub async fn audit(
    db: &DatabaseConnection,
    store: &dyn VectorStore,
    expected: &Expected<'_>,
    personas: &[PersonaId],
) -> Result<AuditReport, AuditError> {
    let collections = store.collections().await?;
    let known: Vec<PersonaId> = jobs::personas(db)
        .await?
        .into_iter()
        .filter_map(|p| PersonaId::parse(&p.id).ok())
        .collect();
    let orphans = if personas.is_empty() {
        orphans_of(store, expected, &collections, &known).await?
    } else {
        Vec::new()
    };
    let personas = if personas.is_empty() {
        known
    } else {
        personas.to_vec()
    };
    let mut audited = Vec::with_capacity(personas.len());
    for persona in personas {
        audited.push(audit_persona(db, store, expected, &persona).await?);
    }
    Ok(AuditReport {
        personas: audited,
        orphans,
    })
}

async fn audit_persona(
    db: &DatabaseConnection,
    store: &dyn VectorStore,
    expected: &Expected<'_>,
    persona: &PersonaId,
) -> Result<PersonaAudit, AuditError> {
    let mut manifests = manifest::load(db, persona, &Kind::ALL).await?;
    let rows = jobs::jobs_of_persona(db, persona.as_str()).await?;
    let mut kinds = Vec::new();
    for kind in Kind::ALL {
        let collection =
            crate::naming::collection_name(expected.name_template, persona.as_str(), kind.as_str());
        // The newest row of the kind (rows come newest first).
        let row = rows.iter().find(|r| r.kind == kind);
        let audit = audit_kind(
            store,
            expected,
            kind,
            collection,
            manifests.remove(&kind),
            row,
        )
        .await?;
        if row.is_some() || audit.store_records > 0 || audit.manifest_records.is_some() {
            kinds.push(audit);
        }
    }
    Ok(PersonaAudit {
        persona: persona.to_string(),
        kinds,
    })
}

async fn audit_kind(
    store: &dyn VectorStore,
    expected: &Expected<'_>,
    kind: Kind,
    collection: String,
    manifest: Option<KindManifest>,
    row: Option<&entities::ingestion_job::Model>,
) -> Result<KindAudit, AuditError> {
    let mut findings = Vec::new();
    let held: HashMap<String, u64> = match store.collection(&collection).await? {
        Some(info) => {
            let wrong_model = info.embedding_model != expected.model
                || (expected.dimension > 0 && info.dimension != expected.dimension);
            if wrong_model {
                findings.push(Finding::OtherModel {
                    collection_model: info.embedding_model.clone(),
                    collection_dimension: info.dimension,
                    engine_model: expected.model.to_owned(),
                    engine_dimension: expected.dimension,
                });
            }
            manifest::stored_hashes(store, &info).await?
        }
        None => HashMap::new(),
    };
    let store_records = held.len() as u64;
    let manifest_records = manifest.as_ref().map(KindManifest::records);
    match &manifest {
        Some(manifest) => {
            if !manifest.settled {
                findings.push(Finding::Unsettled);
            }
            findings.extend(compare(kind, manifest, &held));
        }
        None if store_records > 0 => findings.push(Finding::NoManifest { store_records }),
        None => {}
    }
    if let Some(row) = row.filter(|r| r.status == JobStatus::Completed) {
        if row.total_vectors.max(0) as u64 != store_records {
            findings.push(Finding::RowContradicted {
                job_id: row.id,
                row_says: row.total_vectors.max(0) as u64,
                store_holds: store_records,
            });
        }
    }
    Ok(KindAudit {
        kind,
        collection,
        store_records,
        manifest_records,
        findings,
    })
}

/// Records the manifest has and the store does not, the other way round, and both with
/// another hash.
fn compare(kind: Kind, manifest: &KindManifest, held: &HashMap<String, u64>) -> Vec<Finding> {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for entry in manifest.files.values() {
        for (index, hash) in &entry.chunks {
            expected.insert(crate::ids::record_id(kind, &entry.source, *index), *hash);
        }
    }
    let (mut missing, mut altered) = (Vec::new(), Vec::new());
    for (id, hash) in &expected {
        match held.get(id) {
            None => missing.push(id.clone()),
            Some(found) if found != hash => altered.push(id.clone()),
            Some(_) => {}
        }
    }
    let mut extra: Vec<String> = held
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .cloned()
        .collect();
    extra.sort();
    let mut findings = Vec::new();
    for (ids, make) in [
        (missing, Finding::Missing as fn(Listed) -> Finding),
        (extra, Finding::Extra),
        (altered, Finding::Altered),
    ] {
        if !ids.is_empty() {
            findings.push(make(Listed::of(ids)));
        }
    }
    findings
}

/// Collections named as the engine names a kind's collection, for a persona not in the
/// database: what a persona deleted from the web app's database leaves behind.
async fn orphans_of(
    store: &dyn VectorStore,
    expected: &Expected<'_>,
    collections: &[crate::store::CollectionInfo],
    known: &[PersonaId],
) -> Result<Vec<Orphan>, AuditError> {
    let mut orphans = Vec::new();
    for info in collections {
        // A collection without the engine's stamp is other code's, whatever its name.
        if info.embedding_model == "unknown" {
            continue;
        }
        let Some((persona, kind)) = owner_of(expected.name_template, &info.name) else {
            continue;
        };
        if known.iter().any(|p| p.as_str() == persona) {
            continue;
        }
        orphans.push(Orphan {
            collection: info.name.clone(),
            persona,
            kind,
            records: store.count(info).await?,
        });
    }
    Ok(orphans)
}

/// The persona and kind a collection name is made of by `template`, if it is one.
pub fn owner_of(template: &str, name: &str) -> Option<(String, Kind)> {
    Kind::ALL.iter().find_map(|kind| {
        let with_kind = template.replace("{kind}", kind.as_str());
        let (before, after) = with_kind.split_once("{persona}")?;
        let persona = name.strip_prefix(before)?.strip_suffix(after)?;
        PersonaId::parse(persona)
            .ok()
            .map(|p| (p.to_string(), *kind))
    })
}

#[cfg(test)]
mod tests;
