//! The chunker's tests: examples, every script's sentences, and properties over random text.

use unicode_segmentation::UnicodeSegmentation;

use super::*;

fn chunker(target: usize, overlap: usize) -> TextChunker {
    TextChunker::new(ChunkingSettings {
        target_tokens: target,
        overlap_tokens: overlap,
    })
}

fn chunk_all(text: &str, target: usize, overlap: usize, piece: usize) -> Vec<RawChunk> {
    let mut c = chunker(target, overlap);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut at = piece.min(rest.len());
        while !rest.is_char_boundary(at) {
            at += 1;
        }
        c.push(&rest[..at]);
        out.extend(c.take_ready());
        rest = &rest[at..];
    }
    c.finish();
    out.extend(c.take_ready());
    out
}

const PROSE: &str = "It was a bright cold day in April. The clocks were striking thirteen.\n\n\
    Winston Smith, his chin nuzzled into his breast, slipped quickly through the glass doors.\n\n\
    The hallway smelt of boiled cabbage and old rag mats! At one end of it a coloured poster \
    had been tacked to the wall? It depicted simply an enormous face.";

#[test]
fn prose_is_cut_at_paragraphs_then_sentences() {
    insta::assert_yaml_snapshot!(chunk_all(PROSE, 25, 4, usize::MAX));
}

#[test]
fn output_does_not_depend_on_how_text_is_pushed() {
    let whole = chunk_all(PROSE, 25, 4, usize::MAX);
    for piece in [1, 7, 64] {
        assert_eq!(chunk_all(PROSE, 25, 4, piece), whole, "piece {piece}");
    }
}

#[test]
fn offsets_point_at_the_chunk_text_in_characters() {
    let text = "Toamna frunzele colindă, Frunza-n vânt se leagănă. ".repeat(40);
    let chars: Vec<char> = text.chars().collect();
    for chunk in chunk_all(&text, 20, 5, 33) {
        let at: String = chars[chunk.char_start as usize..chunk.char_end as usize]
            .iter()
            .collect();
        assert_eq!(at, chunk.text);
        assert!(chunk.text.len() <= 80);
    }
}

#[test]
fn never_splits_words_and_overlaps_the_previous_chunk() {
    let text = (0..400)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let chunks = chunk_all(&text, 16, 4, 100);
    for pair in chunks.windows(2) {
        let last_word = pair[0].text.split(' ').next_back().unwrap();
        assert!(text.contains(&format!("{last_word} ")) || text.ends_with(last_word));
        assert!(pair[1].char_start < pair[0].char_end, "overlap");
        assert!(pair[1].char_start > pair[0].char_start, "progress");
    }
    let joined: String = chunks
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for i in 0..400 {
        assert!(joined.contains(&format!("word{i}")));
    }
}

#[test]
fn a_word_longer_than_a_chunk_is_cut_at_character_boundaries() {
    let text = "ă".repeat(1000);
    let chunks = chunk_all(&text, 16, 0, 10_000);
    assert_eq!(
        chunks.iter().map(|c| c.text.chars().count()).sum::<usize>(),
        1000
    );
    assert!(chunks.iter().all(|c| c.text.len() <= 64));
}

#[test]
fn section_breaks_start_new_chunks_without_overlap() {
    let mut c = chunker(100, 10);
    c.section_break(Some("One".into()));
    c.push("# One\nshort.\n");
    c.section_break(Some("Two".into()));
    c.push("# Two\nalso short.\n");
    c.finish();
    insta::assert_yaml_snapshot!(c.take_ready().collect::<Vec<_>>());
}

#[test]
fn skipped_text_shifts_offsets() {
    let mut c = chunker(100, 10);
    c.skip("header ăă\n");
    c.push("body");
    c.finish();
    let chunk = c.take_ready().next().unwrap();
    assert_eq!((chunk.char_start, chunk.char_end), (10, 14));
}

/// Each chunk's text as the input holds it at its character offsets.
fn at_offsets(text: &str, chunk: &RawChunk) -> String {
    text.chars()
        .skip(chunk.char_start as usize)
        .take((chunk.char_end - chunk.char_start) as usize)
        .collect()
}

