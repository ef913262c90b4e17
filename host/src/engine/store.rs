//! Where an autoscaler's engine state lives between runs and restarts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::behavior::History;
use super::error::StateError;
use crate::fsutil::write_atomic;

/// What the engine must not forget across restarts: without the recommendation history a
/// restarted host would scale down early, before the stabilization window has passed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    /// Stabilization and rate-limit history.
    pub history: History,
    /// Consecutive failed runs (for the fallback).
    pub consecutive_failures: u32,
    /// When the target was last scaled, ms since the Unix epoch.
    pub last_scale_ms: Option<i64>,
}

/// Persistence of [`EngineState`].
pub trait StateBackend: Send + Sync {
    /// The stored state, or the default.
    fn load(&self) -> Result<EngineState, StateError>;
    /// Stores the state.
    fn save(&self, state: &EngineState) -> Result<(), StateError>;
}

/// Keeps nothing: for dry runs and tests.
#[derive(Debug, Default)]
pub struct NoPersistence;

impl StateBackend for NoPersistence {
    fn load(&self) -> Result<EngineState, StateError> {
        Ok(EngineState::default())
    }
    fn save(&self, _: &EngineState) -> Result<(), StateError> {
        Ok(())
    }
}

/// A JSON file per autoscaler, written atomically.
#[derive(Debug, Clone)]
pub struct FileBackend {
    path: PathBuf,
}

impl FileBackend {
    /// State at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileBackend { path: path.into() }
    }

    fn io(&self, action: &'static str, e: &std::io::Error) -> StateError {
        StateError::Io {
            action,
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }
}

impl StateBackend for FileBackend {
    fn load(&self) -> Result<EngineState, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: self.path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EngineState::default()),
            Err(e) => Err(self.io("read", &e)),
        }
    }

    fn save(&self, state: &EngineState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| self.io("write", &std::io::Error::other(e)))?;
        write_atomic(&self.path, &bytes).map_err(|e| self.io("write", &e))
    }
}

/// Keeps the state in memory, starting from a given one: cluster mode, where the durable copy
/// is the resource's status, written after every run.
#[derive(Debug, Default)]
// Used by the `kubernetes` feature's code only.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub(crate) struct MemoryBackend(std::sync::Mutex<EngineState>);

// Used by the `kubernetes` feature's code only.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
impl MemoryBackend {
    /// Starts from `state`.
    pub fn new(state: EngineState) -> Self {
        MemoryBackend(std::sync::Mutex::new(state))
    }
}

impl StateBackend for MemoryBackend {
    fn load(&self) -> Result<EngineState, StateError> {
        self.0
            .lock()
            .map(|s| s.clone())
            .map_err(|_| StateError::Poisoned)
    }
    fn save(&self, state: &EngineState) -> Result<(), StateError> {
        let mut slot = self.0.lock().map_err(|_| StateError::Poisoned)?;
        *slot = state.clone();
        Ok(())
    }
}
