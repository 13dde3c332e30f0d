//! The manifest alone: judging files on disk, hashing records, and its rows in SQLite.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::DatabaseSettings;
use crate::record::{MetaValue, Metadata};
use crate::sources::SourceFile;
use crate::PersonaId;

fn file_at(dir: &std::path::Path, name: &str, text: &str) -> SourceFile {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    SourceFile {
        rel: format!("data/p/works/{name}"),
        bytes: text.len() as u64,
        path,
    }
}

/// Sets the file's modification time `ago` before now.
fn age(file: &SourceFile, ago: Duration) {
    let f = std::fs::File::options()
        .write(true)
        .open(&file.path)
        .unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

/// A row for `file` as a run that judged it at `judged` (after now: as if long after its last
/// change, which a test cannot make of a change time) and made `chunks` would write it.
fn row_of(file: &SourceFile, judged: i64, chunks: Vec<(u32, u64)>) -> FileEntry {
    let Verdict::Changed {
        content_hash,
        stamp,
        ..
    } = judge(&file.path, file.bytes, None).unwrap()
    else {
        panic!("no row: changed")
    };
    FileEntry {
        source: file.rel.clone(),
        bytes: file.bytes,
        modified_ns: stamp.modified_ns,
        changed_ns: stamp.changed_ns,
        inode: stamp.inode,
        content_hash,
        chunks,
        fingerprint: "f".into(),
        recorded_ns: judged,
    }
}

const LATER: i64 = 10_000_000_000;

#[test]
fn a_file_is_judged_by_its_stamp_then_by_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_at(dir.path(), "a.txt", "one two three");
    age(&file, Duration::from_secs(60));
    let row = row_of(&file, now_ns() + LATER, vec![(0, 7)]);
    assert_eq!(
        judge(&file.path, file.bytes, Some(&row)).unwrap(),
        Verdict::Unchanged(row.clone()),
        "unopened"
    );

    // Touched, same bytes: unchanged, its new stamp kept.
    age(&file, Duration::from_secs(10));
    let Verdict::Unchanged(touched) = judge(&file.path, file.bytes, Some(&row)).unwrap() else {
        panic!("same bytes")
    };
    assert_ne!(touched.modified_ns, row.modified_ns);
    assert_eq!(touched.chunks, row.chunks);
    // No row: changed.
    assert!(matches!(
        judge(&file.path, file.bytes, None).unwrap(),
        Verdict::Changed { .. }
    ));
}

#[test]
fn a_file_replaced_by_one_of_the_same_size_and_time_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_at(dir.path(), "a.txt", "one two three");
    age(&file, Duration::from_secs(3600));
    let row = row_of(&file, now_ns() + LATER, vec![(0, 7)]);
    let old_time = std::fs::metadata(&file.path).unwrap().modified().unwrap();
    // Another file of as many bytes, given the old time (`touch -r`) and moved in (`mv`).
    let copy = dir.path().join("copy.txt");
    std::fs::write(&copy, "one two threE").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    std::fs::rename(&copy, &file.path).unwrap();
    assert!(
        matches!(
            judge(&file.path, file.bytes, Some(&row)).unwrap(),
            Verdict::Changed { .. }
        ),
        "its inode and change time tell"
    );
}

#[test]
fn a_change_in_the_clock_tick_of_the_last_read_is_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_at(dir.path(), "a.txt", "first version");
    // Judged the moment it was written (a coarse clock gives both the same time), then
    // rewritten within that tick with as many bytes: only its hash can tell.
    let row = row_of(&file, now_ns(), vec![(0, 1)]);
    let stamp = std::fs::metadata(&file.path).unwrap().modified().unwrap();
    let rewritten = file_at(dir.path(), "a.txt", "other version");
    std::fs::File::options()
        .write(true)
        .open(&rewritten.path)
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    assert!(matches!(
        judge(&rewritten.path, rewritten.bytes, Some(&row)).unwrap(),
        Verdict::Changed { .. }
    ));
}

#[test]
fn a_record_hashes_alike_whenever_its_id_document_and_metadata_are_alike() {
    let mut metadata = Metadata::new();
    metadata.insert("b".into(), MetaValue::Int(2));
    metadata.insert("a".into(), MetaValue::Str("x".into()));
    let h = record_hash("works:s:0", "text", &metadata);
    let mut reordered = Metadata::new();
    reordered.insert("a".into(), MetaValue::Str("x".into()));
    reordered.insert("b".into(), MetaValue::Int(2));
    assert_eq!(record_hash("works:s:0", "text", &reordered), h);
    assert_ne!(record_hash("works:s:1", "text", &metadata), h);
    assert_ne!(record_hash("works:s:0", "text.", &metadata), h);
    reordered.insert("b".into(), MetaValue::Int(3));
    assert_ne!(record_hash("works:s:0", "text", &reordered), h);
    // The hash of the metadata's JSON text, as manifests of before hold it.
    let text = serde_json::to_string(&metadata).unwrap();
    let old = xxhash_rust::xxh3::xxh3_64(
        &[
            b"works:s:0".as_slice(),
            &[0xff],
            b"text",
            &[0xff],
            text.as_bytes(),
        ]
        .concat(),
    );
    assert_eq!(h, old);
}

