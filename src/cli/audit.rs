//! `persona-ingest audit [PERSONA...] [--repair] [--json]`: the database against the vector
//! store (see `audit`), printed as a table or JSON. With `--repair`, what differs is mended (the
//! store and manifest side by `audit::repair`, then an ordinary run of each kind concerned,
//! which embeds only what was missing or altered) and the audit is made again. Exit 0 when the
//! last audit is clean, 1 when it is not, 2 for a bad argument.

use clap::Args;
use serde::Serialize;

use crate::actors::orchestrator::RunRequest;
use crate::audit::{self, AuditReport, Expected, Repaired};
use crate::config::Settings;
use crate::pipeline::Engine;
use crate::{db, store, PersonaId};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Persona ids; every persona the database knows when none is named.
    #[arg(value_name = "PERSONA")]
    pub personas: Vec<String>,
    /// Mend what differs: delete records the manifest does not list, embed again those missing
    /// or altered, ingest kinds whose rows the store contradicts; then audit again.
    #[arg(long)]
    pub repair: bool,
    /// With --repair, also delete the collections the engine made for personas this database
    /// does not know (left alone otherwise: another database sharing the store may own them).
    #[arg(long, requires = "repair")]
    pub delete_orphans: bool,
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Output {
    audit: AuditReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    repaired: Option<Repaired>,
    /// The audit made after the repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<AuditReport>,
}

pub async fn run(args: &AuditArgs, settings: Settings) -> anyhow::Result<i32> {
    let mut personas = Vec::new();
    for given in &args.personas {
        match PersonaId::parse(given) {
            Ok(id) => personas.push(id),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(2);
            }
        }
    }
    let output = if args.repair {
        repair(&personas, args.delete_orphans, settings).await?
    } else {
        let database = db::connect(&settings.database).await?;
        let store = store::from_settings(&settings.store).await?;
        let (model, dimension, _) = super::plan::offline_provider(&settings).await?;
        let expected = Expected {
            name_template: &settings.collections.name_template,
            model: &model,
            dimension: dimension.unwrap_or(0),
        };
        let report = audit::audit(&database, store.as_ref(), &expected, &personas).await?;
        Output {
            audit: report,
            repaired: None,
            after: None,
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print_report("audit", &output.audit);
        if let (Some(repaired), Some(after)) = (&output.repaired, &output.after) {
            println!(
                "repaired: {} record(s) deleted, {} embedded again, {} collection(s) deleted",
                repaired.deleted_records,
                repaired.to_embed_again,
                repaired.deleted_collections.len()
            );
            for left in &repaired.left {
                eprintln!("warning: {left}");
            }
            print_report("audit after the repair", after);
        }
    }
    let last = output.after.as_ref().unwrap_or(&output.audit);
    Ok(if last.is_clean() { 0 } else { 1 })
}

async fn repair(
    personas: &[PersonaId],
    delete_orphans: bool,
    settings: Settings,
) -> anyhow::Result<Output> {
    let engine = Engine::start(settings).await?;
    let template = engine.settings.collections.name_template.clone();
    let expected = Expected {
        name_template: &template,
        model: engine.provider.model(),
        dimension: engine.provider.dimension(),
    };
    let before = audit::audit(&engine.db, engine.store.as_ref(), &expected, personas).await?;
    let repaired =
        audit::repair(&engine.db, engine.store.as_ref(), &before, delete_orphans).await?;
    let holder = format!("audit:{}:{}", crate::naming::hostname(), std::process::id());
    for (persona, kinds) in &repaired.ingest {
        let persona = PersonaId::parse(persona).expect("an audited persona has a valid id");
        let outcome =
            super::ingest::locked_run(&engine, RunRequest::new(persona, kinds), &holder).await?;
        if let Some(error) = outcome.error {
            eprintln!("error: ingesting {} again failed: {error}", outcome.persona);
        }
    }
    engine.shutdown().await;
    let after = audit::audit(&engine.db, engine.store.as_ref(), &expected, personas).await?;
    Ok(Output {
        audit: before,
        repaired: Some(repaired),
        after: Some(after),
    })
}

fn print_report(title: &str, report: &AuditReport) {
    let mut table = super::table(&[
        "persona",
        "kind",
        "collection",
        "store",
        "manifest",
        "finding",
    ]);
    for persona in &report.personas {
        for kind in &persona.kinds {
            let findings: Vec<String> = kind.findings.iter().map(|f| f.describe()).collect();
            table.add_row(vec![
                persona.persona.clone(),
                kind.kind.to_string(),
                kind.collection.clone(),
                kind.store_records.to_string(),
                kind.manifest_records
                    .map_or("none".into(), |n| n.to_string()),
                if findings.is_empty() {
                    "ok".into()
                } else {
                    findings.join("; ")
                },
            ]);
        }
    }
    for orphan in &report.orphans {
        table.add_row(vec![
            orphan.persona.clone(),
            orphan.kind.to_string(),
            orphan.collection.clone(),
            orphan.records.to_string(),
            "none".into(),
            "a collection of a persona the database does not know".into(),
        ]);
    }
    println!("{title}:\n{table}");
    println!(
        "{}",
        if report.is_clean() {
            "the database and the store agree"
        } else {
            "the database and the store disagree"
        }
    );
}
