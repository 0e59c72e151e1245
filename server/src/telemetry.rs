//! Logging: structured `tracing` events on stderr, text or JSON, filtered by
//! `RUST_LOG` (default `info`). wtransport is held at `info` whatever
//! `RUST_LOG` says, because its debug output includes connect URLs and tokens.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // wtransport logs the CONNECT request, token and all, at debug level.
    let filter = filter.add_directive("wtransport=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}
