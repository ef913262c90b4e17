#![no_main]
//! `cargo fuzz run http_allow_list --fuzz-dir tests/fuzz tests/fuzz/corpus/http_allow_list`
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmscaler::fuzzing::http_allow_list(data));
