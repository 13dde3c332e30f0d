//! Entry points for the fuzz targets in `fuzz/` (`scripts/fuzz`), above every part they reach:
//! each takes any bytes, runs one reader or decoder over them as the engine would, and checks
//! what must hold of every input. A panic is a finding; an input that once panicked becomes a
//! unit test calling the same entry point. Not an API.

pub use crate::sources::fuzz::{quote_lines, text_document};

/// A Celery message as taken from a queue: protocol v1 or v2, any body encoding and compression.
pub fn celery_message(data: &[u8]) {
    let _ = crate::trigger::celery::decode(data);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every seed and every input a fuzzer once crashed on (`fuzz/regressions/<target>/`, each
    /// committed with the fix) runs through its target's entry point: they all pass now.
    #[test]
    fn seeds_and_past_crashes_pass_every_target() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 3] = [
            ("text_document", super::text_document),
            ("quote_lines", super::quote_lines),
            ("celery_message", super::celery_message),
        ];
        let mut ran = 0;
        for (name, target) in targets {
            for dir in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    let outcome = std::panic::catch_unwind(|| target(&data));
                    assert!(outcome.is_ok(), "{} panicked", path.display());
                    ran += 1;
                }
            }
        }
        assert!(
            ran >= 12,
            "only {ran} inputs found under {}",
            fuzz.display()
        );
    }
}
