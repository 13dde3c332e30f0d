//! A corpus in memory: a source of `n` chunks in one file, that can fail or panic on demand.

use std::ops::ControlFlow;

use crate::manifest::{FileEntry, Verdict};
use crate::record::Metadata;
use crate::sources::{Chunk, ChunkSink, FileReport, Source, SourceError, SourceFile, SourcePlan};
use crate::Kind;

pub struct StaticSource {
    kind: Kind,
    chunks: usize,
    chunk_bytes: usize,
    /// Fail (or panic) after handing out this many chunks.
    fail_after: Option<(usize, bool)>,
}

pub const STATIC_FILE: &str = "data/p/static.txt";

impl StaticSource {
    /// `chunks` chunks of about `chunk_bytes` each.
    pub fn new(kind: Kind, chunks: usize, chunk_bytes: usize) -> Self {
        Self {
            kind,
            chunks,
            chunk_bytes,
            fail_after: None,
        }
    }

    pub fn failing_after(mut self, chunks: usize) -> Self {
        self.fail_after = Some((chunks, false));
        self
    }

    pub fn panicking_after(mut self, chunks: usize) -> Self {
        self.fail_after = Some((chunks, true));
        self
    }

    /// The plan this source reads: one file whose size is the sum of the chunks.
    pub fn plan(&self) -> SourcePlan {
        SourcePlan {
            files: vec![SourceFile {
                path: STATIC_FILE.into(),
                rel: STATIC_FILE.into(),
                bytes: (self.chunks * self.chunk_bytes) as u64,
            }],
            ..SourcePlan::default()
        }
    }
}

impl Source for StaticSource {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn plan(&self) -> Result<SourcePlan, SourceError> {
        Ok(StaticSource::plan(self))
    }

    fn read(&self, file: &SourceFile, sink: &mut dyn ChunkSink) -> Result<FileReport, SourceError> {
        for i in 0..self.chunks {
            match self.fail_after {
                Some((at, false)) if i == at => {
                    return Err(SourceError::BadRecord {
                        rel: file.rel.clone(),
                        line: i as u64 + 1,
                        reason: "scripted failure".into(),
                    })
                }
                Some((at, true)) if i == at => panic!("scripted panic at chunk {i}"),
                _ => {}
            }
            let text = format!("chunk {i:06} ").repeat(self.chunk_bytes / 13 + 1);
            let chunk = Chunk {
                source: file.rel.clone(),
                chunk_index: i as u32,
                char_start: (i * self.chunk_bytes) as u64,
                char_end: ((i + 1) * self.chunk_bytes) as u64,
                text,
                metadata: Metadata::new(),
                // Counted by the job, as a source that does not size its chunks leaves them.
                tokens: None,
            };
            if let ControlFlow::Break(()) = sink.accept(chunk, ((i + 1) * self.chunk_bytes) as u64)
            {
                return Err(SourceError::Stopped {
                    rel: file.rel.clone(),
                });
            }
        }
        Ok(FileReport::default())
    }

    /// The file is not on disk: it changed unless its row has its size (and so its chunks).
    fn judge(&self, file: &SourceFile, previous: Option<&FileEntry>) -> std::io::Result<Verdict> {
        let content_hash = format!("{:032x}", file.bytes);
        Ok(match previous {
            Some(row) if row.content_hash == content_hash => Verdict::Unchanged(row.clone()),
            _ => Verdict::Changed {
                content_hash,
                stamp: Default::default(),
                recorded_ns: 0,
            },
        })
    }
}

/// A source factory of static sources: `chunks` chunks for each kind given, nothing for the
/// others; a persona exists unless `missing` says otherwise; the kinds in `panics` panic after
/// that many chunks.
#[derive(Clone, Debug, Default)]
pub struct StaticSources {
    pub chunks: std::collections::HashMap<Kind, usize>,
    pub missing: bool,
    pub panics: std::collections::HashMap<Kind, usize>,
}

impl StaticSources {
    pub fn with(kinds: &[(Kind, usize)]) -> Self {
        Self {
            chunks: kinds.iter().copied().collect(),
            ..Self::default()
        }
    }
}

struct EmptySource(Kind);

impl Source for EmptySource {
    fn kind(&self) -> Kind {
        self.0
    }

    fn plan(&self) -> Result<SourcePlan, SourceError> {
        Ok(SourcePlan {
            missing: vec![format!("data/p/{}", self.0)],
            ..SourcePlan::default()
        })
    }

    fn read(&self, _: &SourceFile, _: &mut dyn ChunkSink) -> Result<FileReport, SourceError> {
        Ok(FileReport::default())
    }
}

impl crate::sources::SourceFactory for StaticSources {
    fn source(
        &self,
        _: &crate::PersonaId,
        kind: Kind,
    ) -> Result<std::sync::Arc<dyn Source>, SourceError> {
        Ok(match (self.chunks.get(&kind), self.panics.get(&kind)) {
            (Some(n), Some(at)) => {
                std::sync::Arc::new(StaticSource::new(kind, *n, 100).panicking_after(*at))
            }
            (Some(n), None) => std::sync::Arc::new(StaticSource::new(kind, *n, 100)),
            (None, _) => std::sync::Arc::new(EmptySource(kind)),
        })
    }

    fn persona_exists(&self, _: &crate::PersonaId) -> bool {
        !self.missing
    }

    fn describe(&self, persona: &crate::PersonaId) -> String {
        format!("the static sources of {persona}")
    }
}
