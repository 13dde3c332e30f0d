//! How an OpenAI-compatible server's answers are read: what an error status means for trying
//! again ([`failure_of`]), the wait it asks for, the batch size it states, its message in each
//! server's error shape, and base64 vectors.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use crate::embed::Failure;

/// How long the provider asks us to wait: `retry-after-ms`, or `Retry-After` in seconds or as
/// an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(seconds.max(0.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// What an error status means for trying again: 408, 429, 502–504 the server is away or busy;
/// 413 (unless about an input's tokens), or a 400/422 whose message is about the batch size
/// (text-embeddings-inference, vLLM), too many inputs; other 400/422 refused inputs; 500 and other 5xx a failure that may be an
/// input's (Ollama's "unsupported value: NaN"); the rest (401, 403, 404, 501...) fatal.
pub fn failure_of(status: StatusCode, message: &str) -> Failure {
    let lower = message.to_lowercase();
    // OpenAI's "Requested 310000 tokens, max 300000 tokens per request" is about the batch too.
    let about_batch = [
        "batch size",
        "batch_size",
        "too many inputs",
        "maximum allowed batch",
        "per request",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase));
    let about_length = lower.contains("token") || lower.contains("context length");
    match status.as_u16() {
        408 | 429 | 502..=504 => Failure::Unavailable,
        // text-embeddings-inference answers 413 for an input over its length too.
        413 if about_length && !about_batch => Failure::Refused,
        413 => Failure::BatchTooLarge,
        400 | 422 if about_batch => Failure::BatchTooLarge,
        400 | 422 => Failure::Refused,
        501 | 505 => Failure::Fatal,
        500..=599 => Failure::ServerFailed,
        _ => Failure::Fatal,
    }
}

/// The largest batch an error message states ("... > maximum allowed batch size 32").
pub fn stated_batch_limit(message: &str) -> Option<usize> {
    let lower = message.to_lowercase();
    let at = lower.find("maximum allowed batch size")? + "maximum allowed batch size".len();
    let digits: String = lower[at..]
        .trim_start_matches([' ', ':', '='])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&n| n > 0)
}

/// The provider's own words from an error body (`{"error": {"message": ...}}`, `{"error":
/// "..."}`, `{"message": ...}`, `{"detail": ...}` or the text).
pub(super) fn provider_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let said = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            let error = v.get("error");
            error
                .and_then(|e| e.get("message"))
                .and_then(said)
                .or_else(|| error.and_then(said))
                .or_else(|| v.get("message").and_then(said))
                .or_else(|| v.get("detail").map(|d| d.to_string()))
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

/// A base64 vector: little-endian f32s.
pub(super) fn decode_base64(text: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    (bytes.len() % 4 == 0).then(|| {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_say_what_to_do() {
        let at =
            |code: u16, message: &str| failure_of(StatusCode::from_u16(code).unwrap(), message);
        assert_eq!(at(429, "slow down"), Failure::Unavailable);
        assert_eq!(at(503, ""), Failure::Unavailable);
        assert_eq!(at(413, "Payload Too Large"), Failure::BatchTooLarge);
        assert_eq!(
            at(
                413,
                "Input validation error: `inputs` must have less than 512 tokens. Given: 600"
            ),
            Failure::Refused
        );
        assert_eq!(
            at(422, "batch size 64 > maximum allowed batch size 32"),
            Failure::BatchTooLarge
        );
        assert_eq!(
            at(400, "This model's maximum context length is 512"),
            Failure::Refused
        );
        assert_eq!(at(500, "unsupported value: NaN"), Failure::ServerFailed);
        assert_eq!(at(401, "bad key"), Failure::Fatal);
        assert_eq!(at(404, "model not found"), Failure::Fatal);
    }

    #[test]
    fn a_stated_batch_limit_is_read() {
        assert_eq!(
            stated_batch_limit("POST x: 413: batch size 64 > maximum allowed batch size 32"),
            Some(32)
        );
        assert_eq!(stated_batch_limit("Payload Too Large"), None);
    }

    #[test]
    fn error_bodies_of_every_server_give_their_message() {
        assert_eq!(provider_message(r#"{"error":{"message":"m1"}}"#), "m1");
        assert_eq!(
            provider_message(r#"{"error":"m2","error_type":"validation"}"#),
            "m2"
        );
        assert_eq!(
            provider_message(r#"{"object":"error","message":"m3"}"#),
            "m3"
        );
        assert_eq!(provider_message("plain"), "plain");
    }

    #[test]
    fn base64_vectors_are_little_endian_f32s() {
        let bytes: Vec<u8> = [1.0f32, -2.5]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(decode_base64(&text), Some(vec![1.0, -2.5]));
        assert_eq!(decode_base64("AAA="), None);
    }
}
