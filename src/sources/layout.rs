//! The data root and the paths of a persona's files in it. Every file is resolved (symlinks
//! included) and refused if it lies outside the root.

use std::path::{Path, PathBuf};

use super::{SourceError, SourceFile};
use crate::PersonaId;

/// The folder that holds `data/` and `personas/`.
#[derive(Clone, Debug)]
pub struct DataRoot {
    root: PathBuf,
    /// The encoding of files without a BOM (`sources.encoding`); `None` for UTF-8.
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl DataRoot {
    /// The root need not exist yet: a missing root simply holds no persona.
    pub fn new(root: PathBuf) -> Self {
        let root = root.canonicalize().unwrap_or(root);
        Self {
            root,
            encoding: None,
        }
    }

    /// Files without a BOM are read in `encoding` (`None`: UTF-8).
    pub fn with_encoding(mut self, encoding: Option<&'static encoding_rs::Encoding>) -> Self {
        self.encoding = encoding;
        self
    }

    /// Opens a file found under the root as UTF-8 bytes (see [`super::decode`]).
    pub fn open_text(&self, file: &SourceFile) -> Result<super::decode::TextReader, SourceError> {
        super::decode::open_text(file, self.encoding)
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

    /// `path` relative to the root, `/`-separated, for messages, metadata and record ids. A
    /// name's bytes that are not UTF-8 are percent-encoded (`%E3`), and so is `%` itself, so
    /// that two files whose names differ only there stay two sources, and a source names its
    /// file exactly (the name's bytes are its percent-decoding).
    pub fn rel(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.components()
            .map(|c| percent_encoded(c.as_os_str().as_encoded_bytes()))
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

    /// The files under `dir` whose extension is one of `extensions` (in any case: `CHAPTER1.TXT`
    /// is a text), recursively, sorted by path. A missing folder holds no file. What is passed
    /// over is added to `skipped` as `path (why)`: hidden files and folders (a leading `.`, as
    /// editors' locks and macOS's `._` files are), `__MACOSX` folders, dangling symlinks and
    /// entries that cannot be read; none of them fails the walk.
    pub fn files_under(
        &self,
        dir: &Path,
        extensions: &[&str],
        skipped: &mut Vec<String>,
    ) -> Result<Vec<SourceFile>, SourceError> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        let mut walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = walker.next() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let rel = e.path().map_or_else(|| self.rel(dir), |p| self.rel(p));
                    let dangling = e
                        .io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
                    let why = if dangling {
                        "dangling symlink".to_owned()
                    } else {
                        format!("unreadable: {e}")
                    };
                    skipped.push(format!("{rel} ({why})"));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy();
            if entry.depth() > 0 && (name.starts_with('.') || name == "__MACOSX") {
                skipped.push(format!("{} (hidden)", self.rel(entry.path())));
                if entry.file_type().is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            let wanted = entry
                .path()
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)));
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

/// A name's UTF-8 kept as it is (but `%`), every other byte as `%XX`.
fn percent_encoded(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encoded;

    #[test]
    fn names_that_are_not_utf8_stay_distinct_and_exact() {
        assert_eq!(percent_encoded(b"\xe3lin.txt"), "%E3lin.txt");
        assert_eq!(percent_encoded(b"\xe2lin.txt"), "%E2lin.txt");
        assert_eq!(percent_encoded("caf\u{e9}.txt".as_bytes()), "caf\u{e9}.txt");
        assert_eq!(percent_encoded(b"100%.txt"), "100%25.txt");
        assert_ne!(
            percent_encoded(b"%E3lin.txt"),
            percent_encoded(b"\xe3lin.txt")
        );
    }
}
