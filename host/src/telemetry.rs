//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (else the command's default), as
//! text or JSON.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, filtering by `RUST_LOG` or else `default_filter`. Safe to
/// call twice (the second call does nothing).
pub fn init(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
