//! Entry points of the fuzz targets (`tests/fuzz`, run with `cargo fuzz`) and of the test that
//! replays and mutates their corpora in every test run. Each takes arbitrary bytes, as an
//! outside party would send them, and must neither panic nor hang, whatever they are.
//! Not an API for users.

use std::path::Path;

use crate::config::ConfigFile;
use crate::contract::model::{Context, PodMetrics, Sample};
use crate::policies::PolicyRef;

/// The `wasmscaler run` config file, as YAML text.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ConfigFile::parse(text, Path::new("fuzz/wasmscaler.yaml"));
    }
}

/// The JSON an API client or `eval` user sends: a context, samples, pod metrics; a context
/// that parses is also lowered to the guest's types, as a call would.
pub fn context_json(data: &[u8]) {
    if let Ok(context) = serde_json::from_slice::<Context>(data) {
        let _ = crate::contract::types::Context::from(&context);
    }
    if let Ok(samples) = serde_json::from_slice::<Vec<Sample>>(data) {
        let _: Vec<crate::contract::types::Sample> = samples.iter().map(Into::into).collect();
    }
    let _ = serde_json::from_slice::<Vec<PodMetrics>>(data);
}

/// A policy reference (`file:`, pinned `https://`, `oci://`, `policy:`): what parses prints
/// back to itself.
pub fn policy_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = PolicyRef::parse(text) {
        let printed = reference.to_raw_string();
        assert_eq!(
            PolicyRef::parse(&printed).as_ref(),
            Ok(&reference),
            "{text:?} printed as {printed:?}"
        );
    }
}

/// The `http` capability's allow-list: the lines before the last are patterns, the last a
/// URL a guest asks for, checked with two replica addresses.
pub fn http_allow_list(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let Some(url) = lines.pop() else {
        return;
    };
    let replicas = ["10.0.0.7:8080".to_owned(), "[fd00::7]:9090".to_owned()];
    let list = crate::sandbox::allowlist::UrlAllowList::new(&lines, replicas.into_iter());
    let _ = list.check(&url);
}

/// An SQS message of a lifecycle hook: direct, through SNS, or through EventBridge.
pub fn lifecycle_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::hooks::parse_message(text);
    }
}

/// A fuzz target: arbitrary bytes in, nothing out; it may only fail by panicking.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Target); 5] = [
    ("config_file", config_file),
    ("context_json", context_json),
    ("policy_reference", policy_reference),
    ("http_allow_list", http_allow_list),
    ("lifecycle_message", lifecycle_message),
];
