//! The audit's pure parts: whose a collection name is, and the record-by-record comparison.

use super::*;
use crate::manifest::FileEntry;

#[test]
fn a_collection_name_is_read_back_into_its_persona_and_kind() {
    assert_eq!(
        owner_of("{persona}_{kind}", "mark-twain_works"),
        Some(("mark-twain".into(), Kind::Works))
    );
    assert_eq!(
        owner_of("persona-{kind}-{persona}", "persona-quotes-jane-austen"),
        Some(("jane-austen".into(), Kind::Quotes))
    );
    assert_eq!(owner_of("{persona}_{kind}", "someone_elses"), None);
    assert_eq!(owner_of("{persona}_{kind}", "Not A Slug_works"), None);
}

#[test]
fn records_are_compared_by_id_and_hash() {
    let entry = FileEntry {
        source: "data/p/works/a.txt".into(),
        bytes: 1,
        modified_ns: 1,
        changed_ns: 1,
        inode: 1,
        content_hash: String::new(),
        chunks: vec![(0, 10), (1, 11), (2, 12)],
        fingerprint: "f".into(),
        recorded_ns: 0,
    };
    let manifest = KindManifest {
        files: [(entry.source.clone(), entry)].into_iter().collect(),
        settled: true,
    };
    let id = |i| crate::ids::record_id(Kind::Works, "data/p/works/a.txt", i);
    let held: HashMap<String, u64> = [(id(0), 10), (id(1), 99), (id(7), 1)].into_iter().collect();
    let findings = compare(Kind::Works, &manifest, &held);
    let listed = |f: &Finding| match f {
        Finding::Missing(l) => ("missing", l.all.clone()),
        Finding::Extra(l) => ("extra", l.all.clone()),
        Finding::Altered(l) => ("altered", l.all.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        findings.iter().map(listed).collect::<Vec<_>>(),
        [
            ("missing", vec![id(2)]),
            ("extra", vec![id(7)]),
            ("altered", vec![id(1)]),
        ]
    );
}
