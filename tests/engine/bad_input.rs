//! Bad input: each case fails (or warns) clearly, naming the file, line or key, and leaves no
//! job processing and nothing reported as done that was not. (Long: one test a kind of bad
//! input, over one set of helpers.)

use persona_ingest::pipeline::Engine;
use persona_ingest::{JobStatus, Kind, PersonaId, PersonaStatus};

use crate::common::*;

const QUOTES: &str = "data/p/quotes/all_quotes.jsonl";

fn with_profile_and_works(world: &World) {
    world.write(
        "personas/p/profile.md",
        "# P\n\n## Life\nBorn, wrote, died.\n",
    );
    world.write(
        "data/p/works/a.txt",
        "A short work.\n\nWith two paragraphs.\n",
    );
}

fn quotes_with_a_bad_third_line(world: &World) {
    world.write(
        QUOTES,
        "{\"text\": \"one\", \"author\": \"P\"}\n{\"text\": \"two\"}\n{\"text\": \"three\", oops}\n{\"text\": \"four\"}\n",
    );
}

#[actix::test]
async fn a_malformed_quote_fails_the_quotes_job_in_strict_mode_with_nothing_written() {
    let world = World::new();
    with_profile_and_works(&world);
    quotes_with_a_bad_third_line(&world);
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(!outcome.succeeded());

    let rows = latest_jobs(&engine.db, "p").await;
    let quotes = job_of(&rows, Kind::Quotes);
    assert_eq!(quotes.status, JobStatus::Failed);
    let error = quotes.error_message.as_deref().unwrap();
    assert!(
        error.starts_with("data/p/quotes/all_quotes.jsonl:3: malformed JSON"),
        "{error}"
    );
    assert_eq!(quotes.total_vectors, 0);
    assert!(quotes.completed_at.is_some());
    assert_eq!(
        store_count(&engine, "p_quotes").await,
        0,
        "strict mode writes nothing"
    );
    assert_eq!(job_of(&rows, Kind::Works).status, JobStatus::Completed);

    let persona_row = persona_row(&engine.db, "p").await;
    assert_eq!(persona_row.status, PersonaStatus::Failed);
    assert!(persona_row
        .error_message
        .unwrap()
        .starts_with("failed: quotes (data/p/quotes/all_quotes.jsonl:3"));
    assert_nothing_processing(&engine.db).await;
}

#[actix::test]
async fn skip_mode_skips_bad_quotes_and_says_which() {
    let world = World::new();
    with_profile_and_works(&world);
    quotes_with_a_bad_third_line(&world);
    let engine = world.engine(&[("quotes.on_bad_record", "skip")]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(outcome.succeeded(), "{outcome:#?}");
    let rows = latest_jobs(&engine.db, "p").await;
    let quotes = job_of(&rows, Kind::Quotes);
    assert_eq!(quotes.status, JobStatus::Completed);
    assert_eq!(quotes.total_vectors, 3);
    let warning = quotes.warning_message.as_deref().unwrap();
    assert!(
        warning.starts_with(
            "skipped 1 bad quote record(s): data/p/quotes/all_quotes.jsonl:3: malformed JSON"
        ),
        "{warning}"
    );
    assert_store_matches_rows(&engine, "p").await;
}

#[actix::test]
async fn a_file_that_is_not_utf8_fails_naming_the_file_and_line() {
    let world = World::new();
    with_profile_and_works(&world);
    world.copy_from_corpus(
        "raw/jamesft-quotes-cp1252.json",
        "data/p/works/windows-1252.txt",
    );
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(!outcome.succeeded());
    let works = job_of(&latest_jobs(&engine.db, "p").await, Kind::Works).clone();
    assert_eq!(works.status, JobStatus::Failed);
    let error = works.error_message.unwrap();
    assert!(
        error.starts_with("data/p/works/windows-1252.txt:") && error.contains("not valid UTF-8"),
        "{error}"
    );
    assert_nothing_processing(&engine.db).await;
}

#[test]
fn a_path_as_persona_id_is_refused_before_any_path_is_built() {
    for bad in ["../../etc", "..", "/etc/passwd", "p/../../x"] {
        let err = PersonaId::parse(bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("invalid persona id {bad:?}")),
            "{err}"
        );
    }
}

#[actix::test]
async fn a_missing_persona_fails_every_job_saying_where_it_looked() {
    let world = World::new();
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("ghost"), &Kind::ALL).await.unwrap();
    assert!(!outcome.succeeded());
    let rows = latest_jobs(&engine.db, "ghost").await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.status, JobStatus::Failed);
        let error = row.error_message.as_deref().unwrap();
        assert!(
            error
                .starts_with("persona ghost not found: nothing at data/ghost/ and personas/ghost/"),
            "{error}"
        );
    }
    let persona_row = persona_row(&engine.db, "ghost").await;
    assert_eq!(persona_row.status, PersonaStatus::Failed);
    assert_nothing_processing(&engine.db).await;
}

