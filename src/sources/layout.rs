//! The data root and the paths of a persona's files in it. Every file is resolved (symlinks
//! included) and refused if it lies outside the root.

use std::path::{Path, PathBuf};

use super::{SourceError, SourceFile};
use crate::PersonaId;

/// The folder that holds `data/` and `personas/`.
#[derive(Clone, Debug)]
pub struct DataRoot {
    root: PathBuf,
}

impl DataRoot {
    /// The root need not exist yet: a missing root simply holds no persona.
    pub fn new(root: PathBuf) -> Self {
        let root = root.canonicalize().unwrap_or(root);
        Self { root }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn works_dir(&self, p: &PersonaId) -> PathBuf {
        self.root.join("data").join(p.as_str()).join("works")
    }

    pub fn quotes_file(&self, p: &PersonaId) -> PathBuf {
        self.root
            .join("data")
            .join(p.as_str())
            .join("quotes")
            .join("all_quotes.jsonl")
    }

    pub fn profile_file(&self, p: &PersonaId) -> PathBuf {
        self.root
            .join("personas")
            .join(p.as_str())
            .join("profile.md")
    }

    pub fn profile_dir(&self, p: &PersonaId) -> PathBuf {
        self.root.join("data").join(p.as_str()).join("profile")
    }

    pub fn persona_exists(&self, p: &PersonaId) -> bool {
        self.root.join("data").join(p.as_str()).is_dir()
            || self.root.join("personas").join(p.as_str()).is_dir()
    }

    /// Every persona with a folder under `data/` or `personas/`, sorted; folders whose name is
    /// not a valid persona id are left out.
    pub fn personas(&self) -> Vec<PersonaId> {
        let mut found: Vec<PersonaId> = ["data", "personas"]
            .iter()
            .filter_map(|dir| std::fs::read_dir(self.root.join(dir)).ok())
            .flatten()
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| PersonaId::parse(&entry.file_name().to_string_lossy()).ok())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// `path` relative to the root, `/`-separated, for messages and metadata.
    pub fn rel(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The file at `path` if there is one, resolved and checked to be inside the root.
    pub fn file(&self, path: &Path) -> Result<Option<SourceFile>, SourceError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SourceError::Io {
                rel: self.rel(path),
                source,
            }),
            Ok(_) => self.resolve(path).map(Some),
        }
    }

    /// The files under `dir` whose extension is one of `extensions`, recursively, sorted by
    /// path. A missing folder holds no file.
    pub fn files_under(
        &self,
        dir: &Path,
        extensions: &[&str],
    ) -> Result<Vec<SourceFile>, SourceError> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name();
        for entry in walker {
            let entry = entry.map_err(|e| SourceError::Io {
                rel: e
                    .path()
                    .map(|p| self.rel(p))
                    .unwrap_or_else(|| self.rel(dir)),
                source: e.into(),
            })?;
            let wanted = entry
                .path()
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e));
            if entry.file_type().is_file() && wanted {
                files.push(self.resolve(entry.path())?);
            }
        }
        Ok(files)
    }

    fn resolve(&self, path: &Path) -> Result<SourceFile, SourceError> {
        let rel = self.rel(path);
        let io = |source| SourceError::Io {
            rel: rel.clone(),
            source,
        };
        let resolved = path.canonicalize().map_err(io)?;
        if !resolved.starts_with(&self.root) {
            return Err(SourceError::OutsideRoot { rel });
        }
        let bytes = std::fs::metadata(&resolved).map_err(io)?.len();
        Ok(SourceFile {
            path: resolved,
            rel,
            bytes,
        })
    }
}
