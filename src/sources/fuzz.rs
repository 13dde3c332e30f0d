//! The readers' entry points for the fuzz targets in `fuzz/` (gathered in `crate::fuzz`): each takes any bytes, runs one
//! reader over them as a file would be read, and checks what must hold of every input. A panic
//! is a finding; an input that once panicked becomes a unit test calling the same entry point.
//! Not an API.

use std::io::BufReader;
use std::ops::ControlFlow;

use super::decode::decoder;
use super::document::{DocumentReader, Format};
use super::quotes::{needs_renaming, parse_record, read_line};
use super::text::TextBlocks;
use super::{Chunk, ChunkSink};
use crate::config::ChunkingSettings;

/// A works or profile file: decoded (a UTF-16 BOM honoured), read in blocks, chunked. The first
/// byte picks the block size, the format and the chunk size, so the fuzzer explores them too.
pub fn text_document(data: &[u8]) {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let target_tokens = if knobs & 0x80 == 0 { 16 } else { 64 };
    let format = if knobs & 0x40 == 0 {
        Format::Plain
    } else {
        Format::Markdown
    };
    let chunking = ChunkingSettings {
        target_tokens,
        overlap_tokens: target_tokens / 4,
    };
    let mut blocks = TextBlocks::with_block_size(
        decoder(bytes, None),
        "fuzz.txt",
        16 + usize::from(knobs & 0x3f),
    );
    let mut reader = DocumentReader::new(format, chunking, crate::tokens::TokenCounter::Estimate);
    let mut sink = Checked {
        max_bytes: target_tokens * super::chunker::BYTES_PER_TOKEN,
        next_index: 0,
    };
    loop {
        match blocks.next_block() {
            Ok(Some(block)) => {
                let done = reader.feed(&block.text);
                let _ = reader.emit("fuzz.txt", block.bytes_done, &mut sink);
                if done {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    reader.finish();
    let _ = reader.emit("fuzz.txt", 0, &mut sink);
}

/// What every chunk of any text is: non-empty, within its size, its offsets spanning its text,
/// numbered in order.
struct Checked {
    max_bytes: usize,
    next_index: u32,
}

impl ChunkSink for Checked {
    fn accept(&mut self, chunk: Chunk, _bytes_done: u64) -> ControlFlow<()> {
        assert!(!chunk.text.trim().is_empty(), "an empty chunk");
        assert!(
            chunk.text.len() <= self.max_bytes,
            "a chunk of {} bytes over {}",
            chunk.text.len(),
            self.max_bytes
        );
        assert_eq!(
            chunk.char_end - chunk.char_start,
            chunk.text.chars().count() as u64,
            "offsets that do not span the text"
        );
        assert_eq!(chunk.chunk_index, self.next_index, "chunks out of order");
        self.next_index += 1;
        ControlFlow::Continue(())
    }
}

/// A quotes file: decoded, split into lines (LF, CR, CRLF; long lines stopped at a limit), each
/// parsed as a record. A good record has text and only field names every store takes.
pub fn quote_lines(data: &[u8]) {
    const LIMIT: usize = 512;
    let mut reader = BufReader::with_capacity(64, decoder(data, None));
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        if !matches!(read_line(&mut reader, LIMIT, &mut line), Ok(1..)) {
            break;
        }
        assert!(line.len() <= LIMIT + 2, "a line of {} bytes", line.len());
        if let Ok(Some((text, metadata))) = parse_record(&line, first) {
            assert!(!text.trim().is_empty());
            for key in metadata.keys() {
                assert!(
                    !needs_renaming(key),
                    "field {key:?} kept under its own name"
                );
            }
        }
        first = false;
    }
}