#[actix::test]
async fn a_persona_of_empty_files_fails_and_says_they_are_empty() {
    let world = World::new();
    world.write("data/p/works/empty.txt", "");
    world.write("data/p/works/blank.md", "\n\n   \n");
    world.write(QUOTES, "\n");
    world.write("personas/p/profile.md", "");
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(!outcome.succeeded());
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with("nothing was ingested: every file found was empty"),
        "{error}"
    );
    assert!(
        error.contains("data/p/works/empty.txt: no text to ingest (empty file)"),
        "{error}"
    );
    let persona_row = persona_row(&engine.db, "p").await;
    assert_eq!(persona_row.status, PersonaStatus::Failed);
    assert_nothing_processing(&engine.db).await;
}

#[actix::test]
async fn a_persona_without_quotes_gets_a_quotes_job_that_completes_empty_and_says_so() {
    let world = World::new();
    with_profile_and_works(&world);
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(outcome.succeeded(), "{outcome:#?}");
    let quotes = job_of(&latest_jobs(&engine.db, "p").await, Kind::Quotes).clone();
    assert_eq!(
        (quotes.status, quotes.progress, quotes.total_vectors),
        (JobStatus::Completed, 100, 0)
    );
    assert_eq!(
        quotes.warning_message.as_deref(),
        Some("nothing to ingest: no quotes found (data/p/quotes/all_quotes.jsonl)")
    );
}

#[actix::test]
async fn a_quotes_line_longer_than_the_limit_is_a_bad_record_not_a_memory_spike() {
    let world = World::new();
    with_profile_and_works(&world);
    let mut huge = String::from("{\"text\": \"");
    huge.push_str(&"word ".repeat(10 * 1024 * 1024 / 5));
    huge.push_str("\"}\n{\"text\": \"fine\"}\n");
    world.write(QUOTES, huge);
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &[Kind::Quotes]).await.unwrap();
    assert!(!outcome.succeeded());
    let quotes = job_of(&latest_jobs(&engine.db, "p").await, Kind::Quotes).clone();
    assert_eq!(
        quotes.error_message.as_deref(),
        Some("data/p/quotes/all_quotes.jsonl:1: line longer than quotes.max_record_bytes (1048576 bytes)")
    );
}

#[cfg(unix)]
#[actix::test]
async fn a_symlink_out_of_the_data_root_is_refused() {
    let world = World::new();
    with_profile_and_works(&world);
    let outside = world.dir.path().join("secret.txt");
    std::fs::write(&outside, "not yours").unwrap();
    std::os::unix::fs::symlink(&outside, world.data_root.join("data/p/works/link.txt")).unwrap();
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &[Kind::Works]).await.unwrap();
    assert!(!outcome.succeeded());
    let works = job_of(&latest_jobs(&engine.db, "p").await, Kind::Works).clone();
    assert_eq!(
        works.error_message.as_deref(),
        Some("data/p/works/link.txt: resolves outside the data root; refusing to read it")
    );
    assert_eq!(store_count(&engine, "p_works").await, 0);
}

#[actix::test]
async fn a_different_embedding_dimension_is_refused_by_an_existing_collection() {
    let world = World::new();
    with_profile_and_works(&world);
    let engine = world.engine(&[]).await;
    assert!(engine
        .ingest(persona("p"), &[Kind::Works])
        .await
        .unwrap()
        .succeeded());
    drop(engine);
    let engine = world.engine(&[("embedding.dimension", "64")]).await;
    let outcome = engine.ingest(persona("p"), &[Kind::Works]).await.unwrap();
    assert!(!outcome.succeeded());
    let works = job_of(&latest_jobs(&engine.db, "p").await, Kind::Works).clone();
    assert_eq!(
        works.error_message.as_deref(),
        Some("writing to p_works: collection p_works holds local-hash-v1 vectors of dimension 384; refusing to write local-hash-v1 vectors of dimension 64 into it; 0 record(s) written before the failure, 1 in p_works now")
    );
}

