//! Sources: where a persona's texts are found and how they are cut into chunks. The works,
//! quotes and profile sources differ only in that; the one generic ingestor drives them all.
//!
//! Sources are blocking code (file I/O and chunking): the ingestor runs them on a blocking
//! thread and receives their chunks through a bounded channel, the [`ChunkSink`].

pub mod chunker;
mod decode;
mod document;
mod documents;
#[doc(hidden)]
pub mod fuzz;
mod layout;
mod quotes;
mod text;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Settings;
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaId};

pub use chunker::{RawChunk, TextChunker};
pub use documents::DocumentSource;
pub use layout::DataRoot;
pub use quotes::QuotesSource;

use crate::record::Metadata;

/// One piece of text to embed and store, with where it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chunk {
    /// The file it came from, relative to the data root (`data/mark-twain/works/x.txt`).
    pub source: String,
    /// Position within the file: the chunk's number for texts, the line number for quotes.
    pub chunk_index: u32,
    pub text: String,
    /// Character (Unicode scalar) offsets into the file's normalised text: BOM dropped, CRLF
    /// as LF, control characters other than tab and newline removed.
    pub char_start: u64,
    pub char_end: u64,
    /// What the source knows besides: `title`, `section`, a quote's own fields.
    pub metadata: Metadata,
    /// The tokens of `text` as the source's counter counted them to size it (the embedding
    /// provider's, see [`FileSources::with_token_counter`]), so that nobody counts them again.
    pub tokens: Option<usize>,
}

/// A file a source will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The resolved path, checked to lie inside the data root.
    pub path: PathBuf,
    /// Relative to the data root, with `/` separators: what errors and metadata show.
    pub rel: String,
    pub bytes: u64,
}

/// What a source found to read, and what it looked for in vain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePlan {
    pub files: Vec<SourceFile>,
    pub missing: Vec<String>,
    /// Entries passed over while looking (hidden files and folders, `__MACOSX`, dangling
    /// symlinks, unreadable entries), each `path (why)`: told in the job's warning, never a
    /// failure.
    pub skipped: Vec<String>,
}

impl SourcePlan {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The job's warning about `skipped`: how many, and the first few.
    pub fn skipped_warning(&self) -> Option<String> {
        const NAMED: usize = 5;
        if self.skipped.is_empty() {
            return None;
        }
        let mut named = self.skipped[..self.skipped.len().min(NAMED)].join(", ");
        if self.skipped.len() > NAMED {
            named.push_str(&format!(" and {} more", self.skipped.len() - NAMED));
        }
        Some(format!("skipped {} entries: {named}", self.skipped.len()))
    }
}

/// What reading one file wants known besides its chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileReport {
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{rel}: {source}")]
    Io { rel: String, source: std::io::Error },
    #[error(
        "{rel}:{line}: a NUL byte (byte offset {byte}): UTF-16 without a byte-order mark, or not \
         text; save it as UTF-8 or with a BOM"
    )]
    NotText { rel: String, line: u64, byte: u64 },
    #[error(
        "{rel}:{line}: not valid {encoding} (byte offset {byte}); a file with a byte-order mark \
         must be in the encoding it names, one without in sources.encoding"
    )]
    Undecodable {
        rel: String,
        encoding: &'static str,
        line: u64,
        byte: u64,
    },
    #[error(
        "{rel}:{line}: not valid UTF-8 (byte offset {byte}); texts must be UTF-8, UTF-16 with a BOM, \
         or in the encoding set as sources.encoding"
    )]
    NotUtf8 { rel: String, line: u64, byte: u64 },
    #[error("{rel}: resolves outside the data root; refusing to read it")]
    OutsideRoot { rel: String },
    #[error("{rel}:{line}: {reason}")]
    BadRecord {
        rel: String,
        line: u64,
        reason: String,
    },
    #[error("data root {path}: {source}")]
    DataRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stopped before the end of {rel}")]
    Stopped { rel: String },
    /// Skip mode found no good record at all in a file that has some: read as a bad file (a
    /// wrong encoding or line ends), not as an empty one, so nothing is written or removed.
    #[error("{rel}: none of its {bad} record(s) could be read, so nothing was written and nothing removed (first: line {line}: {reason})")]
    NothingRead {
        rel: String,
        bad: usize,
        line: u64,
        reason: String,
    },
}

