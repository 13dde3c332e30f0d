//! `audit` after records were deleted, added and altered behind the engine's back (through
//! Chroma's own Python client for a Chroma server, through the store's API for the embedded
//! store): each is reported, `--repair` mends it embedding only what was lost or altered, and the
//! next audit is clean. One suite, run over both stores.

use std::process::Command;

use persona_ingest::audit::{self, AuditReport, Expected, Finding};
use persona_ingest::pipeline::Engine;
use persona_ingest::record::Record;
use persona_ingest::Kind;
use serde_json::json;

use crate::chroma::engine_on;
use crate::chroma_server::ChromaServer;
use crate::common::*;

/// What was done behind the engine's back.
struct Tampered {
    deleted: Vec<String>,
    added: String,
    altered: String,
}

fn small_persona(world: &World) {
    let story: String = (0..200)
        .map(|i| format!("Paragraph {i} tells of the river, the raft and the fog at night.\n\n"))
        .collect();
    world.write("data/p/works/story.txt", &story);
    world.write("data/p/works/other.txt", story.replace("river", "mountain"));
    let quotes: String = (0..6)
        .map(|i| format!("{{\"text\": \"Quote number {i} about courage.\"}}\n"))
        .collect();
    world.write("data/p/quotes/all_quotes.jsonl", quotes);
}

async fn records(engine: &Engine, collection: &str) -> Vec<Record> {
    let info = engine.store.collection(collection).await.unwrap().unwrap();
    engine.store.records(&info, 0, 10_000).await.unwrap()
}

async fn audit_of(engine: &Engine) -> AuditReport {
    let expected = Expected {
        name_template: &engine.settings.collections.name_template,
        model: engine.provider.model(),
        dimension: engine.provider.dimension(),
    };
    audit::audit(&engine.db, engine.store.as_ref(), &expected, &[])
        .await
        .unwrap()
}

/// The targets: two works records to delete, one new id, one quote to alter.
async fn targets(engine: &Engine) -> Tampered {
    let mut works: Vec<String> = records(engine, "p_works")
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    works.sort();
    let mut quotes: Vec<String> = records(engine, "p_quotes")
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    quotes.sort();
    Tampered {
        deleted: vec![works[3].clone(), works[11].clone()],
        added: "works:data/p/works/intruder.txt:0".into(),
        altered: quotes[2].clone(),
    }
}

/// Ingests the persona, checks a clean audit, and answers what to tamper with.
async fn ingested(engine: &Engine) -> Tampered {
    let outcome = engine
        .ingest(persona("p"), &[Kind::Works, Kind::Quotes])
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let report = audit_of(engine).await;
    assert!(report.is_clean(), "{report:#?}");
    targets(engine).await
}

/// The audit names each thing done.
fn assert_reported(report: &AuditReport, t: &Tampered) {
    assert!(!report.is_clean());
    let kind = |kind: Kind| {
        report.personas[0]
            .kinds
            .iter()
            .find(|k| k.kind == kind)
            .unwrap()
    };
    let works = &kind(Kind::Works).findings;
    let mut deleted = t.deleted.clone();
    deleted.sort();
    assert!(
        works
            .iter()
            .any(|f| matches!(f, Finding::Missing(ids) if ids.all == deleted)),
        "{works:#?}"
    );
    assert!(
        works
            .iter()
            .any(|f| matches!(f, Finding::Extra(ids) if ids.all == [t.added.clone()])),
        "{works:#?}"
    );
    assert!(
        works
            .iter()
            .any(|f| matches!(f, Finding::RowContradicted { .. })),
        "the row says one more than the store holds: {works:#?}"
    );
    let quotes = &kind(Kind::Quotes).findings;
    assert!(
        matches!(&quotes[..], [Finding::Altered(ids)] if ids.all == [t.altered.clone()]),
        "{quotes:#?}"
    );
}

/// After the repair: clean, and only what was lost or altered was embedded again.
async fn assert_repaired(engine: &Engine) {
    let report = audit_of(engine).await;
    assert!(report.is_clean(), "{report:#?}");
    let rows = latest_jobs(&engine.db, "p").await;
    let works = job_of(&rows, Kind::Works);
    let quotes = job_of(&rows, Kind::Quotes);
    assert_eq!((works.chunks_embedded, quotes.chunks_embedded), (2, 1));
    assert!(works.chunks_unchanged > 10, "{}", works.chunks_unchanged);
    assert_store_matches_rows(engine, "p").await;
}

