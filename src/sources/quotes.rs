//! Quotes: `data/{persona}/quotes/all_quotes.jsonl`, one JSON object a line, one record a
//! quote, never split. `text` is required; other fields become metadata: scalars as they
//! are, lists of scalars joined with ", ", nulls dropped; anything else is a bad record.
//! A field whose name the engine uses itself (`source`, `kind`...) is kept as `quote_<name>`.
//!
//! Strict mode checks the whole file before handing out a single chunk, so a bad line fails
//! the job with nothing written; skip mode passes over bad lines and lists them.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::Arc;

use super::{Chunk, ChunkSink, DataRoot, FileReport, Source, SourceError, SourceFile, SourcePlan};
use crate::config::{OnBadRecord, QuotesSettings};
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaId};

mod record;

pub(super) use record::{needs_renaming, parse_record};

/// How many skipped lines a warning lists by number.
const LISTED_SKIPS: usize = 20;

pub struct QuotesSource {
    root: Arc<DataRoot>,
    persona: PersonaId,
    settings: QuotesSettings,
    /// The embedding model's input limit: a longer quote is a bad record.
    max_tokens: usize,
    counter: TokenCounter,
}

impl QuotesSource {
    pub fn new(
        root: Arc<DataRoot>,
        persona: PersonaId,
        settings: QuotesSettings,
        max_input_tokens: usize,
        counter: TokenCounter,
    ) -> Self {
        Self {
            root,
            persona,
            settings,
            max_tokens: max_input_tokens.saturating_sub(counter.special_tokens()),
            counter,
        }
    }

