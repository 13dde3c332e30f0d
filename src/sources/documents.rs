//! Works and the profile, one source of documents read alike (`document`), which differ only in
//! where their files are: works under `data/{persona}/works/**/*.{txt,md}`, sorted; the profile
//! at `personas/{persona}/profile.md` and under `data/{persona}/profile/**/*.{md,txt}`, chunked by
//! Markdown section.

use std::sync::Arc;

use super::document::read_document;
use super::{ChunkSink, DataRoot, FileReport, Source, SourceError, SourceFile, SourcePlan};
use crate::config::ChunkingSettings;
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaId};

pub struct DocumentSource {
    kind: Kind,
    root: Arc<DataRoot>,
    persona: PersonaId,
    chunking: ChunkingSettings,
    counter: TokenCounter,
}

impl DocumentSource {
    /// The source of `kind`, works or the profile.
    ///
    /// Panics: for the quotes, which are not documents (`QuotesSource`).
    pub fn new(
        kind: Kind,
        root: Arc<DataRoot>,
        persona: PersonaId,
        chunking: ChunkingSettings,
        counter: TokenCounter,
    ) -> Self {
        assert_ne!(kind, Kind::Quotes, "quotes are read by QuotesSource");
        Self {
            kind,
            root,
            persona,
            chunking,
            counter,
        }
    }
}

impl Source for DocumentSource {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn plan(&self) -> Result<SourcePlan, SourceError> {
        let mut skipped = Vec::new();
        let (files, looked) = match self.kind {
            Kind::Profile => {
                let main = self.root.profile_file(&self.persona);
                let dir = self.root.profile_dir(&self.persona);
                let mut files: Vec<SourceFile> = self.root.file(&main)?.into_iter().collect();
                files.extend(self.root.files_under(&dir, &["md", "txt"], &mut skipped)?);
                let looked = vec![
                    self.root.rel(&main),
                    format!("{}/**/*.{{md,txt}}", self.root.rel(&dir)),
                ];
                (files, looked)
            }
            _ => {
                let dir = self.root.works_dir(&self.persona);
                let files = self.root.files_under(&dir, &["txt", "md"], &mut skipped)?;
                (
                    files,
                    vec![format!("{}/**/*.{{txt,md}}", self.root.rel(&dir))],
                )
            }
        };
        let missing = if files.is_empty() { looked } else { Vec::new() };
        Ok(SourcePlan {
            files,
            missing,
            skipped,
        })
    }

    fn read(&self, file: &SourceFile, sink: &mut dyn ChunkSink) -> Result<FileReport, SourceError> {
        read_document(&self.root, file, self.chunking, &self.counter, sink)
    }
}
