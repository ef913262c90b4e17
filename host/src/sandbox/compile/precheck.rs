//! A cheap structural look at a component before anything compiles it.
//!
//! Compilers spend memory and time superlinearly on a few shapes: control flow nested
//! thousands deep, functions with tens of thousands of locals, single bodies of megabytes, or
//! hundreds of thousands of functions. None of the guests this project ships comes near those
//! (see [`CompileConfig`](super::CompileConfig) for the measured figures), so a component
//! that does is refused here, in linear time and constant memory, with the limit it broke
//! named. The child process's budgets stay the hard bound for everything this misses.

use wasmparser::{Operator, Parser, Payload};

use super::{CompileConfig, CompileLimit};
use crate::sandbox::SandboxError;

/// What the pre-check found, for reports and for measuring the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    /// Core modules in the component, nested ones included.
    pub modules: u32,
    /// Function bodies across every module.
    pub functions: u64,
    /// The deepest nesting of blocks, loops and ifs in any body.
    pub max_nesting_depth: u32,
    /// The most locals any one function declares.
    pub max_locals: u32,
    /// The largest function body, in bytes.
    pub max_function_body_bytes: u32,
}

/// Walks every function body of every core module in `bytes` and checks it against the
/// limits of `config`. Malformed sections are left to the real validator, which names them
/// better; this only refuses shapes that are well-formed but too costly to compile.
pub fn precheck(bytes: &[u8], config: &CompileConfig) -> Result<Shape, SandboxError> {
    let mut shape = Shape::default();
    let mut body_index = 0u64;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            // Leave the message to the validator.
            return Ok(shape);
        };
        match payload {
            Payload::ModuleSection { .. } => shape.modules += 1,
            Payload::CodeSectionStart { count, .. } => {
                shape.functions += u64::from(count);
                if shape.functions > u64::from(config.max_functions) {
                    return Err(CompileLimit::Functions {
                        found: shape.functions,
                        limit: config.max_functions,
                    }
                    .into());
                }
            }
            Payload::CodeSectionEntry(body) => {
                let size = u32::try_from(body.range().len()).unwrap_or(u32::MAX);
                shape.max_function_body_bytes = shape.max_function_body_bytes.max(size);
                if size > config.max_function_body_bytes {
                    return Err(CompileLimit::FunctionBodyBytes {
                        function: body_index,
                        found: size,
                        limit: config.max_function_body_bytes,
                    }
                    .into());
                }
                let locals = count_locals(&body);
                shape.max_locals = shape.max_locals.max(locals);
                if locals > config.max_locals {
                    return Err(CompileLimit::Locals {
                        function: body_index,
                        found: locals,
                        limit: config.max_locals,
                    }
                    .into());
                }
                let depth = nesting_depth(&body, config.max_nesting_depth);
                shape.max_nesting_depth = shape.max_nesting_depth.max(depth);
                if depth > config.max_nesting_depth {
                    return Err(CompileLimit::NestingDepth {
                        function: body_index,
                        limit: config.max_nesting_depth,
                    }
                    .into());
                }
                body_index += 1;
            }
            _ => {}
        }
    }
    if shape.modules == 0 && shape.functions > 0 {
        shape.modules = 1;
    }
    Ok(shape)
}

/// The shape of `bytes` with no limit applied: what `wasmscaler inspect` reports, and how
/// the defaults were measured.
pub fn measure(bytes: &[u8]) -> Shape {
    let unlimited = CompileConfig {
        max_nesting_depth: u32::MAX - 1,
        max_functions: u32::MAX,
        max_function_body_bytes: u32::MAX,
        max_locals: u32::MAX,
        ..CompileConfig::default()
    };
    precheck(bytes, &unlimited).unwrap_or_default()
}

fn count_locals(body: &wasmparser::FunctionBody<'_>) -> u32 {
    let Ok(reader) = body.get_locals_reader() else {
        return 0;
    };
    reader
        .into_iter()
        .filter_map(Result::ok)
        .fold(0u32, |total, (count, _)| total.saturating_add(count))
}

/// The deepest block nesting of one body, reading no further than one past `limit`.
fn nesting_depth(body: &wasmparser::FunctionBody<'_>, limit: u32) -> u32 {
    let Ok(mut reader) = body.get_operators_reader() else {
        return 0;
    };
    let (mut depth, mut deepest) = (0u32, 0u32);
    while !reader.eof() {
        let Ok(op) = reader.read() else {
            break;
        };
        match op {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > limit {
                    break;
                }
            }
            Operator::End => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_with_body(body: &str) -> Vec<u8> {
        let text = format!("(component (core module (func {body})))");
        wat::parse_str(text).expect("valid component text")
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "(block ".repeat(depth), ")".repeat(depth))
    }

    #[test]
    fn measures_nesting_functions_and_locals() {
        let shape = precheck(
            &module_with_body(&format!("(local i32 i64) {}", nested(7))),
            &CompileConfig::default(),
        )
        .expect("within limits");
        assert_eq!(shape.max_nesting_depth, 7);
        assert_eq!(shape.functions, 1);
        assert_eq!(shape.max_locals, 2);
        assert_eq!(shape.modules, 1);
    }

    #[test]
    fn refuses_deep_nesting_naming_the_limit() {
        let config = CompileConfig {
            max_nesting_depth: 10,
            ..CompileConfig::default()
        };
        let err = precheck(&module_with_body(&nested(11)), &config).expect_err("too deep");
        assert_eq!(err.kind(), "compile-limit");
        assert!(err.to_string().contains("maxNestingDepth (10)"), "{err}");
        precheck(&module_with_body(&nested(10)), &config).expect("at the limit is fine");
    }

    #[test]
    fn refuses_too_many_locals_and_functions() {
        let config = CompileConfig {
            max_locals: 3,
            max_functions: 1,
            ..CompileConfig::default()
        };
        let err = precheck(&module_with_body("(local i32 i32 i32 i32)"), &config)
            .expect_err("too many locals");
        assert!(err.to_string().contains("maxLocals (3)"), "{err}");
        let two = wat::parse_str("(component (core module (func) (func)))").expect("valid");
        let err = precheck(&two, &config).expect_err("too many functions");
        assert!(err.to_string().contains("maxFunctions (1)"), "{err}");
    }

    #[test]
    fn refuses_large_bodies() {
        let config = CompileConfig {
            max_function_body_bytes: 16,
            ..CompileConfig::default()
        };
        let body = "(drop (i32.const 1)) ".repeat(20);
        let err = precheck(&module_with_body(&body), &config).expect_err("too large");
        assert!(
            err.to_string().contains("maxFunctionBodyBytes (16)"),
            "{err}"
        );
    }
}
