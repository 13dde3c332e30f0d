//! One conformance suite a seam, run over every implementation, as Quickwit runs one storage
//! suite over every backend: [`vector_store`] over the embedded store, Chroma and
//! [`MemoryStore`](super::MemoryStore); [`embedding_provider`] over the hashing and minilm
//! embedders, the OpenAI-compatible client against each server's stand-in, and
//! [`ScriptedProvider`](super::ScriptedProvider). Each check panics naming the implementation
//! and what it got wrong.

use crate::embed::EmbeddingProvider;
use crate::record::Record;
use crate::record::{MetaValue, Metadata};
use crate::store::{CollectionSpec, VectorStore};

fn unit(dimension: usize, at: usize) -> Vec<f32> {
    let mut v = vec![0.0; dimension];
    v[at % dimension] = 1.0;
    v
}

fn record(i: usize, dimension: usize, document: &str) -> Record {
    let mut metadata = Metadata::new();
    metadata.insert("source".into(), MetaValue::Str(format!("works/{i}.txt")));
    metadata.insert("chunk_index".into(), MetaValue::Int(i as i64));
    metadata.insert("year".into(), MetaValue::Float(1876.5));
    metadata.insert("verified".into(), MetaValue::Bool(i.is_multiple_of(2)));
    Record {
        id: format!("works:works/{i}.txt:{i}"),
        document: document.to_owned(),
        metadata,
        embedding: unit(dimension, i),
    }
}

/// What every [`VectorStore`] must do. `prefix` makes the collection names this run's own (a
/// shared server keeps other tests' collections); the store should be otherwise empty of them.
pub async fn vector_store(name: &str, store: &dyn VectorStore, prefix: &str) {
    let dimension = 8;
    let spec = CollectionSpec {
        name: format!("{prefix}_works"),
        embedding_model: "conformance-model".into(),
        dimension,
    };
    assert!(
        store.max_batch_size().await.unwrap() >= 1,
        "{name}: max_batch_size"
    );
    assert_eq!(
        store.collection(&spec.name).await.unwrap(),
        None,
        "{name}: a collection never made is not found"
    );
    let info = store.ensure_collection(&spec).await.unwrap();
    assert_eq!(
        (
            info.name.as_str(),
            info.embedding_model.as_str(),
            info.dimension
        ),
        (spec.name.as_str(), "conformance-model", dimension),
        "{name}: the collection made"
    );
    assert_eq!(
        store.ensure_collection(&spec).await.unwrap(),
        info,
        "{name}: got again, the same"
    );
    for other in [
        CollectionSpec {
            dimension: 16,
            ..spec.clone()
        },
        CollectionSpec {
            embedding_model: "another-model".into(),
            ..spec.clone()
        },
    ] {
        let refused = store.ensure_collection(&other).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("refusing")),
            "{name}: another model or dimension refused, got {refused:?}"
        );
    }

    let records: Vec<Record> = (0..5)
        .map(|i| record(i, dimension, &format!("document {i} 春 🎉")))
        .collect();
    store.upsert(&info, &records).await.unwrap();
    assert_eq!(store.count(&info).await.unwrap(), 5, "{name}: count");

    // Upsert replaces by id: the count holds, the document is the new one.
    let mut changed = records[2].clone();
    changed.document = "document 2, rewritten".into();
    store.upsert(&info, &[changed]).await.unwrap();
    assert_eq!(
        store.count(&info).await.unwrap(),
        5,
        "{name}: upsert replaces"
    );

    let hits = store.query(&info, &unit(dimension, 2), 2).await.unwrap();
    assert_eq!(hits.len(), 2, "{name}: k hits");
    assert_eq!(hits[0].id, records[2].id, "{name}: nearest first");
    assert_eq!(
        hits[0].document, "document 2, rewritten",
        "{name}: document"
    );
    assert!(
        (hits[0].score - 1.0).abs() < 1e-4 && hits[1].score < 0.5,
        "{name}: cosine similarity scores, got {} and {}",
        hits[0].score,
        hits[1].score
    );
    assert_eq!(
        hits[0].metadata, records[2].metadata,
        "{name}: metadata kept whole"
    );

    let mut ids = Vec::new();
    for offset in (0..5).step_by(2) {
        ids.extend(store.ids(&info, offset, 2).await.unwrap());
    }
    ids.sort();
    let mut expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "{name}: pages of ids cover every record once"
    );
    let mut read = Vec::new();
    for offset in (0..5).step_by(2) {
        read.extend(store.records(&info, offset, 2).await.unwrap());
    }
    read.sort_by(|a, b| a.id.cmp(&b.id));
    let mut written = records.clone();
    written[2].document = "document 2, rewritten".into();
    for (got, want) in read.iter().zip(&written) {
        assert_eq!(
            (&got.id, &got.document, &got.metadata),
            (&want.id, &want.document, &want.metadata),
            "{name}: records read back as written"
        );
        // What the manifest and the audit compare: the same hash read back as written.
        assert_eq!(
            crate::manifest::hash_of(got),
            crate::manifest::hash_of(want),
            "{name}: a record read back hashes as written"
        );
    }
    assert_eq!(read.len(), 5, "{name}: pages of records cover every record");
    let wanted = [
        records[3].id.clone(),
        "no such id".to_owned(),
        records[4].id.clone(),
    ];
    let mut got = store.get(&info, &wanted).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got.len(), 2, "{name}: get answers the ids it holds");
    for (got, want) in got.iter().zip(&records[3..]) {
        assert_eq!(
            (&got.id, &got.document, &got.metadata),
            (&want.id, &want.document, &want.metadata),
            "{name}: get"
        );
        let close = got
            .embedding
            .iter()
            .zip(&want.embedding)
            .all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(
            close && got.embedding.len() == want.embedding.len(),
            "{name}: get answers the vectors as written"
        );
    }
    let listed = store.collections().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.name == info.name && c.dimension == dimension),
        "{name}: the collection is listed, got {listed:?}"
    );

    store
        .delete(&info, vec![records[0].id.clone(), records[1].id.clone()])
        .await
        .unwrap();
    assert_eq!(store.count(&info).await.unwrap(), 3, "{name}: delete");
    let hits = store.query(&info, &unit(dimension, 0), 5).await.unwrap();
    assert!(
        hits.iter().all(|h| h.id != records[0].id),
        "{name}: a deleted record is not found"
    );

    store.delete_collection(&info.name).await.unwrap();
    assert!(
        store.collection(&info.name).await.unwrap().is_none(),
        "{name}: a deleted collection is gone"
    );
    store.delete_collection(&info.name).await.unwrap();
}

