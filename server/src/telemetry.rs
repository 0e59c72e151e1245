//! Logging: structured `tracing` events on stderr, text or JSON, filtered by
//! `RUST_LOG` (default `info`). Nothing logs a connect URL (it may hold a
//! token): the WebTransport CONNECT is read by our own code, which does not.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}
