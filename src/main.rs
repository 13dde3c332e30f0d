//! The `persona-ingest` binary: parses flags, loads settings, runs one command inside an
//! actix system. Everything else lives in the library.

use clap::Parser;
use persona_ingest::cli::{self, Cli, LogFormat};
use persona_ingest::config::ConfigInputs;

// glibc's malloc took a quarter of the main thread's CPU under load (its free lists and
// consolidation): the engine allocates many small, short-lived values a message. Built without
// transparent huge pages (the `no_thp` feature) and set in `main` to give freed memory back at
// once, mimalloc keeps a 50 MB file's ingestion at 39 MB at its peak (glibc: 41 MB; mimalloc as
// it comes, which backs its arenas with huge pages and purges after a second: 68 MB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (the same in v2 and v3: retired
/// options keep their place), which the Rust bindings leave out.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // SAFETY: sets one of mimalloc's options, which it reads whenever it purges; nothing else
    // runs yet. Measured: no throughput lost against its default delay of 1 s.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    #[cfg(feature = "minilm")]
    persona_ingest::embed::minilm::turn_off_candles_pool();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // A closed stderr (`| head`) must not turn every log line into a panic.
        .log_internal_errors(false);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        // A job's lines carry its span: `"span": {"persona", "kind", "job_id"}`.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let settings = match cli.settings(ConfigInputs::from_process_env()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let code = actix::System::new().block_on(cli::run(cli, settings));
    std::process::exit(code);
}
