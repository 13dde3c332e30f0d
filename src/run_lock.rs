//! One run per persona across processes sharing the database, for `persona-ingest ingest` (the
//! daemon locks on its broker, `trigger::persona_lock`): a row of `run_locks` held by a holder
//! (`host:pid:uuid`) until it expires, renewed while the run lives; a process that died frees its
//! locks when they expire.

use std::time::Duration;

use migration::RunLocks;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::PersonaId;

/// How long a lock holds without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

/// Takes the persona's lock for `holder`, or renews it; answers `None` when taken, else who
/// holds it.
pub async fn try_acquire(
    db: &DatabaseConnection,
    persona: &PersonaId,
    holder: &str,
) -> Result<Option<String>, DbErr> {
    let now = chrono::Utc::now().timestamp();
    let until = now + LEASE.as_secs() as i64;
    let insert = Query::insert()
        .into_table(RunLocks::Table)
        .columns([RunLocks::PersonaId, RunLocks::Holder, RunLocks::ExpiresAt])
        .values_panic([persona.as_str().into(), holder.into(), until.into()])
        .on_conflict(
            OnConflict::column(RunLocks::PersonaId)
                .update_columns([RunLocks::Holder, RunLocks::ExpiresAt])
                .action_and_where(
                    Expr::col((RunLocks::Table, RunLocks::ExpiresAt))
                        .lt(now)
                        .or(Expr::col((RunLocks::Table, RunLocks::Holder)).eq(holder)),
                )
                .to_owned(),
        )
        .to_owned();
    let backend = db.get_database_backend();
    let taken = db.execute(backend.build(&insert)).await?.rows_affected() == 1;
    if taken {
        return Ok(None);
    }
    let select = Query::select()
        .column(RunLocks::Holder)
        .from(RunLocks::Table)
        .and_where(Expr::col(RunLocks::PersonaId).eq(persona.as_str()))
        .to_owned();
    let row = db.query_one(backend.build(&select)).await?;
    // Freed meanwhile: the next try takes it.
    Ok(Some(match row {
        Some(row) => row.try_get::<String>("", "holder")?,
        None => "nobody (just freed)".into(),
    }))
}

/// Whether `holder` (`what:host:pid...`) is a process of this machine that is gone: its lock
/// need not wait out its lease.
pub fn holder_is_gone(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (_, host, pid) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(host), Some(pid)) if host == crate::naming::hostname() => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// Frees the persona's lock if `holder` holds it.
pub async fn release(
    db: &DatabaseConnection,
    persona: &PersonaId,
    holder: &str,
) -> Result<(), DbErr> {
    let delete = Query::delete()
        .from_table(RunLocks::Table)
        .and_where(Expr::col(RunLocks::PersonaId).eq(persona.as_str()))
        .and_where(Expr::col(RunLocks::Holder).eq(holder))
        .to_owned();
    db.execute(db.get_database_backend().build(&delete)).await?;
    Ok(())
}
