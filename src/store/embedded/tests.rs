//! The embedded store alone, on a file of its own.

use super::*;
use crate::record::MetaValue;

fn record(id: &str, embedding: Vec<f32>) -> Record {
    Record {
        id: id.into(),
        document: format!("doc {id}"),
        metadata: Metadata::from([("kind".to_string(), MetaValue::from("works"))]),
        embedding,
    }
}

fn spec(model: &str, dimension: usize) -> CollectionSpec {
    CollectionSpec {
        name: "p_works".into(),
        embedding_model: model.into(),
        dimension,
    }
}

#[tokio::test]
async fn upserts_replace_by_id_and_queries_rank_by_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("v.db")).await.unwrap();
    let c = store.ensure_collection(&spec("m", 2)).await.unwrap();
    store
        .upsert(
            &c,
            &[record("a", vec![1.0, 0.0]), record("b", vec![0.0, 1.0])],
        )
        .await
        .unwrap();
    store
        .upsert(&c, &[record("a", vec![0.6, 0.8])])
        .await
        .unwrap();
    assert_eq!(store.count(&c).await.unwrap(), 2);
    let hits = store.query(&c, &[0.0, 1.0], 5).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert!((hits[1].score - 0.8).abs() < 1e-6);
    assert_eq!(hits[0].metadata["kind"], MetaValue::from("works"));
    store.delete(&c, vec!["a".into()]).await.unwrap();
    assert_eq!(store.ids(&c, 0, 10).await.unwrap(), ["b"]);
}

#[tokio::test]
async fn another_model_or_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("v.db")).await.unwrap();
    let c = store.ensure_collection(&spec("m", 2)).await.unwrap();
    let message = store
        .ensure_collection(&spec("other", 3))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "collection p_works holds m vectors of dimension 2; refusing to write other vectors of dimension 3 into it"
    );
    let wrong = store
        .upsert(&c, &[record("x", vec![1.0, 2.0, 3.0])])
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("dimension 3"), "{wrong}");
}
