//! Logging: `tracing` to stderr, compact lines for people or JSON for machines,
//! filtered by `RUST_LOG` (default: `info` for long-running commands, `warn` for
//! the short ones, whose output is their result). Colours only on a terminal:
//! a log file or a pipe gets plain text.
//!
//! A line written within a span (a job's: its id, backend and worker) carries
//! the span's fields: in front of the message for people, under `span` in JSON.
//!
//! The NATS client's `trace` lines are never written, whatever `RUST_LOG` asks:
//! they hold whole messages, launch requests with their secret values among them.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

/// The target of the NATS client's lines.
const NATS_CLIENT: &str = "async_nats";

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// changes nothing), which keeps tests simple.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_level))
        .and(filter_fn(shows_no_message));
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry();
    let _ = match format {
        LogFormat::Human => registry
            .with(layer.compact().with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
}

/// Whether a line cannot hold a NATS message: any but the NATS client's
/// `trace` lines.
fn shows_no_message(line: &Metadata<'_>) -> bool {
    *line.level() != Level::TRACE || !line.target().starts_with(NATS_CLIENT)
}
