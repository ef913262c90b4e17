#![no_main]
//! `cargo fuzz run config_file --fuzz-dir tests/fuzz tests/fuzz/corpus/config_file`
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmscaler::fuzzing::config_file(data));
