//! Profile: `personas/{persona}/profile.md` and `data/{persona}/profile/**/*.{md,txt}`,
//! chunked by Markdown section.

use std::sync::Arc;

use super::document::read_document;
use super::{ChunkSink, DataRoot, FileReport, Source, SourceError, SourceFile, SourcePlan};
use crate::config::ChunkingSettings;
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaId};

pub struct ProfileSource {
    root: Arc<DataRoot>,
    persona: PersonaId,
    chunking: ChunkingSettings,
    counter: TokenCounter,
}

impl ProfileSource {
    pub fn new(
        root: Arc<DataRoot>,
        persona: PersonaId,
        chunking: ChunkingSettings,
        counter: TokenCounter,
    ) -> Self {
        Self {
            root,
            persona,
            chunking,
            counter,
        }
    }
}

impl Source for ProfileSource {
    fn kind(&self) -> Kind {
        Kind::Profile
    }

    fn plan(&self) -> Result<SourcePlan, SourceError> {
        let main = self.root.profile_file(&self.persona);
        let dir = self.root.profile_dir(&self.persona);
        let mut files: Vec<SourceFile> = self.root.file(&main)?.into_iter().collect();
        let mut skipped = Vec::new();
        files.extend(self.root.files_under(&dir, &["md", "txt"], &mut skipped)?);
        let missing = if files.is_empty() {
            vec![
                self.root.rel(&main),
                format!("{}/**/*.{{md,txt}}", self.root.rel(&dir)),
            ]
        } else {
            Vec::new()
        };
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
