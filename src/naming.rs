//! Names the engine gives and checks, in one place below the settings, the stores and the
//! trigger, which all use them: collection names (from `collections.name_template`, by Chroma's
//! rule), this machine's host name (in worker ids, run-lock holders and message origins), and the
//! vector sizes of the models known by name.

/// A collection name from a template holding `{persona}` and `{kind}`.
pub fn collection_name(template: &str, persona: &str, kind: &str) -> String {
    template
        .replace("{persona}", persona)
        .replace("{kind}", kind)
}

/// Chroma's rule for collection names, so the embedded store accepts exactly what Chroma does:
/// 3 to 512 characters of `[a-zA-Z0-9._-]`, starting and ending with a letter or digit.
///
/// Errors: the rule, in words.
pub fn check_collection_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let alnum_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !(3..=512).contains(&name.len())
        || !name.chars().all(ok_char)
        || !alnum_ends
        || name.contains("..")
    {
        return Err("a collection name is 3 to 512 characters of a-z, A-Z, 0-9, '.', '_' and '-', starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The vector size of OpenAI's own embedding models, by name.
pub fn known_dimension(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// all-MiniLM-L6-v2's shape, which the settings check and the `minilm` embedder runs by.
pub mod minilm {
    /// The model name recorded with every collection and record.
    pub const MODEL: &str = "all-MiniLM-L6-v2";
    pub const DIMENSION: usize = 384;
    /// The most word pieces one input is read to, [CLS] and [SEP] included.
    pub const MAX_WORD_PIECES: usize = 256;
    /// [CLS] and [SEP]: what the tokenizer adds to every input.
    pub const SPECIAL_TOKENS: usize = 2;
}