#[test]
fn the_fingerprint_changes_with_what_makes_records() {
    let settings = crate::config::Settings::load(&Default::default()).unwrap();
    let base = fingerprint(&settings, Kind::Works, "m", 384);
    assert_eq!(fingerprint(&settings, Kind::Works, "m", 384), base);
    assert_ne!(fingerprint(&settings, Kind::Works, "m2", 384), base);
    assert_ne!(fingerprint(&settings, Kind::Works, "m", 256), base);
    let mut chunking = settings.clone();
    chunking.chunking.target_tokens += 1;
    assert_ne!(fingerprint(&chunking, Kind::Works, "m", 384), base);
    // Quotes are not chunked: their records do not depend on it.
    assert_eq!(
        fingerprint(&chunking, Kind::Quotes, "m", 384),
        fingerprint(&settings, Kind::Quotes, "m", 384)
    );
    // The input limit decides which quotes are refused: it is the quotes' alone.
    let mut limit = settings.clone();
    limit.embedding.max_input_tokens -= 1;
    assert_ne!(
        fingerprint(&limit, Kind::Quotes, "m", 384),
        fingerprint(&settings, Kind::Quotes, "m", 384)
    );
    assert_eq!(fingerprint(&limit, Kind::Works, "m", 384), base);
    let mut moved = settings.clone();
    moved.embedding.base_url = "http://elsewhere:8000/v1".into();
    assert_eq!(
        fingerprint(&moved, Kind::Works, "m", 384),
        base,
        "the same model elsewhere"
    );
}

#[tokio::test]
async fn rows_are_replaced_unsettled_and_forgotten() {
    let db = crate::db::connect(&DatabaseSettings {
        url: "sqlite::memory:".into(),
        max_connections: 1,
    })
    .await
    .unwrap();
    let persona = PersonaId::parse("p").unwrap();
    let entry = |source: &str, chunks: Vec<(u32, u64)>| FileEntry {
        source: source.into(),
        bytes: 10,
        modified_ns: 5,
        changed_ns: 6,
        inode: 7,
        content_hash: "0".repeat(32),
        chunks,
        fingerprint: "f".into(),
        recorded_ns: 1_000_000_000,
    };
    let a = entry("data/p/works/a.txt", vec![(0, u64::MAX), (1, 1)]);
    let b = entry("data/p/works/b.txt", vec![(0, 2)]);
    let quotes = entry("data/p/quotes/all_quotes.jsonl", vec![(3, 3), (9, 4)]);
    let replace = |kind, entries: Vec<FileEntry>| ManifestChange::Replace {
        persona: persona.clone(),
        kind,
        entries: Arc::new(entries),
    };
    replace(Kind::Works, vec![a.clone(), b.clone()])
        .apply(&db)
        .await
        .unwrap();
    replace(Kind::Quotes, vec![quotes.clone()])
        .apply(&db)
        .await
        .unwrap();
    let loaded = load(&db, &persona, &[Kind::Works, Kind::Quotes])
        .await
        .unwrap();
    assert_eq!(
        loaded[&Kind::Works].files[&a.source],
        a,
        "hashes survive as hex"
    );
    assert_eq!(loaded[&Kind::Works].records(), 3);
    assert!(loaded[&Kind::Works].settled);
    assert_eq!(
        loaded[&Kind::Quotes].files[&quotes.source].chunk_hash(9),
        Some(4)
    );

    unsettle(&db, &persona, &[Kind::Works]).await.unwrap();
    let loaded = load(&db, &persona, &[Kind::Works, Kind::Quotes])
        .await
        .unwrap();
    assert!(!loaded[&Kind::Works].settled);
    assert!(loaded[&Kind::Quotes].settled, "another kind is left alone");

    let change = ManifestChange::Forget {
        persona: persona.clone(),
        kind: Kind::Works,
        sources: vec![a.source.clone()],
    };
    change.apply(&db).await.unwrap();
    let works = load(&db, &persona, &[Kind::Works]).await.unwrap()[&Kind::Works].clone();
    assert!(works.settled);
    assert_eq!(works.files.keys().collect::<Vec<_>>(), [&b.source]);

    let replaced = ManifestChange::Replace {
        persona: persona.clone(),
        kind: Kind::Works,
        entries: Arc::new(vec![a.clone()]),
    };
    replaced.apply(&db).await.unwrap();
    let works = load(&db, &persona, &[Kind::Works]).await.unwrap()[&Kind::Works].clone();
    assert_eq!(works.files.keys().collect::<Vec<_>>(), [&a.source]);
}
