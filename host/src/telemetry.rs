//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (else the command's default), as
//! text or JSON.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, filtering by `RUST_LOG` or else `default_filter`. Text is
/// coloured only when stderr is a terminal (a file or a pipe gets plain text; `NO_COLOR`
/// turns colour off there too). Safe to call twice (the second call does nothing).
pub fn init(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether log text is coloured, given whether stderr is a terminal.
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_or_pipe_gets_no_colour() {
        assert!(!super::colour(false));
    }
}