/// Folders as people copy them from Macs and editors: AppleDouble `._` files, a `__MACOSX`
/// folder, an editor's lock (a dangling symlink), another dangling symlink whatever its
/// extension, and extensions in capitals.
#[actix::test]
async fn clutter_in_a_works_folder_is_skipped_and_told_and_capital_extensions_are_read() {
    let world = World::new();
    world.write("personas/q/profile.md", "# Q\n\nA writer.\n");
    world.write(
        "data/q/profile/BIO.MD",
        "Born by a river. Wrote about it.\n",
    );
    world.write(
        "data/q/works/CHAPTER1.TXT",
        "The first chapter, in capitals.\n",
    );
    world.write("data/q/works/chapter2.txt", "The second chapter.\n");
    world.write(
        "data/q/works/._chapter1.txt",
        b"\x00\x05\x16\x07Mac OS X        \x00\x02\x00\x00\xff\xfe",
    );
    world.write(
        "data/q/works/__MACOSX/._chapter2.txt",
        b"\x00\x05\x16\x07\xff",
    );
    let works = world.data_root.join("data/q/works");
    std::os::unix::fs::symlink("user@host.1234:1700000000", works.join(".#chapter1.txt")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", works.join("notes.pdf")).unwrap();
    let engine = world.engine(&[]).await;
    let outcome = engine
        .ingest(persona("q"), &[Kind::Works, Kind::Profile])
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let rows = latest_jobs(&engine.db, "q").await;
    let works_row = job_of(&rows, Kind::Works);
    assert_eq!(works_row.status, JobStatus::Completed);
    assert_eq!(works_row.total_vectors, 2, "CHAPTER1.TXT and chapter2.txt");
    let warning = works_row.warning_message.as_deref().unwrap_or_default();
    for skipped in [
        "data/q/works/._chapter1.txt (hidden)",
        "data/q/works/.#chapter1.txt (dangling symlink)",
        "data/q/works/__MACOSX (hidden)",
        "data/q/works/notes.pdf (dangling symlink)",
    ] {
        assert!(warning.contains(skipped), "{skipped:?} not in {warning:?}");
    }
    assert!(warning.starts_with("skipped 4 entries: "), "{warning}");
    assert_eq!(
        job_of(&rows, Kind::Profile).total_vectors,
        2,
        "profile.md and BIO.MD"
    );
    assert_store_matches_rows(&engine, "q").await;
}

/// After a good run, the quotes file saved again by a tool that wrote it in another encoding:
/// in skip mode every line is bad. That is a bad file, not an empty one: the job fails naming
/// it, and the quotes already in the store stay. Saved with classic Mac line ends (CR only), it
/// is read record by record.
#[actix::test]
async fn skip_mode_never_wipes_the_quotes_when_no_line_can_be_read() {
    let good = "{\"text\": \"caf\u{e9} one\"}\n{\"text\": \"two\"}\n{\"text\": \"three \u{e9}\"}\n";
    // UTF-16 without its byte-order mark, and Latin-1 while no sources.encoding says so: no
    // line of either can be read.
    let utf16 = utf16(good, Endian::Little, false);
    let latin1 = latin1(&good.replace("two", "tw\u{f6}"));
    for (saved_as, bytes) in [("UTF-16 without a BOM", utf16), ("Latin-1", latin1)] {
        let world = World::new();
        with_profile_and_works(&world);
        world.write(QUOTES, good);
        let engine = world.engine(&[("quotes.on_bad_record", "skip")]).await;
        assert!(engine
            .ingest(persona("p"), &[Kind::Quotes])
            .await
            .unwrap()
            .succeeded());
        assert_eq!(store_count(&engine, "p_quotes").await, 3);

        world.write(QUOTES, bytes);
        let outcome = engine.ingest(persona("p"), &[Kind::Quotes]).await.unwrap();
        assert!(!outcome.succeeded(), "{saved_as}");
        let rows = latest_jobs(&engine.db, "p").await;
        let quotes = job_of(&rows, Kind::Quotes);
        assert_eq!(quotes.status, JobStatus::Failed, "{saved_as}");
        let error = quotes.error_message.as_deref().unwrap();
        assert!(
            error.starts_with("data/p/quotes/all_quotes.jsonl: none of its"),
            "{saved_as}: {error}"
        );
        assert_eq!(
            store_count(&engine, "p_quotes").await,
            3,
            "{saved_as}: nothing removed"
        );
        assert_nothing_processing(&engine.db).await;

        world.write(QUOTES, good.replace('\n', "\r"));
        let outcome = engine.ingest(persona("p"), &[Kind::Quotes]).await.unwrap();
        assert!(outcome.succeeded(), "CR line ends: {:?}", outcome.error);
        assert_eq!(outcome.jobs[0].result.as_ref().unwrap().vectors, 3);
    }
}

enum Endian {
    Little,
    Big,
}

fn utf16(text: &str, endian: Endian, bom: bool) -> Vec<u8> {
    let units = bom.then_some('\u{feff}').into_iter().chain(text.chars());
    let mut out = Vec::new();
    for c in units {
        let mut buf = [0u16; 2];
        for unit in c.encode_utf16(&mut buf) {
            out.extend(match endian {
                Endian::Little => unit.to_le_bytes(),
                Endian::Big => unit.to_be_bytes(),
            });
        }
    }
    out
}

fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(c as u32).unwrap())
        .collect()
}

