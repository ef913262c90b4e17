#![no_main]
//! `cargo fuzz run policy_reference --fuzz-dir tests/fuzz tests/fuzz/corpus/policy_reference`
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmscaler::fuzzing::policy_reference(data));
