#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| persona_ingest::fuzz::text_document(data));
