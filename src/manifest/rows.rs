//! The manifest's rows in the database, read at a run's start and written at its jobs' ends
//! (by the StatusRecorder, in the transaction of the job's own transition).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use entities::manifest_entry::{self, Column};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryTrait, Set, Statement,
};
use serde::Serialize;

use super::{FileEntry, KindManifest};
use crate::jobs::{RunsWrites, Writes};
use crate::{Kind, PersonaId};

/// Rows a statement inserts at most: 11 values each, well within SQLite's 32,766 parameters.
const ROWS_PER_INSERT: usize = 500;

/// The manifest of each of `kinds` of `persona` (a kind with no rows is absent). A row that
/// cannot be read (its chunk list mangled by hand) is left out, so its file is read again.
pub async fn load<C: ConnectionTrait>(
    db: &C,
    persona: &PersonaId,
    kinds: &[Kind],
) -> Result<BTreeMap<Kind, KindManifest>, DbErr> {
    let asked = [(persona.clone(), kinds.to_vec())];
    Ok(load_all(db, &asked).await?.pop().unwrap_or_default())
}

/// [`load`] for several personas in one query: their manifests, in the order asked (a persona
/// asked twice has its rows in the first answer only).
pub async fn load_all<C: ConnectionTrait>(
    db: &C,
    asked: &[(PersonaId, Vec<Kind>)],
) -> Result<Vec<BTreeMap<Kind, KindManifest>>, DbErr> {
    let mut manifests = vec![BTreeMap::new(); asked.len()];
    if asked.iter().all(|(_, kinds)| kinds.is_empty()) {
        return Ok(manifests);
    }
    let mut wanted = Condition::any();
    for (persona, kinds) in asked.iter().filter(|(_, kinds)| !kinds.is_empty()) {
        wanted = wanted.add(
            Condition::all()
                .add(Column::PersonaId.eq(persona.as_str()))
                .add(Column::Kind.is_in(kinds.iter().copied())),
        );
    }
    let rows = manifest_entry::Entity::find()
        .filter(wanted)
        .all(db)
        .await?;
    for row in rows {
        let Some(at) = asked
            .iter()
            .position(|(p, kinds)| p.as_str() == row.persona_id && kinds.contains(&row.kind))
        else {
            continue;
        };
        let manifest: &mut KindManifest =
            manifests[at]
                .entry(row.kind)
                .or_insert_with(|| KindManifest {
                    settled: true,
                    ..KindManifest::default()
                });
        manifest.settled &= row.settled;
        match entry_of(&row) {
            Some(entry) => {
                manifest.files.insert(entry.source.clone(), entry);
            }
            None => {
                tracing::warn!(source = %row.source, "manifest row unreadable; the file is read again");
                manifest.settled = false;
            }
        }
    }
    Ok(manifests)
}

fn entry_of(row: &manifest_entry::Model) -> Option<FileEntry> {
    let listed: Vec<(u32, String)> = serde_json::from_str(&row.chunks).ok()?;
    let mut chunks = Vec::with_capacity(listed.len());
    for (index, hash) in listed {
        chunks.push((index, u64::from_str_radix(&hash, 16).ok()?));
    }
    chunks.sort_unstable();
    Some(FileEntry {
        source: row.source.clone(),
        bytes: u64::try_from(row.bytes).ok()?,
        modified_ns: row.modified_ns,
        changed_ns: row.changed_ns,
        inode: row.inode,
        content_hash: row.content_hash.clone(),
        chunks,
        fingerprint: row.fingerprint.clone(),
        recorded_ns: row.recorded_at.timestamp_nanos_opt().unwrap_or(0),
    })
}

/// Marks the rows of `kinds` unsettled: a run of them starts.
pub async fn unsettle<C: ConnectionTrait>(
    db: &C,
    persona: &PersonaId,
    kinds: &[Kind],
) -> Result<(), DbErr> {
    db.execute(unsettled(db.get_database_backend(), persona, kinds))
        .await?;
    Ok(())
}

/// The write of [`unsettle`].
pub fn unsettled(backend: DbBackend, persona: &PersonaId, kinds: &[Kind]) -> Statement {
    manifest_entry::Entity::update_many()
        .col_expr(Column::Settled, Expr::value(false))
        .filter(Column::PersonaId.eq(persona.as_str()))
        .filter(Column::Kind.is_in(kinds.iter().copied()))
        .build(backend)
}

/// Replaces the rows of `persona`'s `kind` with `entries`, settled: its job completed.
fn replace(
    backend: DbBackend,
    persona: &PersonaId,
    kind: Kind,
    entries: &[FileEntry],
    writes: &mut Writes,
) {
    writes.push(
        manifest_entry::Entity::delete_many()
            .filter(Column::PersonaId.eq(persona.as_str()))
            .filter(Column::Kind.eq(kind))
            .build(backend),
    );
    for batch in entries.chunks(ROWS_PER_INSERT) {
        let rows = batch.iter().map(|entry| manifest_entry::ActiveModel {
            persona_id: Set(persona.to_string()),
            kind: Set(kind),
            source: Set(entry.source.clone()),
            bytes: Set(i64::try_from(entry.bytes).unwrap_or(i64::MAX)),
            modified_ns: Set(entry.modified_ns),
            changed_ns: Set(entry.changed_ns),
            inode: Set(entry.inode),
            content_hash: Set(entry.content_hash.clone()),
            chunk_count: Set(i32::try_from(entry.chunks.len()).unwrap_or(i32::MAX)),
            chunks: Set(chunks_json(&entry.chunks)),
            fingerprint: Set(entry.fingerprint.clone()),
            settled: Set(true),
            recorded_at: Set(DateTime::<Utc>::from_timestamp_nanos(entry.recorded_ns)),
        });
        writes.push(manifest_entry::Entity::insert_many(rows).build(backend));
    }
}