/// The document of the record nearest to `text` (the hashing embedder finds the same text).
async fn nearest_document(engine: &Engine, collection: &str, text: &str) -> String {
    nearest(engine, collection, text, 1).await[0]
        .document
        .clone()
}

/// Files saved as UTF-16 (either byte order, with the BOM Windows writes) are read, quotes and
/// works alike; a corpus in a legacy encoding is read once `sources.encoding` names it, and
/// without it the file is refused naming file, line and byte.
#[actix::test]
async fn utf16_files_and_a_declared_legacy_encoding_are_read_as_text() {
    let quotes = "{\"text\": \"Caf\u{e9} au lait, \u{6625}\u{7720}.\"}\r\n{\"text\": \"two\"}\r\n";
    let work = "Mărțișor came early that year.\n\nThe second paragraph.\n";
    let world = World::new();
    world.write("personas/p/profile.md", "# P\n\nA writer.\n");
    world.write(QUOTES, utf16(quotes, Endian::Little, true));
    world.write("data/p/works/a.txt", utf16(work, Endian::Big, true));
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    assert_eq!(store_count(&engine, "p_quotes").await, 2);
    assert_eq!(
        nearest_document(&engine, "p_quotes", "Caf\u{e9} au lait, \u{6625}\u{7720}.").await,
        "Caf\u{e9} au lait, \u{6625}\u{7720}."
    );
    assert_eq!(
        nearest_document(&engine, "p_works", work.trim()).await,
        work.trim(),
        "the works file's text, decoded"
    );

    // What the encoding cannot hold fails the job naming file, line and byte, never stored as
    // a replacement character: a lone surrogate in UTF-16, a NUL-laden file without a BOM (UTF-16
    // saved without its mark); a file that is only a BOM is an empty file.
    let mut lone = utf16("Line one.\nHello ", Endian::Little, true);
    lone.extend([0x00, 0xD8]);
    lone.extend(utf16(" world.\n", Endian::Little, false));
    for (bytes, expected) in [
        (
            lone,
            "data/p/works/a.txt:2: not valid UTF-16LE (byte offset 34)",
        ),
        (
            utf16("Caf\u{e9} au lait.\n", Endian::Little, false),
            "data/p/works/a.txt:1: a NUL byte (byte offset 1)",
        ),
    ] {
        world.write("data/p/works/a.txt", bytes);
        let outcome = engine.ingest(persona("p"), &[Kind::Works]).await.unwrap();
        assert!(!outcome.succeeded(), "{expected}");
        let rows = latest_jobs(&engine.db, "p").await;
        let error = job_of(&rows, Kind::Works).error_message.clone().unwrap();
        assert!(error.starts_with(expected), "{error}");
        assert_nothing_processing(&engine.db).await;
    }
    world.write("data/p/works/a.txt", [0xFF, 0xFE]);
    world.write("data/p/works/b.txt", "Another work.\n");
    let outcome = engine.ingest(persona("p"), &[Kind::Works]).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);

    let legacy = World::new();
    legacy.write("personas/p/profile.md", "# P\n\nA writer.\n");
    legacy.write(
        "data/p/works/a.txt",
        latin1("First line.\nA na\u{ef}ve caf\u{e9}.\n"),
    );
    let refused = legacy.engine(&[]).await;
    let outcome = refused.ingest(persona("p"), &[Kind::Works]).await.unwrap();
    assert!(!outcome.succeeded());
    let rows = latest_jobs(&refused.db, "p").await;
    let error = job_of(&rows, Kind::Works).error_message.clone().unwrap();
    assert!(
        error.starts_with("data/p/works/a.txt:2: not valid UTF-8 (byte offset 16)")
            && error.contains("sources.encoding"),
        "{error}"
    );
    let engine = legacy.engine(&[("sources.encoding", "latin1")]).await;
    let outcome = engine.ingest(persona("p"), &[Kind::Works]).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    assert_eq!(
        nearest_document(&engine, "p_works", "First line.\nA na\u{ef}ve caf\u{e9}.").await,
        "First line.\nA na\u{ef}ve caf\u{e9}."
    );
}

