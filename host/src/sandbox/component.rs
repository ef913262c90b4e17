//! A loaded guest component: its worlds, its capability needs and its pre-instantiation.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::contract::{
    SERVED_VERSIONS, evaluation, interface_name, is_interface, lifecycle, metrics,
};

use super::cache::Digest;
use super::host::HostState;
use super::{Capabilities, Capability, SandboxError};

/// A world of the contract that a component can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `metrics.gather` and `evaluation.evaluate`.
    Policy,
    /// Exports `metrics.gather` only.
    MetricSource,
    /// Exports `evaluation.evaluate` only.
    Evaluator,
    /// Exports `lifecycle.handle`.
    LifecycleHandler,
}

/// What `wasmscaler inspect` reports about a component.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    /// Hex sha256 of the component's bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The contract world it implements.
    pub world: World,
    /// Capabilities it needs granted.
    pub capabilities: Vec<Capability>,
    /// Every import, by name.
    pub imports: Vec<String>,
    /// Every export, by name.
    pub exports: Vec<String>,
}

/// A compiled, validated, pre-linked guest, shared by every autoscaler that uses its digest.
pub struct GuestComponent {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) metrics: Option<metrics::GuestIndices>,
    pub(crate) evaluation: Option<evaluation::GuestIndices>,
    pub(crate) lifecycle: Option<lifecycle::GuestIndices>,
    pub(crate) capabilities: BTreeSet<Capability>,
    imports: Vec<String>,
    exports: Vec<String>,
    pub(crate) shared: Arc<super::CallResources>,
}

impl std::fmt::Debug for GuestComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestComponent")
            .field("sha256", &hex::encode(self.digest))
            .field("world", &self.world())
            .finish()
    }
}

const WASMSCALER_PREFIX: &str = "wasmscaler:policy/";

impl GuestComponent {
    /// Checks what `component` imports and exports and pre-links it.
    pub(crate) fn new(
        engine: &Engine,
        linker: &Linker<HostState>,
        component: Component,
        digest: Digest,
        size: u64,
        shared: Arc<super::CallResources>,
    ) -> Result<Self, SandboxError> {
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let export_names: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();

        let capabilities = required_capabilities(&imports)?;
        let has = |interface: &str| export_names.iter().any(|n| is_interface(n, interface));
        if !has("metrics") && !has("evaluation") && !has("lifecycle") {
            return Err(SandboxError::WorldMismatch {
                expected: format!(
                    "an export of {}, {} or {} (world policy, metric-source, evaluator or lifecycle-handler)",
                    interface_name("metrics"),
                    interface_name("evaluation"),
                    interface_name("lifecycle")
                ),
                found: export_names,
            });
        }
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            let reason = format!("{e:#}");
            SandboxError::UnknownImport {
                import: first_quoted(&reason).unwrap_or("?").to_owned(),
                reason,
            }
        })?;
        let signature_mismatch =
            |interface: &str, e: wasmtime::Error| SandboxError::WorldMismatch {
                expected: format!(
                    "{} with the signatures of the 0.1 contract",
                    interface_name(interface)
                ),
                found: vec![format!("{}: {e:#}", interface_name(interface))],
            };
        let metrics = if has("metrics") {
            Some(metrics::GuestIndices::new(&pre).map_err(|e| signature_mismatch("metrics", e))?)
        } else {
            None
        };
        let evaluation = if has("evaluation") {
            Some(
                evaluation::GuestIndices::new(&pre)
                    .map_err(|e| signature_mismatch("evaluation", e))?,
            )
        } else {
            None
        };
        let lifecycle = if has("lifecycle") {
            Some(
                lifecycle::GuestIndices::new(&pre)
                    .map_err(|e| signature_mismatch("lifecycle", e))?,
            )
        } else {
            None
        };
        Ok(GuestComponent {
            digest,
            size,
            pre,
            metrics,
            evaluation,
            lifecycle,
            capabilities,
            imports,
            exports: export_names,
            shared,
        })
    }

    /// Hex sha256 of the component's bytes: its identity in caches and APIs.
    pub fn sha256(&self) -> String {
        hex::encode(self.digest)
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        match (self.metrics.is_some(), self.evaluation.is_some()) {
            (true, true) => World::Policy,
            (true, false) => World::MetricSource,
            (false, true) => World::Evaluator,
            (false, false) => World::LifecycleHandler,
        }
    }

    /// Refuses the component if it imports a capability `granted` does not include.
    pub(crate) fn check_grants(&self, granted: &Capabilities) -> Result<(), SandboxError> {
        match self.capabilities.iter().find(|c| !granted.grants(**c)) {
            Some(&capability) => Err(SandboxError::not_granted(capability)),
            None => Ok(()),
        }
    }

    /// What `inspect` shows.
    pub fn info(&self) -> ComponentInfo {
        ComponentInfo {
            sha256: self.sha256(),
            size: self.size,
            world: self.world(),
            capabilities: self.capabilities.iter().copied().collect(),
            imports: self.imports.clone(),
            exports: self.exports.clone(),
        }
    }

    /// Fails unless the component exports `metrics` (world `policy` or `metric-source`).
    pub(crate) fn require_world_metrics(&self) -> Result<(), SandboxError> {
        self.require_metrics().map(|_| ())
    }

    /// Fails unless the component exports `evaluation` (world `policy` or `evaluator`).
    pub(crate) fn require_world_evaluation(&self) -> Result<(), SandboxError> {
        self.require_evaluation().map(|_| ())
    }

    pub(crate) fn require_metrics(&self) -> Result<&metrics::GuestIndices, SandboxError> {
        self.metrics.as_ref().ok_or_else(|| self.missing("metrics"))
    }

    pub(crate) fn require_lifecycle(&self) -> Result<&lifecycle::GuestIndices, SandboxError> {
        self.lifecycle
            .as_ref()
            .ok_or_else(|| self.missing("lifecycle"))
    }

    pub(crate) fn require_evaluation(&self) -> Result<&evaluation::GuestIndices, SandboxError> {
        self.evaluation
            .as_ref()
            .ok_or_else(|| self.missing("evaluation"))
    }

    fn missing(&self, interface: &str) -> SandboxError {
        SandboxError::WorldMismatch {
            expected: interface_name(interface),
            found: self.exports.clone(),
        }
    }
}

/// Maps the component's contract imports to capabilities; any other `wasmscaler:` import is
/// unknown to this host.
fn required_capabilities(imports: &[String]) -> Result<BTreeSet<Capability>, SandboxError> {
    let mut needed = BTreeSet::new();
    for import in imports {
        let Some(rest) = import.strip_prefix(WASMSCALER_PREFIX) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !SERVED_VERSIONS.contains(&version) {
            return Err(SandboxError::UnknownImport {
                import: import.clone(),
                reason: format!(
                    "this host serves wasmscaler:policy@{}",
                    SERVED_VERSIONS.join(" and @")
                ),
            });
        }
        // Types carry no authority; `sources` only reports on the call's own run.
        if interface == "types" || interface == "sources" {
            continue;
        }
        match Capability::from_interface(interface) {
            Some(capability) => {
                needed.insert(capability);
            }
            None => {
                return Err(SandboxError::UnknownImport {
                    import: import.clone(),
                    reason: "not an interface of the wasmscaler:policy contract".into(),
                });
            }
        }
    }
    Ok(needed)
}

/// The first `backquoted` name in a wasmtime link error: the import it could not satisfy.
fn first_quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}