/// What every [`EmbeddingProvider`] must do: one vector a text, of its dimension, finite, in
/// the texts' order (the same vector for a text alone or among others), for text of any script.
pub async fn embedding_provider(name: &str, provider: &dyn EmbeddingProvider) {
    let dimension = provider.dimension();
    assert!(dimension > 0, "{name}: a dimension");
    assert!(!provider.model().is_empty(), "{name}: a model name");
    let texts: Vec<String> = [
        "Call me Ishmael.",
        "春眠不觉晓，处处闻啼鸟。",
        "नमस्ते दुनिया",
        "مرحبا بالعالم",
        "👩‍👩‍👧 family",
        "The river, the raft, and the long night.",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let vectors = provider.embed(texts.clone()).await.unwrap();
    assert_eq!(vectors.len(), texts.len(), "{name}: one vector a text");
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_eq!(vector.len(), dimension, "{name}: dimension of {text:?}");
        assert!(
            vector.iter().all(|x| x.is_finite()),
            "{name}: finite values for {text:?}"
        );
    }
    let reversed: Vec<String> = texts.iter().rev().cloned().collect();
    let back = provider.embed(reversed).await.unwrap();
    for (i, vector) in back.iter().rev().enumerate() {
        let cosine = cosine(vector, &vectors[i]);
        assert!(
            cosine > 0.9999,
            "{name}: {:?} in another order, another place: cosine {cosine}",
            texts[i]
        );
    }
    let alone = provider.embed(vec![texts[1].clone()]).await.unwrap();
    assert!(
        cosine(&alone[0], &vectors[1]) > 0.9999,
        "{name}: a text alone as among others"
    );
    let counter = provider.token_counter();
    assert!(
        counter.count(&texts[0]) >= 1 && counter.count(&texts[1]) >= 1,
        "{name}: tokens counted"
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::HashingEmbedder;
    use crate::store::EmbeddedStore;
    use crate::testkit::{MemoryStore, ScriptedProvider};

    #[actix::test]
    async fn the_embedded_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("vectors.db"))
            .await
            .unwrap();
        vector_store("embedded", &store, "conf").await;
    }

    #[actix::test]
    async fn the_testkits_memory_store_conforms() {
        vector_store("memory", &MemoryStore::new(100), "conf").await;
    }

    #[actix::test]
    async fn the_local_and_scripted_providers_conform() {
        embedding_provider("local", &HashingEmbedder::new(384)).await;
        embedding_provider("scripted", &ScriptedProvider::new(4)).await;
    }
}
