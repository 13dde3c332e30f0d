//! `audit --repair`, its store and manifest side: records the manifest does not list, or that
//! were altered, deleted from the store; records missing or altered taken out of the manifest,
//! so that the next run of their kind embeds exactly those; collections of unknown personas
//! deleted only when asked (another database sharing the store may own them). The caller then runs the kinds named in [`Repaired::ingest`] (an ordinary,
//! incremental run), after which a second audit is clean.

use std::collections::BTreeMap;

use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::{AuditError, AuditReport, Finding};
use crate::store::VectorStore;
use crate::{manifest, Kind, PersonaId};

/// What a repair did, and what is left to do.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Repaired {
    /// Records deleted from the store.
    pub deleted_records: u64,
    /// Records taken out of the manifest, to be embedded again.
    pub to_embed_again: u64,
    pub deleted_collections: Vec<String>,
    /// The kinds of each persona to ingest again.
    pub ingest: BTreeMap<String, Vec<Kind>>,
    /// What is not repaired, and why.
    pub left: Vec<String>,
}

/// Mends what `report` found in the store and the manifest (see the module's comment); the
/// collections of personas the database does not know are deleted only with `delete_orphans`.
pub async fn repair(
    db: &DatabaseConnection,
    store: &dyn VectorStore,
    report: &AuditReport,
    delete_orphans: bool,
) -> Result<Repaired, AuditError> {
    let mut repaired = Repaired::default();
    for persona_audit in &report.personas {
        let persona =
            PersonaId::parse(&persona_audit.persona).expect("an audited persona has a valid id");
        for kind in &persona_audit.kinds {
            if kind.findings.is_empty() {
                continue;
            }
            if let Some(other) = kind
                .findings
                .iter()
                .find(|f| matches!(f, Finding::OtherModel { .. }))
            {
                repaired.left.push(format!(
                    "{}: not repaired: {}; delete the collection or name another \
                     (collections.name_template) and ingest again",
                    kind.collection,
                    other.describe()
                ));
                continue;
            }
            let mut stale = Vec::new();
            let mut redo = Vec::new();
            for finding in &kind.findings {
                match finding {
                    Finding::Extra(ids) => stale.extend(ids.all.iter().cloned()),
                    Finding::Altered(ids) => {
                        stale.extend(ids.all.iter().cloned());
                        redo.extend(ids.all.iter().cloned());
                    }
                    Finding::Missing(ids) => redo.extend(ids.all.iter().cloned()),
                    _ => {}
                }
            }
            if !stale.is_empty() {
                if let Some(info) = store.collection(&kind.collection).await? {
                    repaired.deleted_records += stale.len() as u64;
                    store.delete(&info, stale).await?;
                }
            }
            if !redo.is_empty() {
                repaired.to_embed_again += redo.len() as u64;
                manifest::drop_records(db, &persona, kind.kind, &redo).await?;
            }
            repaired
                .ingest
                .entry(persona.to_string())
                .or_default()
                .push(kind.kind);
        }
    }
    for orphan in &report.orphans {
        if delete_orphans {
            store.delete_collection(&orphan.collection).await?;
            repaired.deleted_collections.push(orphan.collection.clone());
        } else {
            repaired.left.push(format!(
                "{}: not deleted: a collection of persona {}, whom this database does not know \
                 (another database sharing the store may); --delete-orphans deletes it",
                orphan.collection, orphan.persona
            ));
        }
    }
    Ok(repaired)
}
