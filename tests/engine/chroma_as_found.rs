//! Chroma as found (case 6 of the OpenAI-compatible issue), on real Chroma servers of each test's
//! own: collections other code made, a server's request-size limit, token authentication, and
//! the vector-store conformance suite.

use std::sync::Arc;

use actix::prelude::*;
use persona_ingest::actors::store_writer::{StoreWriter, WriterLimits};
use persona_ingest::record::Metadata;
use persona_ingest::record::Record;
use persona_ingest::store::{CollectionSpec, VectorStore};
use persona_ingest::{JobStatus, Kind};

use crate::chroma::{engine_on, store, PERSONA};
use crate::chroma_server::ChromaServer;
use crate::common::*;

fn collections_url(server: &ChromaServer) -> String {
    format!(
        "{}/api/v2/tenants/default_tenant/databases/default_database/collections",
        server.url()
    )
}

/// Makes a collection as other code would (`chromadb.create_collection(name)`: no metadata, l2
/// space), holding one record of `dimension` if given.
async fn made_by_other_code(server: &ChromaServer, name: &str, dimension: Option<usize>) {
    let http = reqwest::Client::new();
    let made: serde_json::Value = http
        .post(collections_url(server))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(dimension) = dimension {
        let mut vector = vec![0.0f32; dimension];
        vector[0] = 1.0;
        let status = http
            .post(format!(
                "{}/{}/upsert",
                collections_url(server),
                made["id"].as_str().unwrap()
            ))
            .json(&serde_json::json!({
                "ids": ["theirs"], "embeddings": [vector], "documents": ["their record"]
            }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }
}

/// Case 6: a collection another program made (no model metadata) is adopted when it is empty or
/// holds vectors of the wanted size, its metadata stamped; one of another size is refused, naming
/// both sizes; with `store.adopt_collections = false` any is refused.
#[actix::test]
async fn a_collection_made_by_other_code_is_adopted_unless_its_vectors_differ() {
    let server = ChromaServer::start().await;
    let world = World::new();
    world.write(
        "personas/p/profile.md",
        "# P\n\n## Life\nBorn, wrote, died.\n",
    );
    world.write(
        "data/p/works/a.txt",
        "A short work about whales.\n\nAnd the sea.\n",
    );
    world.write(
        "data/p/quotes/all_quotes.jsonl",
        "{\"text\": \"one quote\"}\n",
    );
    made_by_other_code(&server, "p_works", None).await;
    made_by_other_code(&server, "p_quotes", Some(384)).await;
    made_by_other_code(&server, "p_profile", Some(16)).await;

    let engine = engine_on(&world, &server, &[]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    let rows = latest_jobs(&engine.db, "p").await;
    assert_eq!(job_of(&rows, Kind::Works).status, JobStatus::Completed);
    assert_eq!(job_of(&rows, Kind::Quotes).status, JobStatus::Completed);
    let profile = job_of(&rows, Kind::Profile);
    assert_eq!(profile.status, JobStatus::Failed);
    assert!(
        profile.error_message.as_deref().unwrap().contains(
            "collection p_profile holds unknown vectors of dimension 16; refusing to write"
        ),
        "{:?}",
        profile.error_message
    );
    assert!(!outcome.succeeded());
    let works = engine.store.collection("p_works").await.unwrap().unwrap();
    assert_eq!(
        (works.embedding_model.as_str(), works.dimension),
        ("local-hash-v1", 384)
    );
    // Its space is Chroma's default, l2: scores are still cosine similarities.
    let query = "A short work about whales.";
    let best = nearest(&engine, "p_works", query, 1).await;
    let embedder = persona_ingest::embed::HashingEmbedder::new(384);
    let cosine: f32 = embedder
        .embed_one(query)
        .iter()
        .zip(embedder.embed_one(&best[0].document))
        .map(|(a, b)| a * b)
        .sum();
    assert!(
        (best[0].score - cosine).abs() < 1e-3,
        "{} vs {cosine}",
        best[0].score
    );
    assert_eq!(
        store_count(&engine, "p_quotes").await,
        1,
        "their record was stale: pruned"
    );

    let world = World::new();
    world.write("data/q/works/a.txt", "Text.\n");
    made_by_other_code(&server, "q_works", None).await;
    let engine = engine_on(&world, &server, &[("store.adopt_collections", "false")]).await;
    let outcome = engine.ingest(persona("q"), &[Kind::Works]).await.unwrap();
    assert!(outcome
        .error
        .unwrap()
        .contains("holds unknown vectors of dimension 0"));
}

/// Case 6: upserts over the server's request-size limit (3072-dimension vectors, a few hundred a
/// batch) are answered 413; they are sent again smaller, and the smaller size kept. Nothing is
/// lost, and the records read back whole.
#[actix::test]
async fn upserts_over_the_servers_request_limit_are_sent_smaller() {
    let server = ChromaServer::start_with(Some(1_000_000)).await;
    let store: Arc<dyn VectorStore> = Arc::new(store(&server.url()));
    let writer = StoreWriter::new(store.clone(), WriterLimits::default()).start();
    let spec = CollectionSpec {
        name: "large_works".into(),
        embedding_model: "text-embedding-3-large".into(),
        dimension: 3072,
    };
    let records: Vec<Record> = (0..300)
        .map(|i| Record {
            id: format!("works:x:{i}"),
            document: format!("document {i}"),
            metadata: Metadata::new(),
            embedding: (0..3072)
                .map(|j| ((i * 3072 + j) as f32).sin() / 55.4)
                .collect(),
        })
        .collect();
    // 300 such records are about 11 MB of JSON: ten times what the server takes.
    let written = crate::chroma::write(&writer, spec.clone(), records)
        .await
        .unwrap();
    assert_eq!(written, 300);
    let info = store.collection("large_works").await.unwrap().unwrap();
    assert_eq!(store.count(&info).await.unwrap(), 300);
}

/// A Chroma behind token authentication: refused without the token, naming the status; served
/// with it (sent as `Authorization: Bearer` and `X-Chroma-Token`).
#[actix::test]
async fn a_chroma_behind_token_authentication_is_reached_with_the_token() {
    let server = ChromaServer::start().await;
    let proxy = crate::auth_proxy::AuthProxy::start(
        server.url().trim_start_matches("http://").to_owned(),
        "s3cret",
    );
    let world = World::reading(examples_root());
    let settings = |token: &'static str| {
        let mut s = vec![("store.kind", "chroma"), ("store.url", proxy.url.as_str())];
        if !token.is_empty() {
            s.push(("store.auth_token", token));
        }
        world.settings(&s)
    };
    let engine = persona_ingest::pipeline::Engine::start(settings(""))
        .await
        .unwrap();
    let outcome = engine
        .ingest(persona(PERSONA), &[Kind::Profile])
        .await
        .unwrap();
    let error = outcome.error.unwrap();
    assert!(error.contains("401 Unauthorized"), "{error}");
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);

    let engine = persona_ingest::pipeline::Engine::start(settings("s3cret"))
        .await
        .unwrap();
    let outcome = engine
        .ingest(persona(PERSONA), &[Kind::Profile])
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    assert_store_matches_rows(&engine, PERSONA).await;
}

/// The vector-store suite every store passes (see `testkit::conformance`), on a real Chroma.
#[actix::test]
async fn chroma_conforms_to_the_vector_store_suite() {
    let server = ChromaServer::start().await;
    persona_ingest::testkit::conformance::vector_store("chroma", &store(&server.url()), "conf")
        .await;
}