#[actix::test]
async fn the_embedded_store_tampered_with_is_audited_and_repaired_from_the_command_line() {
    let world = World::new();
    small_persona(&world);
    let engine = world.engine(&[]).await;
    let t = ingested(&engine).await;
    let info = |name: &'static str| {
        let store = engine.store.clone();
        async move { store.collection(name).await.unwrap().unwrap() }
    };
    let works = info("p_works").await;
    engine
        .store
        .delete(&works, t.deleted.clone())
        .await
        .unwrap();
    let mut intruder = records(&engine, "p_works").await.remove(0);
    intruder.id = t.added.clone();
    intruder.embedding = vec![0.5; engine.provider.dimension()];
    engine.store.upsert(&works, &[intruder]).await.unwrap();
    let quotes = info("p_quotes").await;
    let mut altered = records(&engine, "p_quotes")
        .await
        .into_iter()
        .find(|r| r.id == t.altered)
        .unwrap();
    altered.document.push_str(" (edited)");
    altered.embedding = vec![0.5; engine.provider.dimension()];
    engine.store.upsert(&quotes, &[altered]).await.unwrap();
    // A collection named as the engine names them, for a persona the database does not know.
    engine
        .store
        .ensure_collection(&persona_ingest::store::CollectionSpec {
            name: "ghost_works".into(),
            embedding_model: engine.provider.model().into(),
            dimension: engine.provider.dimension(),
        })
        .await
        .unwrap();
    let report = audit_of(&engine).await;
    assert_reported(&report, &t);
    assert_eq!(report.orphans.len(), 1);
    assert_eq!(report.orphans[0].collection, "ghost_works");

    let cli = |args: &[&str]| {
        let mut all = vec!["audit", "--json", "--data-root"];
        all.push(world.data_root.to_str().unwrap());
        all.extend(args);
        let db = world.db_url();
        let store = world.store_path();
        crate::cli::persona_ingest(
            world.dir.path(),
            &all,
            &[
                ("DATABASE_URL", &db),
                ("ENGINE__STORE__PATH", store.to_str().unwrap()),
            ],
        )
    };
    let found = cli(&[]);
    assert_eq!(
        found.status.code(),
        Some(1),
        "{}",
        crate::cli::text(&found.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(
        found["audit"]["orphans"][0]["collection"],
        json!("ghost_works")
    );
    // Without --delete-orphans, the ghost's collection is left, and said.
    let kept = cli(&["--repair"]);
    assert_eq!(
        kept.status.code(),
        Some(1),
        "{}",
        crate::cli::text(&kept.stderr)
    );
    let kept: serde_json::Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(kept["repaired"]["deleted_collections"], json!([]));
    assert_eq!(
        kept["repaired"]["deleted_records"],
        json!(2),
        "the intruder and the altered quote"
    );
    assert_eq!(kept["repaired"]["to_embed_again"], json!(3));
    assert!(engine
        .store
        .collection("ghost_works")
        .await
        .unwrap()
        .is_some());
    let repaired = cli(&["--repair", "--delete-orphans"]);
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}",
        crate::cli::text(&repaired.stderr)
    );
    let repaired: serde_json::Value = serde_json::from_slice(&repaired.stdout).unwrap();
    assert_eq!(
        repaired["repaired"]["deleted_collections"],
        json!(["ghost_works"])
    );
    assert!(engine
        .store
        .collection("ghost_works")
        .await
        .unwrap()
        .is_none());
    assert_repaired(&engine).await;
}

#[actix::test]
async fn a_chroma_server_tampered_with_through_its_own_client_is_audited_and_repaired() {
    let server = ChromaServer::start().await;
    let world = World::new();
    small_persona(&world);
    let engine = engine_on(&world, &server, &[]).await;
    let t = ingested(&engine).await;
    let script = r#"
import json, sys
import chromadb
args = json.loads(sys.argv[1])
client = chromadb.HttpClient(host=args["host"], port=args["port"])
works = client.get_collection("p_works", embedding_function=None)
works.delete(ids=args["deleted"])
some = works.get(limit=1, include=["embeddings", "documents", "metadatas"])
works.add(ids=[args["added"]], documents=["an intruder"],
          embeddings=[list(map(float, some["embeddings"][0]))], metadatas=[some["metadatas"][0]])
quotes = client.get_collection("p_quotes", embedding_function=None)
quote = quotes.get(ids=[args["altered"]], include=["embeddings", "documents"])
quotes.update(ids=[args["altered"]], documents=[quote["documents"][0] + " (edited)"],
              embeddings=[list(map(float, quote["embeddings"][0]))])
"#;
    let url = server.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let args = json!({
        "host": "127.0.0.1", "port": port,
        "deleted": t.deleted, "added": t.added, "altered": t.altered,
    });
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let out = Command::new(python)
        .args(["-c", script, &args.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = audit_of(&engine).await;
    assert_reported(&report, &t);

    let repaired = audit::repair(&engine.db, engine.store.as_ref(), &report, false)
        .await
        .unwrap();
    assert_eq!((repaired.deleted_records, repaired.to_embed_again), (2, 3));
    for (who, kinds) in &repaired.ingest {
        assert!(engine
            .ingest(persona(who), kinds)
            .await
            .unwrap()
            .succeeded());
    }
    assert_repaired(&engine).await;
}
