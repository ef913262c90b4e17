//! Captured stdout and stderr of one call: kept up to a byte budget shared by both streams,
//! the rest dropped and counted.
//!
//! Unlike wasmtime-wasi's `MemoryOutputPipe`, which traps the guest once it is full, a full
//! capture still accepts writes: a chatty guest keeps working, and the host keeps only what it
//! budgeted for.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Default)]
struct Buffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: u64,
}

/// Which stream a [`CapturedPipe`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The capture of both streams of one call.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    buffers: Arc<Mutex<Buffers>>,
    budget: usize,
}

impl Capture {
    pub(crate) fn new(budget: u64) -> Self {
        Capture {
            buffers: Arc::default(),
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
        }
    }

    /// A pipe writing into `stream` of this capture.
    pub(crate) fn pipe(&self, stream: Stream) -> CapturedPipe {
        CapturedPipe {
            capture: self.clone(),
            stream,
        }
    }

    /// What was kept of `stream`.
    pub(crate) fn contents(&self, stream: Stream) -> Vec<u8> {
        self.buffers.lock().map_or_else(
            |_| Vec::new(),
            |b| match stream {
                Stream::Stdout => b.stdout.clone(),
                Stream::Stderr => b.stderr.clone(),
            },
        )
    }

    /// Bytes written past the budget and dropped.
    pub(crate) fn dropped(&self) -> u64 {
        self.buffers.lock().map_or(0, |b| b.dropped)
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let Ok(mut buffers) = self.buffers.lock() else {
            return;
        };
        let used = buffers.stdout.len() + buffers.stderr.len();
        let kept = bytes.len().min(self.budget.saturating_sub(used));
        buffers.dropped += (bytes.len() - kept) as u64;
        let target = match stream {
            Stream::Stdout => &mut buffers.stdout,
            Stream::Stderr => &mut buffers.stderr,
        };
        target.extend_from_slice(&bytes[..kept]);
    }
}

/// One stream of a [`Capture`], as WASI's stdout or stderr.
#[derive(Debug, Clone)]
pub(crate) struct CapturedPipe {
    capture: Capture,
    stream: Stream,
}

/// Largest write the guest is invited to make at once.
const WRITE_PERMIT: usize = 64 << 10;

#[async_trait::async_trait]
impl OutputStream for CapturedPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.capture.write(self.stream, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.capture.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CapturedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`, ...), so what a guest
/// writes can never start a new log line or drive a terminal.
pub(crate) fn escape_control(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` cut to at most `max` bytes on a character boundary, and how many bytes were cut.
pub fn truncate(text: &str, max: usize) -> (&str, usize) {
    if text.len() <= max {
        return (text, 0);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_shared_budget_and_counts_the_rest() {
        let capture = Capture::new(10);
        capture.write(Stream::Stdout, b"123456");
        capture.write(Stream::Stderr, b"abcdef");
        capture.write(Stream::Stdout, b"zz");
        assert_eq!(capture.contents(Stream::Stdout), b"123456");
        assert_eq!(capture.contents(Stream::Stderr), b"abcd");
        assert_eq!(capture.dropped(), 4);
    }

    #[test]
    fn escapes_every_control_character() {
        assert_eq!(escape_control("plain ü"), "plain ü");
        assert_eq!(
            escape_control("a\nINFO forged\r\u{1b}[31m"),
            "a\\nINFO forged\\r\\u{1b}[31m"
        );
    }

    #[test]
    fn truncates_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), ("h", 5));
        assert_eq!(truncate("hello", 10), ("hello", 0));
    }
}
