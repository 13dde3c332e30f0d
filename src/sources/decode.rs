//! Opening a source file as UTF-8 bytes. A file that starts with a UTF-16 byte-order mark (LE or
//! BE, as Windows tools save "Unicode" text) is transcoded by `encoding_rs`; so is every file
//! without a BOM when `sources.encoding` names a legacy encoding (any WHATWG label:
//! `windows-1252`, `latin1`, `shift_jis`...). Any other file passes through unchanged and its
//! UTF-8 is checked by the reader, which names file, line and byte of a bad sequence.
//!
//! Transcoding never replaces what it cannot read: a malformed sequence (a lone surrogate, an odd
//! byte at the end of UTF-16, a byte Shift_JIS does not define) is an error naming the encoding,
//! the line and the byte offset in the file, as a bad UTF-8 byte is.

use std::fs::File;
use std::io::{self, Read};

use encoding_rs::{DecoderResult, Encoding, UTF_16BE, UTF_16LE, UTF_8};

use super::{SourceError, SourceFile};

/// A source file's bytes as UTF-8 (or, without a BOM or `sources.encoding`, as found).
pub type TextReader = Decoding<File>;

/// Opens `file`; `legacy` is the encoding of files without a BOM (`None`: UTF-8).
///
/// Errors: [`SourceError::Io`] naming the file when it cannot be opened.
pub fn open_text(
    file: &SourceFile,
    legacy: Option<&'static Encoding>,
) -> Result<TextReader, SourceError> {
    let handle = File::open(&file.path).map_err(|source| SourceError::Io {
        rel: file.rel.clone(),
        source,
    })?;
    Ok(decoder(handle, legacy))
}

/// `bytes` as UTF-8, as [`open_text`] reads a file.
pub fn decoder<R: Read>(bytes: R, legacy: Option<&'static Encoding>) -> Decoding<R> {
    Decoding {
        inner: bytes,
        legacy: legacy.filter(|e| *e != UTF_8),
        state: State::Sniffing(Vec::new()),
        input: Vec::new(),
        consumed: 0,
        lines: 0,
        last_cr: false,
        eof: false,
        decoded: Vec::new(),
        decoded_at: 0,
    }
}

/// What a file could not be decoded as, and where: carried inside an `io::Error` of kind
/// `InvalidData` and turned into [`SourceError::Undecodable`] by the readers.
#[derive(Debug, thiserror::Error)]
#[error("not valid {encoding} (line {line}, byte offset {byte})")]
pub struct Undecodable {
    pub encoding: &'static str,
    pub line: u64,
    pub byte: u64,
}

/// The [`SourceError`] for an I/O error while reading `rel`: [`SourceError::Undecodable`] when
/// the decoder refused the bytes.
pub fn read_error(rel: &str, error: io::Error) -> SourceError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Undecodable>())
    {
        Some(u) => SourceError::Undecodable {
            rel: rel.to_owned(),
            encoding: u.encoding,
            line: u.line,
            byte: u.byte,
        },
        None => SourceError::Io {
            rel: rel.to_owned(),
            source: error,
        },
    }
}

pub struct Decoding<R> {
    inner: R,
    legacy: Option<&'static Encoding>,
    state: State,
    /// Read from `inner`, not yet decoded.
    input: Vec<u8>,
    /// Bytes of the file decoded so far (for error offsets).
    consumed: u64,
    /// Lines ended in the decoded text so far (for error positions).
    lines: u64,
    last_cr: bool,
    eof: bool,
    /// Decoded, not yet handed out from `decoded_at` on.
    decoded: Vec<u8>,
    decoded_at: usize,
}

enum State {
    /// The first bytes, until we know whether a BOM starts the file.
    Sniffing(Vec<u8>),
    /// Bytes passed through as they are (UTF-8, checked by the reader).
    Passing,
    Decoding(encoding_rs::Decoder),
    /// Every byte decoded, or an error returned.
    Done,
}

const READ_BYTES: usize = 64 * 1024;

impl<R: Read> Decoding<R> {
    fn fill(&mut self) -> io::Result<()> {
        let start = self.input.len();
        self.input.resize(start + READ_BYTES, 0);
        let got = self.inner.read(&mut self.input[start..])?;
        self.input.truncate(start + got);
        self.eof = got == 0;
        Ok(())
    }

    fn sniff(&mut self, mut head: Vec<u8>) -> io::Result<State> {
        while head.len() < 3 && !self.eof {
            self.fill()?;
            head.append(&mut self.input);
        }
        let state = match Encoding::for_bom(&head) {
            Some((encoding, bom)) if encoding == UTF_16LE || encoding == UTF_16BE => {
                head.drain(..bom);
                self.consumed += bom as u64;
                State::Decoding(encoding.new_decoder_without_bom_handling())
            }
            // The reader drops a UTF-8 BOM itself, counting its bytes.
            Some(_) => State::Passing,
            None => match self.legacy {
                Some(encoding) => State::Decoding(encoding.new_decoder_without_bom_handling()),
                None => State::Passing,
            },
        };
        head.append(&mut self.input);
        self.input = head;
        Ok(state)
    }

    fn count_lines(&mut self, text: &[u8]) {
        for b in text {
            match b {
                b'\n' if self.last_cr => {}
                b'\n' | b'\r' => self.lines += 1,
                _ => {}
            }
            self.last_cr = *b == b'\r';
        }
    }
}