    /// Reads every line; `emit` gets each good record, `bad` each bad one (line, reason).
    fn scan(
        &self,
        file: &SourceFile,
        mut emit: impl FnMut(Chunk, u64) -> ControlFlow<()>,
        mut bad: impl FnMut(u64, String) -> ControlFlow<SourceError>,
    ) -> Result<(), SourceError> {
        let io = |e| super::decode::read_error(&file.rel, e);
        let mut reader = BufReader::with_capacity(64 * 1024, self.root.open_text(file)?);
        let limit = self.settings.max_record_bytes;
        let mut line = Vec::new();
        let (mut number, mut bytes_done) = (0u64, 0u64);
        loop {
            line.clear();
            let read = read_line(&mut reader, limit, &mut line).map_err(io)?;
            if read == 0 {
                return Ok(());
            }
            number += 1;
            bytes_done += read as u64;
            let too_long = line.len() > limit && !matches!(line.last(), Some(b'\n' | b'\r'));
            let record = if too_long {
                skip_rest_of_line(&mut reader, &mut bytes_done).map_err(io)?;
                Err(format!(
                    "line longer than quotes.max_record_bytes ({limit} bytes)"
                ))
            } else {
                parse_record(&line, number == 1).and_then(|record| {
                    let Some((text, metadata)) = record else {
                        return Ok(None);
                    };
                    let tokens = self.counter.count(&text);
                    if tokens > self.max_tokens {
                        return Err(format!(
                            "`text` of {tokens} tokens ({}) is over the {} the embedding model \
                             reads (embedding.max_input_tokens)",
                            self.counter.describe(),
                            self.max_tokens
                        ));
                    }
                    Ok(Some((text, metadata, tokens)))
                })
            };
            match record {
                Ok(None) => {}
                Ok(Some((text, metadata, tokens))) => {
                    let chunk = Chunk {
                        source: file.rel.clone(),
                        chunk_index: number as u32,
                        char_end: text.chars().count() as u64,
                        char_start: 0,
                        text,
                        metadata,
                        tokens: Some(tokens),
                    };
                    if emit(chunk, bytes_done).is_break() {
                        return Err(SourceError::Stopped {
                            rel: file.rel.clone(),
                        });
                    }
                }
                Err(reason) => {
                    if let ControlFlow::Break(e) = bad(number, reason) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl Source for QuotesSource {
    fn kind(&self) -> Kind {
        Kind::Quotes
    }

    fn plan(&self) -> Result<SourcePlan, SourceError> {
        let path = self.root.quotes_file(&self.persona);
        Ok(match self.root.file(&path)? {
            Some(file) => SourcePlan {
                files: vec![file],
                ..SourcePlan::default()
            },
            None => SourcePlan {
                missing: vec![self.root.rel(&path)],
                ..SourcePlan::default()
            },
        })
    }

    fn read(&self, file: &SourceFile, sink: &mut dyn ChunkSink) -> Result<FileReport, SourceError> {
        let fail_on = |line, reason| {
            ControlFlow::Break(SourceError::BadRecord {
                rel: file.rel.clone(),
                line,
                reason,
            })
        };
        match self.settings.on_bad_record {
            OnBadRecord::Fail => {
                self.scan(file, |_, _| ControlFlow::Continue(()), fail_on)?;
                self.scan(file, |chunk, done| sink.accept(chunk, done), fail_on)?;
                Ok(FileReport::default())
            }
            OnBadRecord::Skip => {
                let mut skipped: Vec<(u64, String)> = Vec::new();
                let mut good = 0u64;
                self.scan(
                    file,
                    |chunk, done| {
                        good += 1;
                        sink.accept(chunk, done)
                    },
                    |line, reason| {
                        skipped.push((line, reason));
                        ControlFlow::Continue(())
                    },
                )?;
                if good == 0 {
                    if let Some((line, reason)) = skipped.first().cloned() {
                        return Err(SourceError::NothingRead {
                            rel: file.rel.clone(),
                            bad: skipped.len(),
                            line,
                            reason,
                        });
                    }
                }
                Ok(FileReport {
                    warnings: skip_warning(&file.rel, &skipped).into_iter().collect(),
                })
            }
        }
    }
}

/// Reads one line into `line`, its end included: LF, CRLF or a lone CR (classic Mac files), so
/// that records and their line numbers are the same whatever the line ends. Stops early once
/// `line` is longer than `limit`; answers the bytes read (0 at the end of the file).
pub(super) fn read_line(
    reader: &mut impl BufRead,
    limit: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(read);
        }
        match buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            Some(at) if line.len() + at <= limit => {
                let cr = buf[at] == b'\r';
                line.extend_from_slice(&buf[..=at]);
                reader.consume(at + 1);
                read += at + 1;
                if cr && reader.fill_buf()?.first() == Some(&b'\n') {
                    line.push(b'\n');
                    reader.consume(1);
                    read += 1;
                }
                return Ok(read);
            }
            // No line end in reach: take up to one byte past the limit.
            _ => {
                let take = buf.len().min(limit + 1 - line.len().min(limit + 1));
                line.extend_from_slice(&buf[..take]);
                reader.consume(take);
                read += take;
                if line.len() > limit {
                    return Ok(read);
                }
            }
        }
    }
}

/// Passes over the rest of a line too long to keep, its end (LF, CR or CRLF) included.
fn skip_rest_of_line(reader: &mut impl BufRead, bytes_done: &mut u64) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            Some(at) => {
                let cr = buf[at] == b'\r';
                reader.consume(at + 1);
                *bytes_done += at as u64 + 1;
                if cr && reader.fill_buf()?.first() == Some(&b'\n') {
                    reader.consume(1);
                    *bytes_done += 1;
                }
                return Ok(());
            }
            None => {
                let used = buf.len();
                reader.consume(used);
                *bytes_done += used as u64;
            }
        }
    }
}

