//! The checks serde cannot make: ranges, and relations between keys. Each refusal names its key.

use super::{check_collection_name, ConfigError, ProviderKind, Settings};

impl Settings {
    /// Checks what serde cannot: ranges and relations between keys.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |key: &str, why: String| Err(ConfigError(format!("`{key}`: {why}")));
        let c = &self.chunking;
        if c.target_tokens < 16 {
            return refuse(
                "chunking.target_tokens",
                format!("{} is below the minimum of 16", c.target_tokens),
            );
        }
        if c.overlap_tokens * 2 >= c.target_tokens {
            return refuse(
                "chunking.overlap_tokens",
                format!(
                    "{} must be less than half of chunking.target_tokens ({})",
                    c.overlap_tokens, c.target_tokens
                ),
            );
        }
        if let Some(price) = self.embedding.price_per_million_tokens {
            if !(price.is_finite() && price >= 0.0) {
                return refuse(
                    "embedding.price_per_million_tokens",
                    format!("{price} is not a price (a number of 0 or more)"),
                );
            }
        }
        if let Some(label) = &self.sources.encoding {
            let encoding = encoding_rs::Encoding::for_label(label.as_bytes());
            if encoding == Some(encoding_rs::REPLACEMENT) {
                return refuse(
                    "sources.encoding",
                    format!(
                        "{label:?} names WHATWG's \"replacement\" encoding, which reads any file \
                         as one replacement character: name the encoding the files are in"
                    ),
                );
            }
            if encoding.is_none() {
                return refuse(
                    "sources.encoding",
                    format!(
                        "{label:?} is not an encoding label (WHATWG's: windows-1252, latin1, \
                         utf-16le, shift_jis, gb18030, ...)"
                    ),
                );
            }
        }
        let e = &self.embedding;
        if let Some(d) = e.dimension.filter(|d| !(2..=16384).contains(d)) {
            return refuse("embedding.dimension", format!("{d} is outside 2..=16384"));
        }
        for (key, value) in [
            ("embedding.max_batch_inputs", e.max_batch_inputs),
            ("embedding.max_batch_tokens", e.max_batch_tokens),
            ("embedding.max_in_flight", e.max_in_flight),
            ("store.max_in_flight", self.store.max_in_flight),
            ("ingest.window_chunks", self.ingest.window_chunks),
            ("ingest.windows_in_flight", self.windows_in_flight()),
            ("worker.concurrency", self.worker.concurrency),
            ("worker.prefetch", self.worker.prefetch),
            ("quotes.max_record_bytes", self.quotes.max_record_bytes),
            (
                "embedding.requests_per_minute",
                e.requests_per_minute.map_or(1, |n| n as usize),
            ),
            (
                "embedding.tokens_per_minute",
                e.tokens_per_minute.map_or(1, |n| n as usize),
            ),
            ("store.max_request_bytes", self.store.max_request_bytes),
            ("embedding.dimensions", e.dimensions.unwrap_or(1)),
            (
                "database.max_connections",
                self.database.max_connections as usize,
            ),
        ] {
            if value == 0 {
                return refuse(key, "must be at least 1".into());
            }
        }
        if e.max_batch_tokens < c.target_tokens {
            return refuse(
                "embedding.max_batch_tokens",
                format!(
                    "{} cannot hold one chunk of chunking.target_tokens ({})",
                    e.max_batch_tokens, c.target_tokens
                ),
            );
        }
        if e.provider == ProviderKind::OpenAi {
            if e.max_batch_inputs > 2048 {
                return refuse(
                    "embedding.max_batch_inputs",
                    format!(
                        "{} is over the API's limit of 2048 inputs a request",
                        e.max_batch_inputs
                    ),
                );
            }
            if let (Some(shorten), Some(size)) = (e.dimensions, e.dimension) {
                if shorten != size {
                    return refuse(
                        "embedding.dimensions",
                        format!("{shorten} asks for vectors of another size than embedding.dimension ({size})"),
                    );
                }
            }
            if let Some(format) = e.encoding_format.as_deref() {
                if !["float", "base64"].contains(&format) {
                    return refuse(
                        "embedding.encoding_format",
                        format!("{format:?} is neither \"float\" nor \"base64\""),
                    );
                }
            }
        }
        if e.provider == ProviderKind::MiniLm {
            use crate::naming::minilm::{MAX_WORD_PIECES, SPECIAL_TOKENS};
            if e.max_input_tokens > MAX_WORD_PIECES {
                return refuse(
                    "embedding.max_input_tokens",
                    format!(
                        "{} is over what all-MiniLM-L6-v2 reads ({MAX_WORD_PIECES} word pieces)",
                        e.max_input_tokens
                    ),
                );
            }
            if c.target_tokens + SPECIAL_TOKENS > e.max_input_tokens {
                return refuse(
                    "chunking.target_tokens",
                    format!(
                        "{} word pieces and the model's {SPECIAL_TOKENS} special tokens do not fit \
                         all-MiniLM-L6-v2's {} (embedding.max_input_tokens): chunks would be cut; \
                         at most {}",
                        c.target_tokens,
                        e.max_input_tokens,
                        e.max_input_tokens - SPECIAL_TOKENS
                    ),
                );
            }
            if let Some(d) = e
                .dimension
                .filter(|&d| d != crate::naming::minilm::DIMENSION)
            {
                return refuse(
                    "embedding.dimension",
                    format!("{d}: all-MiniLM-L6-v2's vectors have 384"),
                );
            }
            if e.threads == Some(0) {
                return refuse("embedding.threads", "must be at least 1".into());
            }
        }
        if c.target_tokens > e.max_input_tokens {
            return refuse(
                "chunking.target_tokens",
                format!(
                    "{} is over the embedding model's input limit, embedding.max_input_tokens ({})",
                    c.target_tokens, e.max_input_tokens
                ),
            );
        }
        let w = &self.worker;
        if w.soft_time_limit == 0 || w.soft_time_limit > w.time_limit {
            return refuse(
                "worker.soft_time_limit",
                format!(
                    "{} must be between 1 and worker.time_limit ({})",
                    w.soft_time_limit, w.time_limit
                ),
            );
        }
        if !(w.retry_delay.is_finite() && w.retry_delay >= 0.0) {
            return refuse(
                "worker.retry_delay",
                format!("{} must be a number of seconds, 0 or more", w.retry_delay),
            );
        }
        let listen = &self.http.listen;
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            return refuse(
                "http.listen",
                format!("{listen:?} is not host:port (an IP address and a port), nor empty (off)"),
            );
        }
        if self
            .http
            .token
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return refuse("http.token", "must not be empty when set".into());
        }
        let t = &self.tasks;
        let names = [&t.full_persona, &t.works, &t.quotes, &t.profile];
        for (key, name) in ["full_persona", "works", "quotes", "profile"]
            .iter()
            .zip(names)
        {
            if name.trim().is_empty() {
                return refuse(&format!("tasks.{key}"), "must not be empty".into());
            }
            if names.iter().filter(|n| **n == name).count() > 1 {
                return refuse(&format!("tasks.{key}"), format!("{name:?} names two tasks"));
            }
        }
        let template = &self.collections.name_template;
        if !template.contains("{persona}") || !template.contains("{kind}") {
            return refuse(
                "collections.name_template",
                format!("{template:?} must contain both {{persona}} and {{kind}}"),
            );
        }
        let sample = self.collection_name("x", "works");
        if let Err(why) = check_collection_name(&sample) {
            return refuse(
                "collections.name_template",
                format!("{template:?} gives {sample:?}: {why}"),
            );
        }
        if self.database.url.trim().is_empty() {
            return refuse("database.url", "is empty".into());
        }
        // Checked here, not when first used, so that a URL the daemon cannot use stops it at
        // start with the key named (exit 2).
        if let Err(why) = crate::urls::redis::client(&self.redis.url) {
            return refuse(
                "redis.url",
                format!("{}: {why}", crate::urls::redact(&self.redis.url)),
            );
        }
        if let Some(url) = &self.results.url {
            if let Err(why) = crate::urls::redis::client(url) {
                return refuse(
                    "results.url",
                    format!("{}: {why}", crate::urls::redact(url)),
                );
            }
        }
        Ok(())
    }
}
