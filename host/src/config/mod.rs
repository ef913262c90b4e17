//! The `wasmscaler run` config file: its format, parsing with positions, and validation. What
//! is built from it is [`crate::host`]'s job.

mod diagnose;
mod reference;

pub use reference::{reference, schema};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{AutoscalerSpec, TargetSpec};
use crate::hooks::LifecycleSpec;
use crate::policies::{FetchConfig, PolicyRef, StoreQuota};
use crate::sandbox::SandboxConfig;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// Where engine state (stabilization history) and guest state are kept, relative to the
    /// config file (default `.wasmscaler-state`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Host-wide sandbox settings (cache directory, pool size).
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// How `https://` and `oci://` policies are fetched.
    #[serde(default)]
    pub fetch: FetchConfig,
    /// How much the upload store may hold.
    #[serde(default)]
    pub uploads: StoreQuota,
    /// The autoscalers.
    #[serde(default)]
    pub autoscalers: Vec<AutoscalerSpec>,
    /// Lifecycle hook handlers (AWS Auto Scaling), each consuming its hook's SQS queue.
    #[serde(default)]
    pub lifecycle: Vec<LifecycleSpec>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".wasmscaler-state")
}

/// A config file that failed to load, with the file and position in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The line of `name: NAME` in the file, to point semantic errors at their autoscaler.
fn line_of_name(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.strip_prefix("name:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
        .map(|i| i + 1)
}

impl ConfigFile {
    /// Reads, parses and validates `path`. Relative paths inside are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: ConfigFile = serde_yaml::from_str(text).map_err(|e| {
            let message = diagnose::autoscaler_error(text, &e).unwrap_or_else(|| e.to_string());
            ConfigError(format!("{}: {message}", path.display()))
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut names = std::collections::HashSet::new();
        for (i, spec) in config.autoscalers.iter_mut().enumerate() {
            let at = match line_of_name(text, &spec.name) {
                Some(line) => format!(
                    "{}:{line}: autoscalers[{i}] ({})",
                    path.display(),
                    spec.name
                ),
                None => format!("{}: autoscalers[{i}] ({})", path.display(), spec.name),
            };
            spec.validate()
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            if !names.insert(spec.name.clone()) {
                return Err(ConfigError(format!(
                    "{at}: name is used by another autoscaler"
                )));
            }
            for reference in spec.scaling.references_mut() {
                if let PolicyRef::File(path) = reference {
                    *path = base.join(&*path);
                }
            }
            if let TargetSpec::Local(local) = &mut spec.target
                && let Some(dir) = &mut local.working_dir
            {
                *dir = base.join(&*dir);
            }
        }
        for spec in &mut config.lifecycle {
            if let PolicyRef::File(path) = &mut spec.handler {
                *path = base.join(&*path);
            }
        }
        config.state_dir = base.join(&config.state_dir);
        if let Some(dir) = &mut config.sandbox.cache_dir {
            *dir = base.join(&*dir);
        }
        Ok(config)
    }
}