impl<R: Read> Read for Decoding<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let State::Sniffing(head) = &mut self.state {
            let head = std::mem::take(head);
            self.state = self.sniff(head)?;
        }
        loop {
            if self.decoded_at < self.decoded.len() {
                let n = (self.decoded.len() - self.decoded_at).min(out.len());
                out[..n].copy_from_slice(&self.decoded[self.decoded_at..][..n]);
                self.decoded_at += n;
                return Ok(n);
            }
            if self.input.is_empty() && !self.eof {
                self.fill()?;
            }
            match &mut self.state {
                State::Sniffing(_) => unreachable!("sniffed above"),
                State::Passing => {
                    let n = self.input.len().min(out.len());
                    out[..n].copy_from_slice(&self.input[..n]);
                    self.input.drain(..n);
                    return Ok(n);
                }
                State::Done => return Ok(0),
                State::Decoding(decoder) => {
                    // Decoded into a buffer of the worst case's size, so that every call makes
                    // progress whatever the caller's buffer (the decoder needs room for a whole
                    // character).
                    let room = decoder
                        .max_utf8_buffer_length_without_replacement(self.input.len())
                        .expect("a read's worth of bytes");
                    self.decoded.resize(room, 0);
                    self.decoded_at = 0;
                    let last = self.eof;
                    let encoding = decoder.encoding().name();
                    let (result, read, written) = decoder.decode_to_utf8_without_replacement(
                        &self.input,
                        &mut self.decoded,
                        last,
                    );
                    self.decoded.truncate(written);
                    self.input.drain(..read);
                    self.consumed += read as u64;
                    let decoded = std::mem::take(&mut self.decoded);
                    self.count_lines(&decoded);
                    self.decoded = decoded;
                    if let DecoderResult::Malformed(bad, after) = result {
                        self.state = State::Done;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            Undecodable {
                                encoding,
                                line: self.lines + 1,
                                byte: self.consumed - u64::from(bad) - u64::from(after),
                            },
                        ));
                    }
                    if last && self.input.is_empty() && result == DecoderResult::InputEmpty {
                        // The decoder takes no input after its last call.
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], legacy: Option<&'static Encoding>) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        // A small output buffer, so sequences fall across reads.
        let mut reader = io::BufReader::with_capacity(7, decoder(bytes, legacy));
        reader
            .read_to_end(&mut out)
            .map_err(|e| read_error("t.txt", e).to_string())?;
        Ok(out)
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        let mut out = if big_endian {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in text.encode_utf16() {
            out.extend(if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out
    }

    #[test]
    fn utf16_with_a_bom_becomes_utf8_and_utf8_passes_unchanged() {
        let text = "Mărțișor, 春眠 — “quoted” 👩‍👩‍👧\r\n".repeat(20);
        assert_eq!(read(&utf16(&text, false), None).unwrap(), text.as_bytes());
        assert_eq!(read(&utf16(&text, true), None).unwrap(), text.as_bytes());
        // A bad byte stays for the reader to name.
        assert_eq!(read(b"caf\xE9\n", None).unwrap(), b"caf\xE9\n");
        assert_eq!(read(b"\xEF\xBB\xBFok", None).unwrap(), b"\xEF\xBB\xBFok");
        // A BOM and nothing else is an empty file, as an empty UTF-8 file is.
        assert_eq!(read(b"\xFF\xFE", None).unwrap(), b"");
        assert_eq!(read(b"\xFE\xFF", None).unwrap(), b"");
        assert_eq!(read(b"", None).unwrap(), b"");
    }

    #[test]
    fn a_legacy_encoding_decodes_files_without_a_bom() {
        let latin1 = Encoding::for_label(b"latin1");
        assert_eq!(
            read(b"caf\xE9 \x93quoted\x94", latin1).unwrap(),
            "café “quoted”".as_bytes()
        );
        // A BOM still says what the file is; "utf-8" named is no legacy encoding at all.
        assert_eq!(read(&utf16("ă", false), latin1).unwrap(), "ă".as_bytes());
        assert_eq!(
            read(b"caf\xE9", Encoding::for_label(b"utf-8")).unwrap(),
            b"caf\xE9"
        );
    }

    #[test]
    fn what_cannot_be_decoded_is_refused_where_it_is_never_replaced() {
        let mut lone_surrogate = utf16("line one\nHello ", false);
        lone_surrogate.extend([0x00, 0xD8]);
        lone_surrogate.extend(&utf16(" world.", false)[2..]);
        let error = read(&lone_surrogate, None).unwrap_err();
        assert!(
            error.starts_with("t.txt:2: not valid UTF-16LE (byte offset 32);"),
            "{error}"
        );
        let mut odd = utf16("Hi there.", true);
        odd.push(b'A');
        let error = read(&odd, None).unwrap_err();
        assert!(
            error.starts_with("t.txt:1: not valid UTF-16BE (byte offset 20);"),
            "{error}"
        );
        let shift_jis = Encoding::for_label(b"shift_jis");
        let mut sjis = shift_jis
            .unwrap()
            .encode("吾輩は猫である。\n")
            .0
            .into_owned();
        sjis.extend(b"\x81\x7f");
        let error = read(&sjis, shift_jis).unwrap_err();
        let at = format!(
            "t.txt:2: not valid Shift_JIS (byte offset {});",
            sjis.len() - 2
        );
        assert!(error.starts_with(&at), "{error}");
    }
}