fn skip_warning(rel: &str, skipped: &[(u64, String)]) -> Option<String> {
    if skipped.is_empty() {
        return None;
    }
    let listed: Vec<String> = skipped
        .iter()
        .take(LISTED_SKIPS)
        .map(|(line, reason)| format!("{rel}:{line}: {reason}"))
        .collect();
    let more = skipped.len().saturating_sub(LISTED_SKIPS);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    Some(format!(
        "skipped {} bad quote record(s): {}{tail}",
        skipped.len(),
        listed.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MetaValue;

    #[test]
    fn lines_end_with_lf_cr_or_crlf_and_long_ones_stop_at_the_limit() {
        let mut reader = std::io::Cursor::new(b"a\rb\r\nc\nd".to_vec());
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if read_line(&mut reader, 100, &mut line).unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, ["a\r", "b\r\n", "c\n", "d"]);

        let mut reader = std::io::Cursor::new(b"0123456789\r\nnext\r".to_vec());
        let mut line = Vec::new();
        read_line(&mut reader, 4, &mut line).unwrap();
        assert_eq!(line, b"01234", "stops one past the limit");
        let mut done = 0;
        skip_rest_of_line(&mut reader, &mut done).unwrap();
        assert_eq!(done, 7, "the rest and its CRLF");
        let mut line = Vec::new();
        read_line(&mut reader, 100, &mut line).unwrap();
        assert_eq!(line, b"next\r");
    }

    #[test]
    fn every_field_survives_under_a_name_every_store_takes() {
        let (_, metadata) = parse_record(
            br##"{"text": "t", "source": "a book", "quote_source": "a letter", "$weight": 2, "#topic": "x", "": "empty", "id": 18446744073709551615}"##,
            false,
        )
        .unwrap()
        .unwrap();
        let get = |k: &str| metadata.get(k).cloned();
        assert_eq!(get("quote_source"), Some(MetaValue::Str("a letter".into())));
        assert_eq!(get("quote_source_2"), Some(MetaValue::Str("a book".into())));
        assert_eq!(get("quote_$weight"), Some(MetaValue::Int(2)));
        assert_eq!(get("quote_#topic"), Some(MetaValue::Str("x".into())));
        assert_eq!(get("quote_"), Some(MetaValue::Str("empty".into())));
        assert_eq!(
            get("id"),
            Some(MetaValue::Str("18446744073709551615".into())),
            "kept exactly"
        );
        assert!(metadata
            .keys()
            .all(|k| !k.is_empty() && !k.starts_with(['$', '#'])));
    }

    #[test]
    fn records_flatten_into_metadata() {
        let (text, metadata) = parse_record(
            br#"{"text": "When in doubt, tell the truth.", "author": "Mark Twain", "tags": ["Truth", "Famous Quotes"], "year": 1894, "score": 0.5, "verified": true, "source": "quotable", "note": null}"#,
            true,
        )
        .unwrap()
        .unwrap();
        insta::assert_yaml_snapshot!((text, metadata));
    }

    #[test]
    fn bad_records_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"{\"text\": \"unterminated", "malformed JSON"),
            (b"[\"text\"]", "expected a JSON object"),
            (b"{\"author\": \"nobody\"}", "missing required field `text`"),
            (b"{\"text\": 42}", "`text` is not a string"),
            (b"{\"text\": \"  \"}", "`text` is empty"),
            (
                b"{\"text\": \"x\", \"meta\": {\"a\": 1}}",
                "field `meta`: an object cannot be flattened",
            ),
            (
                b"{\"text\": \"x\", \"tags\": [[1]]}",
                "field `tags`: a list holding a list",
            ),
            (b"{\"text\": \"caf\xE9\"}", "not valid UTF-8"),
            (
                b"{\"text\": \"one\", \"text\": \"two\"}",
                "duplicated key `text`",
            ),
            (
                b"{\"text\": \"x\", \"year\": 1, \"year\": 2}",
                "duplicated key `year`",
            ),
        ];
        for (line, why) in cases {
            let reason = parse_record(line, false).unwrap_err();
            assert!(reason.contains(why), "{reason}");
        }
        assert_eq!(parse_record(b"   \n", false), Ok(None));
    }
}
