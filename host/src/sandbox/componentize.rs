//! A core module that carries its component type (what wit-bindgen's C bindings embed) made a
//! component, WASI preview 1 adapted onto preview 2 with the reactor adapter of this
//! wasmtime's release: `wasm-tools component new --adapt`, in-process.

/// Why a core module cannot be made a component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentizeError {
    /// Over the size a component may have.
    #[error("the core module is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit, `sandbox.maxComponentBytes`'s default.
        limit: u64,
    },
    /// wit-component refused it (not a core module, no component type, bad imports).
    #[error("{0:#}")]
    Encode(anyhow::Error),
}

/// The component of `core`, validated.
pub fn component_from_core_module(core: &[u8]) -> Result<Vec<u8>, ComponentizeError> {
    let limit = super::SandboxConfig::default().max_component_bytes;
    if core.len() as u64 > limit {
        return Err(ComponentizeError::TooLarge {
            size: core.len() as u64,
            limit,
        });
    }
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|encoder| {
            encoder.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(ComponentizeError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_importing_what_no_component_type_describes_is_refused() {
        let module = wat::parse_str(r#"(module (import "nowhere" "f" (func)))"#).expect("wat");
        let error = component_from_core_module(&module).expect_err("refused");
        assert!(matches!(error, ComponentizeError::Encode(_)), "{error}");
        assert!(component_from_core_module(b"not wasm").is_err());
    }
}