#[test]
fn every_script_is_cut_after_its_sentences_and_overlaps() {
    // Where words are spaced, the overlap starts at a word, as in English; where they are not,
    // at a sentence.
    for (script, sentence, end, spaced) in [
        ("Chinese", "春眠不觉晓处处闻啼鸟。", '。', false),
        ("Japanese", "古池や蛙飛び込む水の音！", '！', false),
        (
            "Hindi",
            "सत्यमेव जयते नानृतं सत्येन पन्था विततो देवयानः। ",
            '।',
            true,
        ),
        ("Arabic", "هل تعرف الطريق إلى المدينة القديمة؟ ", '؟', true),
        ("Urdu", "یہ ایک بہت پرانی کہانی ہے۔ ", '۔', true),
    ] {
        let text = sentence.repeat(300);
        let chunks = chunk_all(&text, 100, 20, 1000);
        assert!(chunks.len() > 2, "{script}: {} chunks", chunks.len());
        for chunk in &chunks {
            assert_eq!(at_offsets(&text, chunk), chunk.text, "{script}");
            assert!(
                chunk.text.ends_with(end),
                "{script} chunk ends mid-sentence: {:?}",
                chunk.text
            );
            assert!(chunk.text.len() <= 400, "{script}");
        }
        for pair in chunks.windows(2) {
            assert!(
                pair[1].char_start < pair[0].char_end,
                "{script}: no overlap"
            );
            assert!(
                pair[1].char_start > pair[0].char_start,
                "{script}: no progress"
            );
            let before = text.chars().nth(pair[1].char_start as usize - 1).unwrap();
            let starts = if spaced {
                before.is_whitespace()
            } else {
                before == end && sentence.starts_with(pair[1].text.chars().next().unwrap())
            };
            assert!(
                starts,
                "{script} overlap starts mid-word or mid-sentence: {:?}",
                pair[1].text
            );
        }
    }
}

#[test]
fn text_without_spaces_or_stops_is_cut_between_words_and_graphemes() {
    // Thai puts no spaces between words and its vowels and tone marks combine with the letter
    // before them: a cut between the two would leave a mark with nothing to sit on.
    let thai = "ที่นี่มีน้ำใจ".repeat(200);
    let chunks = chunk_all(&thai, 32, 6, 1000);
    assert!(chunks.len() > 2);
    for chunk in &chunks {
        assert_eq!(at_offsets(&thai, chunk), chunk.text);
        let first = chunk.text.graphemes(true).next().unwrap();
        assert!(!is_combining(first), "starts inside a grapheme: {first:?}");
    }
    for pair in chunks.windows(2) {
        assert!(pair[1].char_start < pair[0].char_end, "no overlap");
    }
}

fn is_combining(grapheme: &str) -> bool {
    // A grapheme that is only marks begins with one: Thai marks are U+0E31 and U+0E34..U+0E4E.
    matches!(grapheme.chars().next().unwrap(), '\u{0E31}' | '\u{0E34}'..='\u{0E3A}' | '\u{0E47}'..='\u{0E4E}')
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Words of several scripts, with their spaces, line ends and sentence stops.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "word",
            "Călin",
            "naïve",
            "e\u{301}",
            " ",
            " ",
            " ",
            "\n",
            "\n\n",
            ". ",
            "! ",
            "?\" ",
            "春眠",
            "不觉晓",
            "。",
            "！",
            "नमस्ते",
            "। ",
            "ที่นี่",
            "น้ำ",
            "مرحبا",
            "؟ ",
            "\u{3000}",
            "👩‍👩‍👧",
            "ℌ",
            "x",
        ])
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..400).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn chunks_cover_the_text_within_their_size_and_overlap(
            text in text(),
            target in 4usize..40,
            overlap_share in 0usize..50,
            piece in 1usize..300,
        ) {
            let overlap = target * overlap_share / 100;
            let chunks = chunk_all(&text, target, overlap, piece);
            // The same however the text is pushed.
            prop_assert_eq!(&chunk_all(&text, target, overlap, usize::MAX), &chunks);

            let chars: Vec<char> = text.chars().collect();
            let mut covered = vec![false; chars.len()];
            for chunk in &chunks {
                prop_assert!(chunk.text.len() <= target * BYTES_PER_TOKEN, "{} bytes", chunk.text.len());
                prop_assert_eq!(at_offsets(&text, chunk), chunk.text.clone());
                // Its count is its text's, so the job need not count it again.
                prop_assert_eq!(chunk.tokens, TokenCounter::Estimate.count(&chunk.text));
                for c in &mut covered[chunk.char_start as usize..chunk.char_end as usize] {
                    *c = true;
                }
            }
            for (i, c) in chars.iter().enumerate() {
                prop_assert!(covered[i] || c.is_whitespace() || c.is_control(), "character {} ({:?}) lost", i, c);
            }
            for pair in chunks.windows(2) {
                prop_assert!(pair[1].char_start > pair[0].char_start, "no progress");
                let shared: String = chars[pair[1].char_start as usize..(pair[0].char_end.max(pair[1].char_start)) as usize].iter().collect();
                prop_assert!(shared.len() <= overlap * BYTES_PER_TOKEN, "overlap of {} bytes", shared.len());
            }
        }
    }
}
