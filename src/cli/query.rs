//! `persona-ingest query`: the records of a persona's collection nearest to a text.

use clap::Args;

use crate::config::Settings;
use crate::{embed, store, Kind, PersonaId};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The persona whose collection to search.
    pub persona: String,
    /// The text to look for.
    pub text: String,
    /// Which collection.
    #[arg(long, value_parser = super::parse_kind, default_value = "works")]
    pub kind: Kind,
    /// How many records.
    #[arg(short = 'k', long, default_value_t = 5)]
    pub k: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &QueryArgs, settings: Settings) -> anyhow::Result<i32> {
    let persona = match PersonaId::parse(&args.persona) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let store = store::from_settings(&settings.store).await?;
    let provider = embed::connect(&settings.embedding, None)
        .await
        .map_err(anyhow::Error::msg)?;
    let name = settings.collection_name(persona.as_str(), args.kind.as_str());
    let Some(collection) = store.collection(&name).await? else {
        eprintln!(
            "error: no collection {name} in the {}: ingest the persona first (persona-ingest ingest {persona})",
            store.describe()
        );
        return Ok(1);
    };
    let wanted = crate::store::CollectionSpec {
        name: name.clone(),
        embedding_model: provider.model().to_owned(),
        dimension: provider.dimension(),
    };
    // The store's own rule for what a collection accepts, read as what it can answer.
    if wanted.accepts(collection.clone()).is_err() {
        eprintln!(
            "error: collection {name} holds {} vectors of dimension {}, but the configured embedder is {} of dimension {}",
            collection.embedding_model,
            collection.dimension,
            provider.model(),
            provider.dimension()
        );
        return Ok(1);
    }
    let vector = provider
        .embed(vec![args.text.clone()])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the embedder returned no vector"))?;
    let hits = store.query(&collection, &vector, args.k).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(0);
    }
    if hits.is_empty() {
        println!("collection {name} is empty");
    }
    for (rank, hit) in hits.iter().enumerate() {
        let source = hit
            .metadata
            .get("source")
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut text: String = hit
            .document
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.chars().count() > 300 {
            text = text.chars().take(300).collect::<String>() + "…";
        }
        println!(
            "{}. {:.3}  {}  [{}]\n   {}\n",
            rank + 1,
            hit.score,
            source,
            hit.id,
            text
        );
    }
    Ok(0)
}
