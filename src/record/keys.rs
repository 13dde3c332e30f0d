//! The metadata keys the engine sets on every record, in one place, so that the record builder
//! (`ingestor`) and the quotes reader (which renames a quote's own field of
//! such a name) cannot disagree.

pub const PERSONA_ID: &str = "persona_id";
pub const KIND: &str = "kind";
pub const SOURCE: &str = "source";
pub const CHUNK_INDEX: &str = "chunk_index";
pub const CHAR_START: &str = "char_start";
pub const CHAR_END: &str = "char_end";
pub const CONTENT_HASH: &str = "content_hash";
pub const EMBEDDING_MODEL: &str = "embedding_model";

/// Every key the engine sets on every record.
pub const ENGINE_KEYS: [&str; 8] = [
    PERSONA_ID,
    KIND,
    SOURCE,
    CHUNK_INDEX,
    CHAR_START,
    CHAR_END,
    CONTENT_HASH,
    EMBEDDING_MODEL,
];

/// Keys the text sources set on their chunks (a work's title and section).
pub const SOURCE_KEYS: [&str; 2] = ["title", "section"];

/// Whether a source's own field may not use `key`: the engine or a text source sets it.
pub fn is_reserved(key: &str) -> bool {
    ENGINE_KEYS.contains(&key) || SOURCE_KEYS.contains(&key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_engine_key_is_reserved() {
        for key in super::ENGINE_KEYS.iter().chain(&super::SOURCE_KEYS) {
            assert!(super::is_reserved(key), "{key}");
        }
        assert!(!super::is_reserved("author"));
    }
}
