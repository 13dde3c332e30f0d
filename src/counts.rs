//! What a job did, counted once and read everywhere below and above the engine: on its row, in
//! its outcome, in `/metrics` and on the dashboard.

use serde::Serialize;

/// What a job did, for its row, its outcome and the operator: files read and skipped, chunks
/// embedded (and written), left unchanged and deleted, tokens embedded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub files_read: u64,
    pub files_skipped: u64,
    pub chunks_embedded: u64,
    pub chunks_unchanged: u64,
    pub chunks_deleted: u64,
    pub tokens_embedded: u64,
}

impl std::ops::AddAssign for JobCounts {
    fn add_assign(&mut self, other: Self) {
        self.files_read += other.files_read;
        self.files_skipped += other.files_skipped;
        self.chunks_embedded += other.chunks_embedded;
        self.chunks_unchanged += other.chunks_unchanged;
        self.chunks_deleted += other.chunks_deleted;
        self.tokens_embedded += other.tokens_embedded;
    }
}
