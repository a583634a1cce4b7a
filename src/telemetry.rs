//! Logging: `tracing` to stderr, compact lines for people or JSON for machines,
//! filtered by `RUST_LOG` (default: `info` for long-running commands, `warn` for
//! the short ones, whose output is their result). Colours only on a terminal:
//! a log file or a pipe gets plain text.
//!
//! A line written within a span (a job's: its id, backend and worker) carries
//! the span's fields: in front of the message for people, under `span` in JSON.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// changes nothing), which keeps tests simple.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.compact().try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
