//! The text chunker: streaming, paragraph-aware, with overlap. Text is pushed in pieces of
//! any size; chunks of at most `target_tokens` (estimated at 4 bytes a token) come out,
//! cut at the last paragraph break, else sentence end, else line end, else space in the
//! second half of the window. Only a "word" longer than half a chunk is cut inside, and
//! then at a character boundary. Memory held: one chunk's worth plus the piece pushed.

use crate::config::ChunkingSettings;

/// Bytes per token, OpenAI's rule of thumb for English text.
pub const BYTES_PER_TOKEN: usize = 4;

pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(BYTES_PER_TOKEN).max(1)
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RawChunk {
    pub index: u32,
    pub text: String,
    pub char_start: u64,
    pub char_end: u64,
    pub section: Option<String>,
}

pub struct TextChunker {
    max_bytes: usize,
    overlap_bytes: usize,
    buf: String,
    /// Character offset of `buf[0]` in the document.
    buf_start_char: u64,
    /// Leading bytes of `buf` already emitted as the previous chunk's tail.
    overlap_len: usize,
    next_index: u32,
    section: Option<String>,
    ready: Vec<RawChunk>,
}

impl TextChunker {
    pub fn new(settings: ChunkingSettings) -> Self {
        Self {
            max_bytes: settings.target_tokens * BYTES_PER_TOKEN,
            overlap_bytes: settings.overlap_tokens * BYTES_PER_TOKEN,
            buf: String::new(),
            buf_start_char: 0,
            overlap_len: 0,
            next_index: 0,
            section: None,
            ready: Vec::new(),
        }
    }

    /// Appends text; full chunks become ready.
    pub fn push(&mut self, text: &str) {
        self.buf.push_str(text);
        let mut head = 0;
        let mut head_char = self.buf_start_char;
        while self.buf.len() - head > self.max_bytes {
            let window = &self.buf[head..];
            let cut = find_cut(window, self.max_bytes);
            let next = overlap_start(&window[..cut], self.overlap_bytes);
            let chunk = make_chunk(&window[..cut], head_char, self.next_index, &self.section);
            if let Some(chunk) = chunk {
                self.ready.push(chunk);
                self.next_index += 1;
            }
            head_char += window[..next].chars().count() as u64;
            self.overlap_len = cut - next;
            head += next;
        }
        if head > 0 {
            self.buf.drain(..head);
            self.buf_start_char = head_char;
        }
    }

    /// Ends the current section: what is buffered becomes a chunk, and the next text starts a
    /// chunk of its own under `section`, with no overlap across the break.
    pub fn section_break(&mut self, section: Option<String>) {
        self.flush();
        self.section = section;
    }

    /// Passes over text that is not to be chunked (a Gutenberg header), keeping offsets right.
    pub fn skip(&mut self, text: &str) {
        self.flush();
        self.buf_start_char += text.chars().count() as u64;
    }

    /// Ends the document.
    pub fn finish(&mut self) {
        self.flush();
    }

    /// The chunks made so far and not yet taken.
    pub fn take_ready(&mut self) -> std::vec::Drain<'_, RawChunk> {
        self.ready.drain(..)
    }

    fn flush(&mut self) {
        if self.buf.len() > self.overlap_len && !self.buf[self.overlap_len..].trim().is_empty() {
            if let Some(chunk) = make_chunk(
                &self.buf,
                self.buf_start_char,
                self.next_index,
                &self.section,
            ) {
                self.ready.push(chunk);
                self.next_index += 1;
            }
        }
        self.buf_start_char += self.buf.chars().count() as u64;
        self.buf.clear();
        self.overlap_len = 0;
    }
}

fn make_chunk(
    slice: &str,
    start_char: u64,
    index: u32,
    section: &Option<String>,
) -> Option<RawChunk> {
    let text = slice.trim();
    if text.is_empty() {
        return None;
    }
    let lead = slice.len() - slice.trim_start().len();
    let char_start = start_char + slice[..lead].chars().count() as u64;
    Some(RawChunk {
        index,
        char_start,
        char_end: char_start + text.chars().count() as u64,
        text: text.to_owned(),
        section: section.clone(),
    })
}

/// Where to end a chunk of `window` (longer than `max`): a byte offset in `1..=max`, on a
/// character boundary, as late as possible at the strongest boundary in the second half.
fn find_cut(window: &str, max: usize) -> usize {
    let mut limit = max.min(window.len());
    while !window.is_char_boundary(limit) {
        limit -= 1;
    }
    let min = limit / 2;
    let bytes = window.as_bytes();
    let region = &window[..limit];
    if let Some(i) = region.rfind("\n\n").filter(|&i| i >= min) {
        return i + 2;
    }
    // ASCII bytes never occur inside a multi-byte character: cutting after one is safe.
    let last_after =
        |pred: &dyn Fn(usize) -> bool| (min.max(1)..limit).rev().find(|&i| pred(i)).map(|i| i + 1);
    let sentence_end = |i: usize| {
        bytes[i].is_ascii_whitespace() && {
            let before = region[..i].trim_end_matches(['"', '\'', ')', ']', '”', '’']);
            before.ends_with(['.', '!', '?'])
        }
    };
    last_after(&sentence_end)
        .or_else(|| last_after(&|i| bytes[i] == b'\n'))
        .or_else(|| last_after(&|i| bytes[i].is_ascii_whitespace()))
        .unwrap_or(limit.max(window.chars().next().map_or(1, char::len_utf8)))
}

/// Where the next chunk starts within `chunk`: at a word start about `overlap` bytes before its
/// end, never before its middle (so chunks always advance), or at its end for no overlap.
fn overlap_start(chunk: &str, overlap: usize) -> usize {
    if overlap == 0 {
        return chunk.len();
    }
    let from = chunk.len().saturating_sub(overlap).max(chunk.len() / 2);
    chunk.as_bytes()[from..]
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(chunk.len(), |p| from + p + 1)
}

#[cfg(test)]
mod tests {
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
}
