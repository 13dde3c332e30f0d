//! Streaming UTF-8 text: a file read in blocks of bounded size, checked, with its BOM dropped,
//! CRLF turned to LF and control characters (but tab and newline) removed. A block ends at a
//! line end whenever the block holds one, so only lines longer than a block are split.

use std::io::Read;

use super::SourceError;

pub const BLOCK_BYTES: usize = 256 * 1024;

pub struct TextBlocks<R> {
    reader: R,
    rel: String,
    carry: Vec<u8>,
    at_start: bool,
    eof: bool,
    /// Lines ended so far (for error messages).
    lines: u64,
    /// Bytes of the file consumed into yielded blocks.
    bytes_done: u64,
    block_bytes: usize,
}

/// A piece of text, and how far into the file it reaches.
pub struct Block {
    pub text: String,
    pub bytes_done: u64,
}

impl<R: Read> TextBlocks<R> {
    pub fn new(reader: R, rel: impl Into<String>) -> Self {
        Self::with_block_size(reader, rel, BLOCK_BYTES)
    }

    pub fn with_block_size(reader: R, rel: impl Into<String>, block_bytes: usize) -> Self {
        Self {
            reader,
            rel: rel.into(),
            carry: Vec::new(),
            at_start: true,
            eof: false,
            lines: 0,
            bytes_done: 0,
            block_bytes: block_bytes.max(16),
        }
    }

    pub fn next_block(&mut self) -> Result<Option<Block>, SourceError> {
        let mut raw = std::mem::take(&mut self.carry);
        if !self.eof {
            let want = self.block_bytes.saturating_sub(raw.len());
            let got = (&mut self.reader)
                .take(want as u64)
                .read_to_end(&mut raw)
                .map_err(|e| super::decode::read_error(&self.rel, e))?;
            self.eof = got < want;
        }
        if self.at_start {
            self.at_start = false;
            if raw.starts_with(b"\xEF\xBB\xBF") {
                raw.drain(..3);
                self.bytes_done += 3;
            }
        }
        if raw.is_empty() {
            return Ok(None);
        }
        // UTF-8 text holds no NUL: a file that does is UTF-16 without its byte-order mark, or
        // not text at all; dropped as a control character it would leave garbage.
        if let Some(at) = raw.iter().position(|b| *b == 0) {
            return Err(SourceError::NotText {
                rel: self.rel.clone(),
                line: self.lines + 1 + line_ends(&raw[..at], Some(0)),
                byte: self.bytes_done + at as u64,
            });
        }
        let valid = match std::str::from_utf8(&raw) {
            Ok(_) => raw.len(),
            Err(e) if e.error_len().is_none() && !self.eof => e.valid_up_to(),
            Err(e) => {
                let at = e.valid_up_to();
                let line = self.lines + 1 + line_ends(&raw[..at], raw.get(at).copied());
                return Err(SourceError::NotUtf8 {
                    rel: self.rel.clone(),
                    line,
                    byte: self.bytes_done + e.valid_up_to() as u64,
                });
            }
        };
        let mut end = valid;
        if !self.eof {
            // End at the last line end (LF, CR or CRLF), so lines stay whole; and never between
            // CR and LF: a CR last in the block waits for the next one.
            match raw[..valid]
                .iter()
                .rposition(|b| *b == b'\n' || *b == b'\r')
            {
                Some(at) if raw[at] == b'\r' && at + 1 == valid => end = at,
                Some(at) => end = at + 1,
                None => {}
            }
        }
        self.carry = raw.split_off(end);
        self.lines += line_ends(&raw, self.carry.first().copied());
        self.bytes_done += raw.len() as u64;
        let text = std::str::from_utf8(&raw).expect("checked above");
        Ok(Some(Block {
            text: normalise(text),
            bytes_done: self.bytes_done,
        }))
    }
}

/// The line ends in `bytes` (LF, CRLF or a lone CR, as classic Mac files end their lines);
/// `next` is the byte after them, if known, to tell a CR that ends a CRLF's first half.
fn line_ends(bytes: &[u8], next: Option<u8>) -> u64 {
    let mut ends = 0;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\n' => ends += 1,
            b'\r' => {
                let following = bytes.get(i + 1).copied().or(next);
                if following != Some(b'\n') {
                    ends += 1;
                }
            }
            _ => {}
        }
    }
    ends
}

/// CRLF and lone CR to LF; control characters other than tab and newline dropped.
fn normalise(text: &str) -> String {
    // Most text has nothing to change: a byte scan says so (0xC2 leads U+0080 to U+00BF, among
    // them the C1 controls; any text holding one takes the slow path).
    let clean = !text
        .bytes()
        .any(|b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7F || b == 0xC2);
    if clean {
        return text.to_owned();
    }
    normalise_each_char(text)
}

/// [`normalise`] character by character: what the fast path must agree with.
fn normalise_each_char(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], block: usize) -> Result<String, SourceError> {
        let mut blocks = TextBlocks::with_block_size(bytes, "t.txt", block);
        let mut out = String::new();
        while let Some(b) = blocks.next_block()? {
            out.push_str(&b.text);
        }
        Ok(out)
    }

    proptest::proptest! {
        #[test]
        fn the_clean_text_fast_path_changes_nothing_the_slow_path_would(
            text in "[\\x00-\\x7f\u{80}-\u{a0}\\PC]{0,64}"
        ) {
            proptest::prop_assert_eq!(normalise(&text), normalise_each_char(&text));
        }
    }

    #[test]
    fn drops_bom_and_normalises_line_ends_and_controls() {
        let text = "\u{feff}one\r\ntwo\rthree\u{92}\tfour\n";
        for block in [16, 17, 18, 19, 1024] {
            assert_eq!(
                read_all(text.as_bytes(), block).unwrap(),
                "one\ntwo\nthree\tfour\n"
            );
        }
    }

    #[test]
    fn multibyte_characters_survive_any_block_boundary() {
        let text = "Călin ăâîşţ ".repeat(50);
        for block in 16..40 {
            assert_eq!(read_all(text.as_bytes(), block).unwrap(), text);
        }
    }

    #[test]
    fn invalid_utf8_names_file_line_and_byte() {
        let err = read_all(b"fine\nstill fine\nbad \x93quote\x94\n", 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.txt:3: not valid UTF-8 (byte offset 20); texts must be UTF-8, UTF-16 with a BOM, \
             or in the encoding set as sources.encoding"
        );
    }

    #[test]
    fn lines_end_with_cr_lf_or_crlf_for_positions_too() {
        for (file, line_ends) in [
            (&b"fine\rstill fine\rbad \x93quote\r"[..], "CR"),
            (&b"fine\r\nstill fine\r\nbad \x93quote\r\n"[..], "CRLF"),
            (&b"fine\r\nstill fine\rbad \x93quote\n"[..], "mixed"),
        ] {
            // Small blocks, so that line ends fall on block boundaries too.
            for block in [16, 1024] {
                match read_all(file, block) {
                    Err(SourceError::NotUtf8 { line, .. }) => {
                        assert_eq!(line, 3, "{line_ends}, blocks of {block}")
                    }
                    other => panic!("{line_ends}: {:?}", other.map(|_| ())),
                }
            }
        }
        let text = read_all(b"one\rtwo\r\nthree\rfour", 16).unwrap();
        assert_eq!(text, "one\ntwo\nthree\nfour");
    }

    #[test]
    fn a_truncated_sequence_at_the_end_is_an_error() {
        assert!(matches!(
            read_all(b"abc\xC4", 1024),
            Err(SourceError::NotUtf8 {
                line: 1,
                byte: 3,
                ..
            })
        ));
    }
}
