//! Whether a file changed since the manifest's row was written: by its size, modification and
//! change times and inode, and by its content hash where those cannot tell (they moved, or are
//! too close to when the row was written to trust), as git does with its index.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::Xxh3;

use super::FileEntry;

/// A modification time this close to when the file was last judged (or after it) may hide a
/// change made in the same clock tick of a coarse file system (FAT's 2 s): such a file is hashed
/// to be sure.
const RACY_NS: i64 = 2_000_000_000;

/// What a file's metadata says of it, compared before its bytes are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Modification time, in nanoseconds since the Unix epoch (0 where the file system keeps
    /// none).
    pub modified_ns: i64,
    /// Change time (ctime): moved by any write, rename or `touch -r` that sets the modification
    /// time back (0 outside Unix).
    pub changed_ns: i64,
    pub inode: i64,
}

/// What to do with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its bytes are what the row describes: its records stand, unread. The entry is the row,
    /// its size and stamp brought up to date.
    Unchanged(FileEntry),
    /// To read and chunk; `content_hash`, `stamp` and `recorded_ns` (when it was judged, before
    /// it is read) are what the new row will say.
    Changed {
        content_hash: String,
        stamp: Stamp,
        recorded_ns: i64,
    },
}

/// Judges the file at `path`, of `bytes` bytes as listed, against its row, if it has one (`None`: not in the manifest, or not to be
/// trusted): an unchanged size, modification time, change time and inode skip it without
/// opening it; otherwise its hash decides.
///
/// Errors: the file's metadata or bytes unreadable (named by the caller).
pub fn judge(path: &Path, bytes: u64, previous: Option<&FileEntry>) -> std::io::Result<Verdict> {
    let now = now_ns();
    let stamp = stamp(path)?;
    if let Some(entry) = previous {
        let latest = stamp.modified_ns.max(stamp.changed_ns);
        let racy = latest + RACY_NS >= entry.recorded_ns;
        let same = entry.bytes == bytes
            && entry.modified_ns == stamp.modified_ns
            && entry.changed_ns == stamp.changed_ns
            && entry.inode == stamp.inode;
        if same && !racy {
            return Ok(Verdict::Unchanged(entry.clone()));
        }
    }
    let content_hash = hash_file(path)?;
    match previous {
        Some(entry) if entry.content_hash == content_hash => Ok(Verdict::Unchanged(FileEntry {
            bytes,
            modified_ns: stamp.modified_ns,
            changed_ns: stamp.changed_ns,
            inode: stamp.inode,
            recorded_ns: now,
            ..entry.clone()
        })),
        _ => Ok(Verdict::Changed {
            content_hash,
            stamp,
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

/// The file's [`Stamp`].
pub fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let metadata = std::fs::metadata(path)?;
    let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let modified_ns = match modified.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    };
    #[cfg(unix)]
    let (changed_ns, inode) = {
        use std::os::unix::fs::MetadataExt;
        (
            metadata
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(metadata.ctime_nsec()),
            metadata.ino() as i64,
        )
    };
    #[cfg(not(unix))]
    let (changed_ns, inode) = (0, 0);
    Ok(Stamp {
        modified_ns,
        changed_ns,
        inode,
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
