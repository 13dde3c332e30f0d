//! Works: `data/{persona}/works/**/*.{txt,md}`, sorted, each read as a document.

use std::sync::Arc;

use super::document::read_document;
use super::{ChunkSink, DataRoot, FileReport, Source, SourceError, SourceFile, SourcePlan};
use crate::config::ChunkingSettings;
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaId};

pub struct WorksSource {
    root: Arc<DataRoot>,
    persona: PersonaId,
    chunking: ChunkingSettings,
    counter: TokenCounter,
}

impl WorksSource {
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

impl Source for WorksSource {
    fn kind(&self) -> Kind {
        Kind::Works
    }

    fn plan(&self) -> Result<SourcePlan, SourceError> {
        let dir = self.root.works_dir(&self.persona);
        let mut skipped = Vec::new();
        let files = self.root.files_under(&dir, &["txt", "md"], &mut skipped)?;
        let missing = if files.is_empty() {
            vec![format!("{}/**/*.{{txt,md}}", self.root.rel(&dir))]
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
