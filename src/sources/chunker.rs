//! The text chunker: streaming, paragraph-aware, with overlap, for every script. Text is pushed
//! in pieces of any size; chunks of at most `target_tokens` (as the model's tokenizer counts
//! them, else as estimated by script: see `tokens`) come out, cut at the last paragraph break,
//! else sentence end, else line end, else space, else word bound in the second half of the
//! window. Sentence and word bounds are Unicode's (UAX #29, by
//! `unicode-segmentation`), so Chinese, Hindi or Arabic text is cut after its sentences and
//! overlaps as English does. Only a word longer than half a chunk is cut inside, and then
//! between graphemes. Memory held: one chunk's worth plus the piece pushed.

use unicode_segmentation::{GraphemeCursor, UnicodeSegmentation};

use crate::config::ChunkingSettings;

use crate::tokens::TokenCounter;
pub use crate::tokens::{estimate as estimate_tokens, BYTES_PER_TOKEN};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RawChunk {
    pub index: u32,
    pub text: String,
    /// The tokens of `text` as the chunker's counter counts them (counted to fit the chunk).
    pub tokens: usize,
    pub char_start: u64,
    pub char_end: u64,
    pub section: Option<String>,
}

pub struct TextChunker {
    max_bytes: usize,
    /// At most this many tokens a chunk, as `counter` counts them.
    max_tokens: usize,
    counter: TokenCounter,
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
    /// Chunks of at most `target_tokens` estimated tokens (see [`crate::tokens::estimate`]).
    pub fn new(settings: ChunkingSettings) -> Self {
        Self::with_counter(settings, TokenCounter::Estimate)
    }

    /// Chunks within `target_tokens` both as estimated and as `counter` counts them: a chunk
    /// the model's tokenizer finds longer is cut again, shorter, at the best boundary.
    pub fn with_counter(settings: ChunkingSettings, counter: TokenCounter) -> Self {
        Self {
            max_bytes: settings.target_tokens * BYTES_PER_TOKEN,
            max_tokens: settings.target_tokens,
            counter,
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
            let (cut, tokens) = self.fit(window, find_cut(window, self.max_bytes));
            head = self.cut_at(head, &mut head_char, cut, tokens);
        }
        self.drop_before(head, head_char);
    }

    /// Makes a chunk of the `cut` bytes from `head` (`tokens` once trimmed); answers where the
    /// next chunk starts (its overlap with this one held in `overlap_len`), `head_char` moved
    /// there.
    fn cut_at(&mut self, head: usize, head_char: &mut u64, cut: usize, tokens: usize) -> usize {
        let window = &self.buf[head..];
        let next = overlap_start(&window[..cut], self.overlap_bytes);
        let slice = &window[..cut];
        if let Some(chunk) = make_chunk(slice, *head_char, self.next_index, &self.section, tokens) {
            self.ready.push(chunk);
            self.next_index += 1;
        }
        *head_char += window[..next].chars().count() as u64;
        self.overlap_len = cut - next;
        head + next
    }

