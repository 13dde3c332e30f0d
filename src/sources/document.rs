//! A text document (`.txt` or `.md`) read into chunks: Project Gutenberg header and footer
//! stripped when present, Markdown headings (and chapter lines of plain text) turned into
//! section breaks that travel with each chunk as `title` and `section` metadata.

use std::ops::ControlFlow;

use super::chunker::TextChunker;
use super::text::TextBlocks;
use super::{Chunk, ChunkSink, DataRoot, FileReport, SourceError, SourceFile};
use crate::config::ChunkingSettings;
use crate::record::{MetaValue, Metadata};
use crate::tokens::TokenCounter;

/// How far into a file a Gutenberg START line is looked for.
const PREAMBLE_MAX_LINES: usize = 400;
const PREAMBLE_MAX_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Plain,
}

impl Format {
    pub fn of(file: &SourceFile) -> Self {
        if file.rel.ends_with(".md") {
            Self::Markdown
        } else {
            Self::Plain
        }
    }
}

/// Reads `file` and hands its chunks to `sink`.
pub fn read_document(
    root: &DataRoot,
    file: &SourceFile,
    chunking: ChunkingSettings,
    counter: &TokenCounter,
    sink: &mut dyn ChunkSink,
) -> Result<FileReport, SourceError> {
    let handle = root.open_text(file)?;
    let mut reader = DocumentReader::new(Format::of(file), chunking, counter.clone());
    let mut blocks = TextBlocks::new(handle, file.rel.clone());
    let stopped = || SourceError::Stopped {
        rel: file.rel.clone(),
    };
    while let Some(block) = blocks.next_block()? {
        let done = reader.feed(&block.text);
        if reader.emit(&file.rel, block.bytes_done, sink).is_break() {
            return Err(stopped());
        }
        if done {
            break;
        }
    }
    reader.finish();
    if reader.emit(&file.rel, file.bytes, sink).is_break() {
        return Err(stopped());
    }
    Ok(FileReport::default())
}

/// The line-level state machine, separate from I/O so it can be tested on strings.
pub struct DocumentReader {
    format: Format,
    chunker: TextChunker,
    /// First lines, held back until we know whether a Gutenberg header ends among them.
    preamble: Option<Preamble>,
    gutenberg: bool,
    in_fence: bool,
    title: Option<String>,
    /// The previous block ended inside a line (longer than a block).
    mid_line: bool,
    ended: bool,
}

#[derive(Default)]
struct Preamble {
    lines: Vec<String>,
    bytes: usize,
    title: Option<String>,
    /// A START line was seen but its closing `***` not yet (the marker spans lines).
    in_start_marker: bool,
}

impl DocumentReader {
    pub fn new(format: Format, chunking: ChunkingSettings, counter: TokenCounter) -> Self {
        Self {
            format,
            chunker: TextChunker::with_counter(chunking, counter),
            preamble: Some(Preamble::default()),
            gutenberg: false,
            in_fence: false,
            title: None,
            mid_line: false,
            ended: false,
        }
    }

    /// Feeds a block of normalised text; true once the rest of the file is to be ignored.
    pub fn feed(&mut self, block: &str) -> bool {
        for piece in block.split_inclusive('\n') {
            if self.ended {
                break;
            }
            let ends_line = piece.ends_with('\n');
            if ends_line && !self.mid_line {
                self.line(piece);
            } else {
                self.text(piece);
            }
            self.mid_line = !ends_line;
        }
        self.ended
    }

    /// Ends the document: an unfinished preamble is ordinary text after all.
    pub fn finish(&mut self) {
        self.release_preamble();
        self.chunker.finish();
    }

