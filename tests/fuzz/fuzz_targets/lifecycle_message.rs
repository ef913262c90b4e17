#![no_main]
//! `cargo fuzz run lifecycle_message --fuzz-dir tests/fuzz tests/fuzz/corpus/lifecycle_message`
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmscaler::fuzzing::lifecycle_message(data));
