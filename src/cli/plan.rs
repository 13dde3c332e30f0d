//! `persona-ingest ingest --dry-run`: what a run would do, with no provider call and no write:
//! for each persona and kind, the files to read and to skip, the chunks to embed, leave and
//! delete, the tokens to embed and what they cost at `embedding.price_per_million_tokens`. The
//! same judging and reading as a run (`ingestor::dry_run`); the store is only counted.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::actors::ingestor::{dry_run, IngestJob, JobPlan};
use crate::config::{ProviderKind, Settings};
use crate::counts::JobCounts;
use crate::manifest;
use crate::sources::{FileSources, SourceFactory};
use crate::store::{self, CollectionSpec};
use crate::tokens::TokenCounter;
use crate::{db, embed, Kind, PersonaId};

#[derive(Serialize)]
struct Plan {
    jobs: Vec<PlannedJob>,
    total: JobCounts,
    /// `total.tokens_embedded` at `embedding.price_per_million_tokens`, when set.
    cost: Option<f64>,
}

#[derive(Serialize)]
struct PlannedJob {
    persona: String,
    kind: Kind,
    collection: String,
    #[serde(flatten)]
    plan: JobPlan,
    error: Option<String>,
}

/// Plans a run of `kinds` of each of `personas`; prints a table, or JSON with `json`. Exit
/// code 0, or 1 when a job could not be planned (a file unreadable: the run would fail too).
pub async fn run(
    personas: &[PersonaId],
    kinds: &[Kind],
    force: bool,
    json: bool,
    settings: Settings,
) -> anyhow::Result<i32> {
    let database = db::connect(&settings.database).await?;
    let store = store::from_settings(&settings.store).await?;
    let (model, dimension, tokens) = offline_provider(&settings).await?;
    let sources = FileSources::new(Arc::new(settings.clone())).with_token_counter(tokens.clone());
    let mut jobs = Vec::new();
    for persona in personas {
        let mut manifests = manifest::load(&database, persona, kinds).await?;
        for &kind in kinds {
            let collection = settings.collection_name(persona.as_str(), kind.as_str());
            let found = store.collection(&collection).await?;
            // What the store holds, record by record, as a run compares it when its manifest
            // cannot be trusted.
            let mut held = std::collections::HashMap::new();
            if let Some(info) = &found {
                store::each_record(store.as_ref(), info, |r| {
                    let text = r.metadata.get(crate::record::keys::CONTENT_HASH).cloned();
                    held.insert(r.id.clone(), (manifest::hash_of(&r), text));
                })
                .await?;
            }
            // A vector size the settings leave to the server is the collection's.
            let dimension = dimension.or(found.map(|info| info.dimension)).unwrap_or(0);
            let planned = match sources.source(persona, kind) {
                // As the run fails it.
                _ if !sources.persona_exists(persona) => Err(format!(
                    "persona {persona} not found: nothing at {}",
                    sources.describe(persona)
                )),
                Ok(source) => match source.plan() {
                    Ok(plan) => {
                        let job = IngestJob {
                            job_id: Uuid::nil(),
                            persona: persona.clone(),
                            kind,
                            collection: CollectionSpec {
                                name: collection.clone(),
                                embedding_model: model.clone(),
                                dimension,
                            },
                            source,
                            plan,
                            rerun: false,
                            previous: manifests.remove(&kind).map(Arc::new),
                            force,
                            fingerprint: manifest::fingerprint(&settings, kind, &model, dimension)
                                .into(),
                            tokens: tokens.clone(),
                        };
                        dry_run(job, Some(held)).await
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            let (plan, error) = match planned {
                Ok(plan) => (plan, None),
                Err(e) => (JobPlan::default(), Some(e)),
            };
            jobs.push(PlannedJob {
                persona: persona.to_string(),
                kind,
                collection,
                plan,
                error,
            });
        }
    }
    let mut total = JobCounts::default();
    for job in &jobs {
        total += job.plan.counts;
    }
    let cost = settings
        .embedding
        .price_per_million_tokens
        .map(|price| total.tokens_embedded as f64 * price / 1e6);
    let plan = Plan { jobs, total, cost };
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan, tokens.describe());
    }
    Ok(if plan.jobs.iter().any(|j| j.error.is_some()) {
        1
    } else {
        0
    })
}

/// The model, vector size (when the settings say it) and token counter, without calling the
/// provider: an OpenAI-compatible server is not asked.
pub(super) async fn offline_provider(
    settings: &Settings,
) -> anyhow::Result<(String, Option<usize>, TokenCounter)> {
    let e = &settings.embedding;
    if e.provider != ProviderKind::OpenAi {
        let provider = embed::connect(e, None).await.map_err(anyhow::Error::msg)?;
        return Ok((
            provider.model().to_owned(),
            Some(provider.dimension()),
            provider.token_counter(),
        ));
    }
    let tokens = match &e.tokenizer {
        #[cfg(feature = "minilm")]
        Some(path) => TokenCounter::from_file(path).map_err(anyhow::Error::msg)?,
        #[cfg(not(feature = "minilm"))]
        Some(_) => anyhow::bail!("embedding.tokenizer: built without the `minilm` feature"),
        None => TokenCounter::for_model(&e.model),
    };
    Ok((e.model.clone(), e.vector_dimension(), tokens))
}

fn print_plan(plan: &Plan, counted: &str) {
    let mut table = super::table(&[
        "persona",
        "kind",
        "read",
        "skipped",
        "embed",
        "unchanged",
        "delete",
        "tokens",
        "note",
    ]);
    for job in &plan.jobs {
        let c = &job.plan.counts;
        table.add_row(vec![
            job.persona.clone(),
            job.kind.to_string(),
            c.files_read.to_string(),
            c.files_skipped.to_string(),
            c.chunks_embedded.to_string(),
            c.chunks_unchanged.to_string(),
            if job.plan.deletions_exact {
                c.chunks_deleted.to_string()
            } else {
                format!("≥{}", c.chunks_deleted)
            },
            c.tokens_embedded.to_string(),
            job.error.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    let t = &plan.total;
    let cost = match plan.cost {
        Some(cost) => format!(", costing {cost:.4} at embedding.price_per_million_tokens"),
        None => String::new(),
    };
    println!(
        "dry run: {} file(s) to read, {} unchanged; {} chunk(s) to embed ({} tokens, {counted}){cost}; \
         {} unchanged; {} record(s) to delete. Nothing was embedded or written.",
        t.files_read, t.files_skipped, t.chunks_embedded, t.tokens_embedded, t.chunks_unchanged,
        t.chunks_deleted
    );
}