/// Two files whose names are not UTF-8 and differ only in that byte: two sources, two records.
#[actix::test]
async fn file_names_that_are_not_utf8_stay_two_files() {
    use std::os::unix::ffi::OsStrExt;
    let world = World::new();
    world.write("personas/n/profile.md", "# N\n\nA writer.\n");
    let works = world.data_root.join("data/n/works");
    std::fs::create_dir_all(&works).unwrap();
    std::fs::write(
        works.join(std::ffi::OsStr::from_bytes(b"\xe3lin.txt")),
        "First file.\n",
    )
    .unwrap();
    std::fs::write(
        works.join(std::ffi::OsStr::from_bytes(b"\xe2lin.txt")),
        "Second file.\n",
    )
    .unwrap();
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("n"), &[Kind::Works]).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    assert_eq!(outcome.jobs[0].result.as_ref().unwrap().vectors, 2);
    assert_eq!(store_count(&engine, "n_works").await, 2);
    let collection = engine.store.collection("n_works").await.unwrap().unwrap();
    let mut ids = engine.store.ids(&collection, 0, 10).await.unwrap();
    ids.sort();
    assert_eq!(
        ids,
        [
            "works:data/n/works/%E2lin.txt:0",
            "works:data/n/works/%E3lin.txt:0"
        ]
    );
}

/// A works job failing at a bad file after good ones: its row says what the collection holds
/// (not 0), its error what the run wrote; the next good run makes them agree again.
#[actix::test]
async fn a_failed_job_tells_what_the_store_holds() {
    let world = World::new();
    world.write("personas/w/profile.md", "# W\n\nA writer.\n");
    let paragraph = "A sentence of a good work, long enough to count. ".repeat(40);
    world.write(
        "data/w/works/a.txt",
        format!("{paragraph}\n\n{paragraph}\n"),
    );
    world.write(
        "data/w/works/b.txt",
        b"Fine.\nStill fine.\nBad \x93byte\x94 here.\n",
    );
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("w"), &[Kind::Works]).await.unwrap();
    assert!(!outcome.succeeded());
    let rows = latest_jobs(&engine.db, "w").await;
    let works = job_of(&rows, Kind::Works);
    assert_eq!(works.status, JobStatus::Failed);
    let held = store_count(&engine, "w_works").await;
    assert!(held > 0, "a.txt was written before b.txt failed");
    assert_eq!(
        works.total_vectors as u64, held,
        "the row says what the store holds"
    );
    let error = works.error_message.as_deref().unwrap();
    assert!(
        error.starts_with("data/w/works/b.txt:3: not valid UTF-8"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "record(s) written before the failure, {held} in w_works now"
        )),
        "{error}"
    );
    assert_nothing_processing(&engine.db).await;

    world.write("data/w/works/b.txt", "Fine.\nStill fine.\nMended now.\n");
    assert!(engine
        .ingest(persona("w"), &[Kind::Works])
        .await
        .unwrap()
        .succeeded());
    assert_store_matches_rows(&engine, "w").await;
}

/// Chinese prose is cut after its sentences (。), and each chunk overlaps the one before, as
/// English text does; the records' offsets say where each chunk lies in the file.
#[actix::test]
async fn chinese_works_are_cut_after_sentences_and_overlap() {
    let sentence = "春眠不觉晓处处闻啼鸟。";
    let world = World::new();
    world.write("personas/p/profile.md", "# P\n\nA poet.\n");
    world.write("data/p/works/poem.txt", sentence.repeat(300));
    let engine = world.engine(&[]).await;
    let outcome = engine.ingest(persona("p"), &[Kind::Works]).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let count = store_count(&engine, "p_works").await;
    assert!(count >= 7, "{count} chunks of 3,300 characters");

    let mut hits = nearest(&engine, "p_works", sentence, count as usize).await;
    let at = |hit: &persona_ingest::store::QueryHit, key: &str| match &hit.metadata[key] {
        persona_ingest::record::MetaValue::Int(i) => *i,
        other => panic!("{key}: {other:?}"),
    };
    hits.sort_by_key(|hit| at(hit, "chunk_index"));
    for hit in &hits {
        assert!(hit.document.starts_with(sentence), "{}", hit.document);
        assert!(
            hit.document.ends_with('。'),
            "cut mid-sentence: {}",
            hit.document
        );
        let chars = hit.document.chars().count() as i64;
        assert_eq!(at(hit, "char_end") - at(hit, "char_start"), chars);
    }
    for pair in hits.windows(2) {
        assert!(
            at(&pair[1], "char_start") < at(&pair[0], "char_end"),
            "no overlap between chunks {} and {}",
            at(&pair[0], "chunk_index"),
            at(&pair[1], "chunk_index")
        );
    }
}
