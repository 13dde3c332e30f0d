//! Whether a file changed since the manifest's row was written: by its size and modification
//! time, and by its content hash where those cannot tell (the time moved, or it is too close to
//! when the row was written to trust, as git does with its index).

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::Xxh3;

use super::FileEntry;
use crate::sources::SourceFile;

/// A modification time this close to when the file was last judged (or after it) may hide a
/// change made in the same clock tick of a coarse file system (FAT's 2 s): such a file is hashed
/// to be sure.
const RACY_NS: i64 = 2_000_000_000;

/// What to do with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its bytes are what the row describes: its records stand, unread. The entry is the row,
    /// its size and time brought up to date.
    Unchanged(FileEntry),
    /// To read and chunk; `content_hash`, `modified_ns` and `recorded_ns` (when it was judged,
    /// before it is read) are what the new row will say.
    Changed {
        content_hash: String,
        modified_ns: i64,
        recorded_ns: i64,
    },
}

/// Judges `file` against its row, if it has one (`None`: not in the manifest, or not to be
/// trusted): an unchanged size and time skip it without opening it; otherwise its hash decides.
///
/// Errors: the file's metadata or bytes unreadable (named by the caller).
pub fn judge(file: &SourceFile, previous: Option<&FileEntry>) -> std::io::Result<Verdict> {
    let now = now_ns();
    let modified = modified_ns(&file.path)?;
    if let Some(entry) = previous {
        let racy = modified + RACY_NS >= entry.recorded_ns;
        if entry.bytes == file.bytes && entry.modified_ns == modified && !racy {
            return Ok(Verdict::Unchanged(entry.clone()));
        }
    }
    let content_hash = hash_file(&file.path)?;
    match previous {
        Some(entry) if entry.content_hash == content_hash => Ok(Verdict::Unchanged(FileEntry {
            bytes: file.bytes,
            modified_ns: modified,
            recorded_ns: now,
            ..entry.clone()
        })),
        _ => Ok(Verdict::Changed {
            content_hash,
            modified_ns: modified,
            recorded_ns: now,
        }),
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// The file's modification time in nanoseconds since the Unix epoch (0 where the file system
/// keeps none).
pub fn modified_ns(path: &Path) -> std::io::Result<i64> {
    let modified = std::fs::metadata(path)?
        .modified()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(match modified.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    })
}

/// xxh3-128 of the file's bytes, 32 hex digits, read in 64 KiB pieces.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}