    /// Hands the chunks made so far to `sink`.
    pub fn emit(
        &mut self,
        rel: &str,
        bytes_done: u64,
        sink: &mut dyn ChunkSink,
    ) -> ControlFlow<()> {
        for raw in self.chunker.take_ready() {
            let mut metadata = Metadata::new();
            if let Some(title) = &self.title {
                metadata.insert("title".into(), MetaValue::from(title.as_str()));
            }
            if let Some(section) = raw.section {
                metadata.insert("section".into(), MetaValue::from(section));
            }
            let chunk = Chunk {
                source: rel.to_owned(),
                chunk_index: raw.index,
                text: raw.text,
                char_start: raw.char_start,
                char_end: raw.char_end,
                metadata,
                tokens: Some(raw.tokens),
            };
            sink.accept(chunk, bytes_done)?;
        }
        ControlFlow::Continue(())
    }

    /// A part of a line too long to be a marker or heading: plain text.
    fn text(&mut self, piece: &str) {
        self.release_preamble();
        self.chunker.push(piece);
    }

    fn line(&mut self, line: &str) {
        if let Some(preamble) = &mut self.preamble {
            let content = line.trim();
            if preamble.in_start_marker || is_gutenberg_start(content) {
                preamble.lines.push(line.to_owned());
                preamble.in_start_marker = !content.ends_with("***");
                if !preamble.in_start_marker {
                    self.end_gutenberg_header();
                }
                return;
            }
            if let Some(title) = content.strip_prefix("Title:") {
                preamble.title = Some(title.trim().to_owned());
            }
            preamble.bytes += line.len();
            preamble.lines.push(line.to_owned());
            if preamble.lines.len() >= PREAMBLE_MAX_LINES || preamble.bytes >= PREAMBLE_MAX_BYTES {
                self.release_preamble();
            }
            return;
        }
        self.body_line(line);
    }

    fn body_line(&mut self, line: &str) {
        let content = line.trim();
        if self.gutenberg && is_gutenberg_end(content) {
            self.ended = true;
            return;
        }
        match self.format {
            Format::Markdown => {
                if content.starts_with("```") || content.starts_with("~~~") {
                    self.in_fence = !self.in_fence;
                } else if !self.in_fence {
                    if let Some((level, heading)) = markdown_heading(content) {
                        if level == 1 && self.title.is_none() {
                            self.title = Some(heading.clone());
                        }
                        self.chunker.section_break(Some(heading));
                    }
                }
            }
            Format::Plain => {
                if let Some(heading) = plain_heading(content) {
                    self.chunker.section_break(Some(heading));
                }
            }
        }
        self.chunker.push(line);
    }

    fn end_gutenberg_header(&mut self) {
        let preamble = self.preamble.take().expect("in preamble");
        self.gutenberg = true;
        self.title = preamble.title;
        self.chunker.skip(&preamble.lines.concat());
    }

    fn release_preamble(&mut self) {
        if let Some(preamble) = self.preamble.take() {
            for line in preamble.lines {
                self.body_line(&line);
            }
        }
    }
}

fn is_gutenberg_start(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    upper.starts_with("***") && upper.contains("START OF") && upper.contains("PROJECT GUTENBERG")
}

fn is_gutenberg_end(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    upper.starts_with("END OF THE PROJECT GUTENBERG")
        || upper.starts_with("END OF PROJECT GUTENBERG")
        || (upper.starts_with("***")
            && upper.contains("END OF")
            && upper.contains("PROJECT GUTENBERG"))
}

/// `XII.`, `3`, `One`, `FIRST`: what follows "Chapter" in a chapter line.
fn is_ordinal(word: &str) -> bool {
    const NUMBER_WORDS: [&str; 20] = [
        "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "TEN", "FIRST",
        "SECOND", "THIRD", "FOURTH", "FIFTH", "SIXTH", "SEVENTH", "EIGHTH", "NINTH", "TENTH",
    ];
    let word = word.trim_end_matches(['.', ':', ',']);
    !word.is_empty()
        && (word.chars().all(|c| c.is_ascii_digit())
            || word.chars().all(|c| "IVXLCDM".contains(c))
            || NUMBER_WORDS.iter().any(|n| word.eq_ignore_ascii_case(n)))
}

/// `## Heading ##` → (2, "Heading").
fn markdown_heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&level) || !line[level..].starts_with([' ', '\t']) {
        return None;
    }
    let text = line[level..].trim().trim_end_matches('#').trim();
    (!text.is_empty()).then(|| (level, text.to_owned()))
}