/// Where a source puts its chunks. `Break` means stop: the job was cancelled or failed.
pub trait ChunkSink {
    /// `bytes_done` is how much of the current file has been consumed so far.
    fn accept(&mut self, chunk: Chunk, bytes_done: u64) -> ControlFlow<()>;
}

/// A collecting sink, for tests and small tools.
impl ChunkSink for Vec<Chunk> {
    fn accept(&mut self, chunk: Chunk, _bytes_done: u64) -> ControlFlow<()> {
        self.push(chunk);
        ControlFlow::Continue(())
    }
}

/// One kind of a persona's corpus.
pub trait Source: Send + Sync {
    fn kind(&self) -> Kind;
    /// Lists the files to read (blocking).
    fn plan(&self) -> Result<SourcePlan, SourceError>;
    /// Reads one planned file into chunks (blocking).
    fn read(&self, file: &SourceFile, sink: &mut dyn ChunkSink) -> Result<FileReport, SourceError>;
    /// Whether a planned file changed since its manifest row (blocking): by its size and time
    /// on disk, else its content hash ([`crate::manifest::judge`]).
    fn judge(
        &self,
        file: &SourceFile,
        previous: Option<&crate::manifest::FileEntry>,
    ) -> std::io::Result<crate::manifest::Verdict> {
        crate::manifest::judge(&file.path, file.bytes, previous)
    }
}

/// Builds the source of a persona's kind; a seam, so tests can put sources of their own.
pub trait SourceFactory: Send + Sync {
    fn source(&self, persona: &PersonaId, kind: Kind) -> Result<Arc<dyn Source>, SourceError>;
    /// Whether anything of this persona exists under the data root.
    fn persona_exists(&self, persona: &PersonaId) -> bool;
    /// Where this persona's data is looked for, for error messages.
    fn describe(&self, persona: &PersonaId) -> String;
}

/// The sources of the data layout described in DESIGN.md.
pub struct FileSources {
    root: Arc<DataRoot>,
    settings: Arc<Settings>,
    counter: TokenCounter,
}

impl FileSources {
    pub fn new(settings: Arc<Settings>) -> Self {
        Self {
            root: Arc::new(
                DataRoot::new(settings.data_root()).with_encoding(settings.sources.encoding()),
            ),
            settings,
            counter: TokenCounter::Estimate,
        }
    }

    /// Sizes chunks and quotes with `counter` (the embedding provider's own, see
    /// [`crate::embed::EmbeddingProvider::token_counter`]).
    pub fn with_token_counter(mut self, counter: TokenCounter) -> Self {
        self.counter = counter;
        self
    }
}

impl SourceFactory for FileSources {
    fn source(&self, persona: &PersonaId, kind: Kind) -> Result<Arc<dyn Source>, SourceError> {
        let root = self.root.clone();
        let persona = persona.clone();
        Ok(match kind {
            Kind::Works | Kind::Profile => Arc::new(DocumentSource::new(
                kind,
                root,
                persona,
                self.settings.chunking,
                self.counter.clone(),
            )),
            Kind::Quotes => Arc::new(QuotesSource::new(
                root,
                persona,
                self.settings.quotes,
                // A server that truncates on request (`embedding.truncate`) reads any quote.
                if self.settings.embedding.truncate {
                    usize::MAX
                } else {
                    self.settings.embedding.max_input_tokens
                },
                self.counter.clone(),
            )),
        })
    }

    fn persona_exists(&self, persona: &PersonaId) -> bool {
        self.root.persona_exists(persona)
    }

    fn describe(&self, persona: &PersonaId) -> String {
        format!(
            "data/{p}/ and personas/{p}/ under {root}",
            p = persona,
            root = self.root.path().display()
        )
    }
}
