//! Tokens of completed lifecycle actions, so a duplicate delivery is handled once.

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::fsutil::write_atomic;

/// Tokens of completed actions, newest last, kept on disk so a restart still recognizes a
/// duplicate.
pub(crate) struct Completed {
    path: Option<PathBuf>,
    tokens: VecDeque<String>,
}

const COMPLETED_KEPT: usize = 10_000;

impl Completed {
    pub(crate) fn open(path: Option<PathBuf>) -> Self {
        let tokens = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Completed { path, tokens }
    }

    pub(crate) fn contains(&self, token: &str) -> bool {
        self.tokens.iter().any(|t| t == token)
    }

    pub(crate) fn add(&mut self, token: &str) {
        if self.tokens.len() == COMPLETED_KEPT {
            self.tokens.pop_front();
        }
        self.tokens.push_back(token.to_owned());
        if let Some(path) = &self.path {
            let written = serde_json::to_vec(&self.tokens)
                .map_err(|e| e.to_string())
                .and_then(|b| write_atomic(path, &b).map_err(|e| e.to_string()));
            if let Err(error) = written {
                tracing::warn!(%error, "cannot persist completed lifecycle tokens");
            }
        }
    }
}