/// A chapter line of plain text (`CHAPTER XII.`, `Book 2`), or a line wrapped in one HTML
/// element (`<font size="+1">Title</font>`, as in some scraped poem collections).
fn plain_heading(line: &str) -> Option<String> {
    const WORDS: [&str; 6] = ["CHAPTER", "BOOK", "PART", "VOLUME", "CANTO", "STAVE"];
    let first = line.split_whitespace().next()?;
    // The first word first: it rejects almost every line before its words are counted.
    if line.len() <= 80
        && WORDS.iter().any(|w| first.eq_ignore_ascii_case(w))
        && line.split_whitespace().count() <= 10
        && (first.chars().all(|c| c.is_ascii_uppercase())
            || first.chars().skip(1).all(|c| c.is_ascii_lowercase()))
        && line.split_whitespace().nth(1).is_some_and(is_ordinal)
    {
        return Some(line.to_owned());
    }
    let rest = line.strip_prefix('<')?;
    let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
    let name = &rest[..name_len];
    let inner = rest[name_len..]
        .split_once('>')?
        .1
        .strip_suffix(&format!("</{name}>"))?;
    let inner = inner.trim();
    (name_len > 0 && !inner.is_empty() && !inner.contains('<') && line.len() <= 200)
        .then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(format: Format, text: &str) -> Vec<Chunk> {
        let mut reader = DocumentReader::new(
            format,
            ChunkingSettings {
                target_tokens: 30,
                overlap_tokens: 4,
            },
            TokenCounter::Estimate,
        );
        let mut out = Vec::new();
        reader.feed(text);
        reader.finish();
        let _ = reader.emit("data/p/works/doc", 0, &mut out);
        out
    }

    const GUTENBERG: &str = "The Project Gutenberg EBook of Tom Sawyer\n\nTitle: The Adventures of Tom Sawyer\n\n\
        *** START OF THIS PROJECT GUTENBERG EBOOK TOM\nSAWYER ***\n\nCHAPTER I\n\n\"TOM!\"\n\nNo answer.\n\n\
        CHAPTER II\n\nSaturday morning was come, and all the summer world was bright and fresh.\n\n\
        End of the Project Gutenberg EBook of Tom Sawyer\n\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\nlicense text\n";

    #[test]
    fn gutenberg_text_loses_header_and_footer_and_keeps_its_title_and_chapters() {
        insta::assert_yaml_snapshot!(chunks(Format::Plain, GUTENBERG));
    }

    #[test]
    fn markdown_headings_become_sections_and_the_first_h1_the_title() {
        let md = "# Mark Twain\n\nPen name of Samuel Clemens.\n\n## Life\nGrew up in Hannibal.\n\n```\n# not a heading\n```\n\n## Voice\nSatire.\n";
        insta::assert_yaml_snapshot!(chunks(Format::Markdown, md));
    }

    #[test]
    fn text_without_gutenberg_markers_is_kept_whole() {
        let text = "Title: not a header\nJust a poem,\nno boilerplate at all.\nEnd of Project Gutenberg, said nobody.\n";
        let got = chunks(Format::Plain, text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text, text.trim());
        assert_eq!(got[0].char_start, 0);
    }

    #[test]
    fn html_wrapped_title_lines_become_sections() {
        let got = chunks(
            Format::Plain,
            "<font size=\"+1\">Călin</font>\n\nGazel\n\nToamna frunzele colindă,\n",
        );
        assert_eq!(got[0].metadata["section"], MetaValue::from("Călin"));
    }

    #[test]
    fn plain_heading_recognises_chapters_only() {
        assert_eq!(plain_heading("CHAPTER XII."), Some("CHAPTER XII.".into()));
        assert_eq!(plain_heading("Chapter 3"), Some("Chapter 3".into()));
        assert_eq!(
            plain_heading("Part of the crowd went home early that day."),
            None
        );
        assert_eq!(plain_heading("CHAPTER"), None);
        assert_eq!(plain_heading("<b>bold</b> and more"), None);
    }
}