/// Forgets the rows of `sources` (a failed job may have written some of their records) and
/// settles the others of `persona`'s `kind`: the job ended.
fn forget(
    backend: DbBackend,
    persona: &PersonaId,
    kind: Kind,
    sources: &[String],
    writes: &mut Writes,
) {
    for batch in sources.chunks(ROWS_PER_INSERT) {
        writes.push(
            manifest_entry::Entity::delete_many()
                .filter(Column::PersonaId.eq(persona.as_str()))
                .filter(Column::Kind.eq(kind))
                .filter(Column::Source.is_in(batch.iter().cloned()))
                .build(backend),
        );
    }
    writes.push(
        manifest_entry::Entity::update_many()
            .col_expr(Column::Settled, Expr::value(true))
            .filter(Column::PersonaId.eq(persona.as_str()))
            .filter(Column::Kind.eq(kind))
            .build(backend),
    );
}

/// `[[index, "hash"], ...]`: the hash as hex, as JSON numbers lose 64-bit integers. Written
/// straight into one string: a file of 30,000 chunks makes one of 800 kB, and no more.
fn chunks_json(chunks: &[(u32, u64)]) -> String {
    use std::fmt::Write;
    let mut json = String::with_capacity(2 + chunks.len() * 30);
    json.push('[');
    for (at, (index, hash)) in chunks.iter().enumerate() {
        let comma = if at == 0 { "" } else { "," };
        write!(json, "{comma}[{index},\"{hash:016x}\"]").expect("writing to a string");
    }
    json.push(']');
    json
}

/// How a job's end changes the manifest, applied with the job's own transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ManifestChange {
    /// The job completed: these are its kind's files now.
    Replace {
        persona: PersonaId,
        kind: Kind,
        entries: Arc<Vec<FileEntry>>,
    },
    /// The job failed: these files' records may have been written, the rest are as described.
    Forget {
        persona: PersonaId,
        kind: Kind,
        sources: Vec<String>,
    },
}

impl ManifestChange {
    pub async fn apply<C: RunsWrites>(&self, db: &C) -> Result<(), DbErr> {
        let mut writes = Writes::new();
        self.writes(db.get_database_backend(), &mut writes);
        writes.run(db).await?;
        Ok(())
    }

    /// The persona whose rows it changes.
    pub fn persona(&self) -> &PersonaId {
        match self {
            Self::Replace { persona, .. } | Self::Forget { persona, .. } => persona,
        }
    }

    /// Pushes the change's statements (their rows changed vary: they are not counted).
    pub fn writes(&self, backend: DbBackend, writes: &mut Writes) {
        match self {
            Self::Replace {
                persona,
                kind,
                entries,
            } => replace(backend, persona, *kind, entries, writes),
            Self::Forget {
                persona,
                kind,
                sources,
            } => forget(backend, persona, *kind, sources, writes),
        }
    }
}

/// Takes the records `ids` (of `persona`'s `kind`) out of their files' rows and marks those
/// files to be read again: the next run finds the files changed, compares their chunks with
/// what the rows still list, and embeds exactly the chunks taken out. What `audit --repair`
/// does with records missing or altered in the store.
pub async fn drop_records<C: ConnectionTrait>(
    db: &C,
    persona: &PersonaId,
    kind: Kind,
    ids: &[String],
) -> Result<(), DbErr> {
    let prefix = format!("{kind}:");
    let mut by_source: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for id in ids {
        let parsed = id
            .strip_prefix(&prefix)
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(source, index)| Some((source, index.parse::<u32>().ok()?)));
        if let Some((source, index)) = parsed {
            by_source.entry(source).or_default().push(index);
        }
    }
    for (source, indexes) in by_source {
        let Some(row) =
            manifest_entry::Entity::find_by_id((persona.to_string(), kind, source.to_owned()))
                .one(db)
                .await?
        else {
            continue;
        };
        let Some(mut entry) = entry_of(&row) else {
            continue;
        };
        entry.chunks.retain(|(index, _)| !indexes.contains(index));
        manifest_entry::Entity::update_many()
            .col_expr(Column::Chunks, Expr::value(chunks_json(&entry.chunks)))
            .col_expr(
                Column::ChunkCount,
                Expr::value(i32::try_from(entry.chunks.len()).unwrap_or(i32::MAX)),
            )
            // No file has this time and hash: it is judged changed and read again.
            .col_expr(Column::ModifiedNs, Expr::value(0i64))
            .col_expr(Column::ContentHash, Expr::value(String::new()))
            .filter(Column::PersonaId.eq(persona.as_str()))
            .filter(Column::Kind.eq(kind))
            .filter(Column::Source.eq(source))
            .exec(db)
            .await?;
    }
    Ok(())
}
