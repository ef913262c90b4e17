#![no_main]
//! `cargo fuzz run context_json --fuzz-dir tests/fuzz tests/fuzz/corpus/context_json`
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmscaler::fuzzing::context_json(data));
