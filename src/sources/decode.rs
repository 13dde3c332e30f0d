//! Opening a source file as UTF-8 bytes. A file that starts with a UTF-16 byte-order mark (LE or
//! BE, as Windows tools save "Unicode" text) is transcoded by `encoding_rs`; so is every file
//! without a BOM when `sources.encoding` names a legacy encoding (any WHATWG label:
//! `windows-1252`, `latin1`, `shift_jis`...). Any other file passes through unchanged and its
//! UTF-8 is checked by the reader, which names file, line and byte of a bad sequence.

use std::fs::File;
use std::io::Read;

use encoding_rs::Encoding;
use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};

use super::{SourceError, SourceFile};

/// A source file's bytes as UTF-8 (or, without a BOM or `sources.encoding`, as found).
pub type TextReader = DecodeReaderBytes<File, Vec<u8>>;

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
pub fn decoder<R: Read>(
    bytes: R,
    legacy: Option<&'static Encoding>,
) -> DecodeReaderBytes<R, Vec<u8>> {
    DecodeReaderBytesBuilder::new()
        .encoding(legacy)
        .bom_override(true)
        // UTF-8 is checked by the readers, which say where it breaks; transcoding it would
        // hide a bad byte behind a replacement character.
        .utf8_passthru(true)
        .build(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], legacy: Option<&'static Encoding>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, bytes).unwrap();
        let file = SourceFile {
            path,
            rel: "t.txt".into(),
            bytes: bytes.len() as u64,
        };
        let mut out = Vec::new();
        open_text(&file, legacy)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
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
        let text = "Mărțișor, 春眠 — “quoted”\r\n";
        assert_eq!(read(&utf16(text, false), None), text.as_bytes());
        assert_eq!(read(&utf16(text, true), None), text.as_bytes());
        // A bad byte stays for the reader to name.
        assert_eq!(read(b"caf\xE9\n", None), b"caf\xE9\n");
        assert_eq!(read(b"\xEF\xBB\xBFok", None), b"\xEF\xBB\xBFok");
    }

    #[test]
    fn a_legacy_encoding_decodes_files_without_a_bom() {
        let latin1 = Encoding::for_label(b"latin1");
        assert_eq!(
            read(b"caf\xE9 \x93quoted\x94", latin1),
            "café “quoted”".as_bytes()
        );
        // A BOM still says what the file is.
        assert_eq!(read(&utf16("ă", false), latin1), "ă".as_bytes());
    }
}