    /// Forgets the text before `head`, which starts at character `head_char`.
    fn drop_before(&mut self, head: usize, head_char: u64) {
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

    /// `cut`, or a shorter cut of `window` if the counter finds more than `max_tokens` in the
    /// chunk it makes (the text before it, trimmed); with that chunk's tokens.
    fn fit(&self, window: &str, mut cut: usize) -> (usize, usize) {
        loop {
            let tokens = self.counter.count(window[..cut].trim());
            if tokens <= self.max_tokens {
                return (cut, tokens);
            }
            // Shrink in proportion to the excess, a little more, never less than a character.
            let smaller = (cut * self.max_tokens / tokens).min(cut * 19 / 20);
            let next = find_cut(window, smaller.max(1));
            if next >= cut {
                return (cut, tokens);
            }
            cut = next;
        }
    }

    fn flush(&mut self) {
        // What is left may fit in bytes and not in the model's tokens: cut it as `push` does.
        let mut head = 0;
        let mut head_char = self.buf_start_char;
        // The tokens of what is left, once it fits.
        let mut rest = None;
        while self.buf.len() - head > self.overlap_len {
            let window = &self.buf[head..];
            let (cut, tokens) = self.fit(window, window.len());
            if cut == window.len() {
                rest = Some(tokens);
                break;
            }
            head = self.cut_at(head, &mut head_char, cut, tokens);
        }
        self.drop_before(head, head_char);
        if self.buf.len() > self.overlap_len && !self.buf[self.overlap_len..].trim().is_empty() {
            let tokens = rest.unwrap_or_else(|| self.counter.count(self.buf.trim()));
            if let Some(chunk) = make_chunk(
                &self.buf,
                self.buf_start_char,
                self.next_index,
                &self.section,
                tokens,
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
    tokens: usize,
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
        tokens,
        section: section.clone(),
    })
}

/// Where to end a chunk of `window` (longer than `max`): a byte offset in `1..=max`, as late as
/// possible at the strongest boundary in the second half: a paragraph break, a sentence end
/// (UAX #29, so 。！？, the danda and Arabic stops end sentences too), a line end, a space, a
/// word bound (UAX #29: each ideograph is a word), else a grapheme bound, so a character and its
/// combining marks are never parted.
fn find_cut(window: &str, max: usize) -> usize {
    let limit = floor_char_boundary(window, max.min(window.len()));
    let min = ceil_char_boundary(window, limit / 2);
    let region = &window[..limit];
    if let Some(i) = region.rfind("\n\n").filter(|&i| i >= min) {
        return i + 2;
    }
    let after = |i: usize, c: char| min + i + c.len_utf8();
    last_sentence_end(region, min)
        .or_else(|| region[min..].rfind('\n').map(|i| min + i + 1))
        .or_else(|| {
            region[min..]
                .char_indices()
                .rfind(|(_, c)| c.is_whitespace())
                .map(|(i, c)| after(i, c))
        })
        .or_else(|| {
            region[min..]
                .split_word_bound_indices()
                .map(|(i, _)| min + i)
                .rfind(|&i| i > min)
        })
        // A grapheme longer than half a chunk (a long emoji sequence, stacked marks) is cut
        // between its characters: a cut before it would make no progress.
        .or_else(|| grapheme_floor(window, limit).filter(|&i| i >= min && i > 0))
        .unwrap_or(limit.max(window.chars().next().map_or(1, char::len_utf8)))
}

/// How far before `min` the sentence segmenter starts reading: a boundary just past `min`
/// depends on the terminator, closing quotes and spaces before it.
const SENTENCE_CONTEXT: usize = 64;

/// The last sentence boundary in `region` after `min` and before its end (which is no
/// boundary: the text goes on).
fn last_sentence_end(region: &str, min: usize) -> Option<usize> {
    let from = floor_char_boundary(region, min.saturating_sub(SENTENCE_CONTEXT));
    let text = &region[from..];
    // UAX #29 ends a sentence at every line end; in hard-wrapped prose those are the wrap, not
    // sentence ends, so the segmenter reads them as spaces (one byte for one: offsets hold).
    let unwrapped: std::borrow::Cow<str> = if text.contains('\n') {
        text.replace('\n', " ").into()
    } else {
        text.into()
    };
    unwrapped
        .split_sentence_bound_indices()
        .map(|(i, _)| from + i)
        .filter(|&i| i > min && i < region.len())
        .last()
}

// `str::floor_char_boundary` and `ceil_char_boundary` are stable only since Rust 1.91, after
// this crate's MSRV.
fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The last grapheme boundary at or before `at` in `text`.
fn grapheme_floor(text: &str, at: usize) -> Option<usize> {
    let mut cursor = GraphemeCursor::new(at, text.len(), true);
    match cursor.is_boundary(text, 0) {
        Ok(true) => Some(at),
        _ => cursor.prev_boundary(text, 0).ok().flatten(),
    }
}

/// Where the next chunk starts within `chunk`, about `overlap` bytes before its end and never
/// before its middle (so chunks always advance): after a space where words are spaced, else at
/// a sentence start, else at a word bound (in Chinese or Thai, which put no spaces between
/// words); at its end for no overlap, or when the tail is one word too long to part.
fn overlap_start(chunk: &str, overlap: usize) -> usize {
    if overlap == 0 {
        return chunk.len();
    }
    // Past the middle of the chunk's text, leading spaces left out: a chunk that begins with
    // spaces could otherwise hand its whole text to the next one, which would not advance.
    let lead = chunk.len() - chunk.trim_start().len();
    let middle = lead + (chunk.len() - lead) / 2;
    let from = ceil_char_boundary(chunk, chunk.len().saturating_sub(overlap).max(middle));
    let tail = &chunk[from..];
    // A space that ends the chunk starts nothing: the next chunk would not overlap.
    if let Some((i, c)) = tail
        .char_indices()
        .find(|(i, c)| c.is_whitespace() && !tail[i + c.len_utf8()..].trim().is_empty())
    {
        return from + i + c.len_utf8();
    }
    let sentence_start = tail
        .split_sentence_bound_indices()
        .map(|(i, _)| i)
        .find(|&i| i > 0 && i < tail.len());
    let word_start = || {
        tail.split_word_bound_indices()
            .map(|(i, _)| i)
            .find(|&i| i > 0)
    };
    sentence_start
        .or_else(word_start)
        .map_or(chunk.len(), |i| from + i)
}

#[cfg(test)]
mod tests;
