//! Several metric sources per autoscaler, each isolated: `metrics:` as a list.
//!
//! Each source gathers in its own sandbox call (its own fuel, deadline, memory and grants), so
//! one that loops, traps or cannot reach its server fails alone. What a failure does is the
//! source's `onFailure`: fail the run (the default, as a single source does), go on without
//! it, or go on with its last good samples for up to `holdFor`. The evaluator sees every
//! sample tagged with its source (the label `source`) and, through the `sources` import, which
//! sources failed and what was done instead. This module is the spec and the pure combining
//! step; the autoscaler makes the calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::SpecError;
use crate::contract::model::{FailureHandling, GuestError, Sample, SourceStatus};
use crate::duration::HumanDuration;
use crate::policies::PolicyRef;
use crate::sandbox::{Capabilities, SandboxError};

/// The label every sample of a listed source carries: the source's name. The host sets it,
/// over any value the guest gave.
pub const SOURCE_LABEL: &str = "source";
/// The label a held sample carries (`true`).
pub const HELD_LABEL: &str = "held";
/// The most sources one autoscaler may list: each is a sandbox call per run.
pub const MAX_SOURCES: usize = 16;

/// The autoscaler's metric sources: one `metric-source` component, or a list of named ones.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsSpec {
    /// `metrics: REF`: one source; its failure fails the run.
    One(PolicyRef),
    /// `metrics: [{name, component, ...}, ...]`: isolated sources.
    Sources(Vec<MetricSource>),
}

/// One entry of `metrics:` as a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSource {
    /// Names the source in sample labels, statuses and errors: lower-case letters, digits and
    /// `-`, at most 63 characters, unique in the list.
    pub name: String,
    /// A `metric-source` (or `policy`) component, in any policy reference form.
    pub component: PolicyRef,
    /// Configuration for this source only, laid over the autoscaler's `config` (its keys win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Capabilities for this source only, instead of the autoscaler's (which the evaluator
    /// keeps): e.g. the one URL this source may fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// What a failure of this source does to the run (default `fail`).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// With `onFailure: hold`, how old the held samples may be before a failure counts as the
    /// run's (default: three intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<HumanDuration>,
}

/// What a failed source does to the run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// The run fails, as with a single source: the autoscaler holds, then its fallback applies.
    #[default]
    Fail,
    /// The run goes on without this source's samples (KEDA's requested `ignoreFailure`).
    Ignore,
    /// The run goes on with this source's last good samples, up to `holdFor` old; older or
    /// none, the run fails.
    Hold,
}

impl MetricsSpec {
    /// Every component reference it names.
    pub fn references(&self) -> Vec<&PolicyRef> {
        match self {
            MetricsSpec::One(reference) => vec![reference],
            MetricsSpec::Sources(sources) => sources.iter().map(|s| &s.component).collect(),
        }
    }

    /// Every component reference it names, to rewrite (relative paths).
    pub fn references_mut(&mut self) -> Vec<&mut PolicyRef> {
        match self {
            MetricsSpec::One(reference) => vec![reference],
            MetricsSpec::Sources(sources) => sources.iter_mut().map(|s| &mut s.component).collect(),
        }
    }

    /// The listed sources; empty for `metrics: REF`.
    pub fn sources(&self) -> &[MetricSource] {
        match self {
            MetricsSpec::One(_) => &[],
            MetricsSpec::Sources(sources) => sources,
        }
    }

    /// Checks the list: size, names, and `holdFor` only where it applies.
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        let sources = self.sources();
        if matches!(self, MetricsSpec::Sources(_)) && sources.is_empty() {
            return Err(SpecError::at("metrics", "metrics: the list is empty"));
        }
        if sources.len() > MAX_SOURCES {
            return Err(SpecError::at(
                "metrics",
                format!(
                    "metrics: {} sources listed, at most {MAX_SOURCES}",
                    sources.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, source) in sources.iter().enumerate() {
            let at = format!("metrics[{i}].name");
            let name = &source.name;
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !valid {
                return Err(SpecError::at(
                    at,
                    format!(
                        "metrics[{i}].name {name:?} must be 1-63 lower-case letters, digits and '-', not starting or ending with '-'"
                    ),
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(SpecError::at(
                    at,
                    format!("metrics[{i}].name {name:?} is used by another source"),
                ));
            }
            if source.hold_for.is_some() && source.on_failure != OnFailure::Hold {
                return Err(SpecError::at(
                    format!("metrics[{i}].holdFor"),
                    format!("metrics[{i}].holdFor applies only with onFailure: hold"),
                ));
            }
        }
        Ok(())
    }
}

/// A string is one reference; a list is sources. Anything else is named as wrong.
impl<'de> Deserialize<'de> for MetricsSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MetricsSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a component reference, or a list of sources ({name, component, ...})")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MetricsSpec, E> {
                PolicyRef::parse(text)
                    .map(MetricsSpec::One)
                    .map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<MetricsSpec, A::Error> {
                Vec::<MetricSource>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(MetricsSpec::Sources)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for MetricsSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MetricsSpec::One(reference) => reference.serialize(s),
            MetricsSpec::Sources(sources) => sources.serialize(s),
        }
    }
}

/// A field that is a string or a list cannot have a structural schema's `type`, so the
/// resource leaves it to the controller (`x-kubernetes-preserve-unknown-fields`), which
/// checks it as the config file does and names what is wrong in the resource's conditions.
impl JsonSchema for MetricsSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MetricsSpec".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Generated so the list's entries are documented in the reference beside it.
        let _ = generator.subschema_for::<MetricSource>();
        schemars::json_schema!({
            "description": "A metric-source component reference (file:PATH, https://URL@sha256:HEX, oci://REGISTRY/REPO[:TAG][@sha256:HEX] or policy:NAME[@sha256:HEX]), or a list of isolated sources, each {name, component, config, capabilities, onFailure: fail|ignore|hold, holdFor} (see MetricSource).",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// What one source's call gave this run.
pub(crate) enum Gathered {
    /// Its samples.
    Samples(Vec<Sample>),
    /// Why it failed.
    Failed(SandboxError),
}

/// What the sources of one run came to: the samples to evaluate and each source's status.
#[derive(Debug)]
pub(crate) struct Combined {
    pub(crate) samples: Vec<Sample>,
    pub(crate) statuses: Vec<SourceStatus>,
}

/// Why a multi-source run cannot be evaluated.
#[derive(Debug)]
pub(crate) enum SourcesFailure {
    /// A source with `onFailure: fail`, or `hold` with nothing fresh enough to hold, failed.
    Source {
        /// Its name.
        name: String,
        /// Its error.
        error: SandboxError,
        /// Why holding did not apply, for a `hold` source.
        not_held: Option<String>,
    },
    /// The sandbox is overloaded: the run is retried, no source is blamed.
    Busy(SandboxError),
    /// Every source failed and none could be held: nothing to evaluate.
    AllFailed(Vec<String>),
}

/// Per source, across runs: the last good samples (for `hold`) and the failure streak. In
/// memory only: after a restart a `hold` source has nothing to hold until it succeeds once.
#[derive(Default)]
pub(crate) struct SourceMemory {
    inner: Mutex<HashMap<String, Remembered>>,
}

#[derive(Default, Clone)]
struct Remembered {
    last_good: Option<(i64, Vec<Sample>)>,
    failures: u32,
}

impl SourceMemory {
    /// Combines the sources' results of a run at `now` (ms), in the list's order. Remembers
    /// the good samples and the failure streaks only for runs that act (`remember`), so a
    /// dry run through the API never changes what a scheduled run will hold.
    pub(crate) fn combine(
        &self,
        sources: &[MetricSource],
        results: Vec<Gathered>,
        now: i64,
        default_hold: std::time::Duration,
        remember: bool,
    ) -> Result<Combined, SourcesFailure> {
        let mut kept = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A preview works on a copy: what it sees is never remembered.
        let mut copy;
        let memory = if remember {
            &mut *kept
        } else {
            copy = kept.clone();
            &mut copy
        };
        let mut samples = Vec::new();
        let mut statuses = Vec::with_capacity(sources.len());
        let mut failed = Vec::new();
        for (source, result) in sources.iter().zip(results) {
            let remembered = memory.entry(source.name.clone()).or_default();
            match result {
                Gathered::Samples(mut got) => {
                    for sample in &mut got {
                        sample
                            .labels
                            .insert(SOURCE_LABEL.to_owned(), source.name.clone());
                    }
                    remembered.failures = 0;
                    remembered.last_good = Some((now, got.clone()));
                    statuses.push(SourceStatus {
                        name: source.name.clone(),
                        samples: u32::try_from(got.len()).unwrap_or(u32::MAX),
                        failure: None,
                        handling: None,
                        consecutive_failures: 0,
                    });
                    samples.extend(got);
                }
                Gathered::Failed(error) => {
                    if matches!(error, SandboxError::Busy { .. }) {
                        return Err(SourcesFailure::Busy(error));
                    }
                    remembered.failures = remembered.failures.saturating_add(1);
                    let failure = Some(guest_error(&error));
                    let (handling, held) = match source.on_failure {
                        OnFailure::Fail => {
                            return Err(SourcesFailure::Source {
                                name: source.name.clone(),
                                error,
                                not_held: None,
                            });
                        }
                        OnFailure::Ignore => (FailureHandling::Ignored, Vec::new()),
                        OnFailure::Hold => {
                            let max_age = source.hold_for.map_or(default_hold, |d| d.0);
                            let max_age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
                            match &remembered.last_good {
                                Some((at, held)) if now.saturating_sub(*at) <= max_age => {
                                    let mut held = held.clone();
                                    for sample in &mut held {
                                        sample.labels.insert(HELD_LABEL.to_owned(), "true".into());
                                    }
                                    (FailureHandling::Held, held)
                                }
                                last => {
                                    let not_held = match last {
                                        Some((at, _)) => format!(
                                            "its last good samples are {} ms old, over holdFor ({max_age} ms)",
                                            now.saturating_sub(*at)
                                        ),
                                        None => "it has no good samples to hold yet".to_owned(),
                                    };
                                    return Err(SourcesFailure::Source {
                                        name: source.name.clone(),
                                        error,
                                        not_held: Some(not_held),
                                    });
                                }
                            }
                        }
                    };
                    if held.is_empty() {
                        failed.push(source.name.clone());
                    }
                    statuses.push(SourceStatus {
                        name: source.name.clone(),
                        samples: u32::try_from(held.len()).unwrap_or(u32::MAX),
                        failure,
                        handling: Some(handling),
                        consecutive_failures: remembered.failures,
                    });
                    samples.extend(held);
                }
            }
        }
        if failed.len() == sources.len() {
            return Err(SourcesFailure::AllFailed(failed));
        }
        Ok(Combined { samples, statuses })
    }
}

/// A source's failure as the evaluator sees it: the guest's own error, or the sandbox's
/// summary (a trap, the fuel or the deadline) as `other`.
fn guest_error(error: &SandboxError) -> GuestError {
    match error {
        SandboxError::Guest(e) => e.clone(),
        other => GuestError::Other(other.summary()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, on_failure: OnFailure) -> MetricSource {
        MetricSource {
            name: name.into(),
            component: PolicyRef::File("s.wasm".into()),
            config: BTreeMap::new(),
            capabilities: None,
            on_failure,
            hold_for: None,
        }
    }

    fn sample(name: &str, value: f64) -> Sample {
        Sample {
            name: name.into(),
            value,
            replica: None,
            labels: BTreeMap::new(),
        }
    }

    fn failed(message: &str) -> Gathered {
        Gathered::Failed(SandboxError::Guest(GuestError::Unavailable(message.into())))
    }

    const HOLD: std::time::Duration = std::time::Duration::from_secs(45);

    #[test]
    fn samples_are_tagged_with_their_source_over_the_guests_own_label() {
        let memory = SourceMemory::default();
        let mut forged = sample("rps", 3.0);
        forged.labels.insert("source".into(), "other".into());
        let combined = memory
            .combine(
                &[source("a", OnFailure::Fail), source("b", OnFailure::Fail)],
                vec![
                    Gathered::Samples(vec![forged]),
                    Gathered::Samples(vec![sample("queue", 7.0)]),
                ],
                1_000,
                HOLD,
                true,
            )
            .expect("combined");
        let tags: Vec<_> = combined
            .samples
            .iter()
            .map(|s| (s.name.as_str(), s.labels["source"].as_str()))
            .collect();
        assert_eq!(tags, [("rps", "a"), ("queue", "b")]);
        assert!(combined.statuses.iter().all(|s| s.failure.is_none()));
    }

    #[test]
    fn an_ignored_failure_leaves_the_others_flowing_and_is_reported() {
        let memory = SourceMemory::default();
        let sources = [source("a", OnFailure::Ignore), source("b", OnFailure::Fail)];
        for run in 1..=2 {
            let combined = memory
                .combine(
                    &sources,
                    vec![failed("down"), Gathered::Samples(vec![sample("q", 1.0)])],
                    run * 1_000,
                    HOLD,
                    true,
                )
                .expect("combined");
            assert_eq!(combined.samples.len(), 1);
            assert_eq!(
                combined.statuses[0].handling,
                Some(FailureHandling::Ignored)
            );
            assert_eq!(
                combined.statuses[0].failure,
                Some(GuestError::Unavailable("down".into()))
            );
            assert_eq!(combined.statuses[0].consecutive_failures, run as u32);
            assert_eq!(combined.statuses[1].consecutive_failures, 0);
        }
    }

    #[test]
    fn a_failing_source_set_to_fail_fails_the_run_naming_it() {
        let memory = SourceMemory::default();
        let err = memory
            .combine(
                &[source("a", OnFailure::Ignore), source("b", OnFailure::Fail)],
                vec![Gathered::Samples(vec![sample("q", 1.0)]), failed("down")],
                1_000,
                HOLD,
                true,
            )
            .expect_err("fails");
        assert!(matches!(err, SourcesFailure::Source { name, not_held: None, .. } if name == "b"));
    }

    #[test]
    fn hold_reuses_the_last_good_samples_until_they_are_too_old() {
        let memory = SourceMemory::default();
        let sources = [source("a", OnFailure::Hold), source("b", OnFailure::Fail)];
        let ok = |v| Gathered::Samples(vec![sample("q", v)]);
        memory
            .combine(&sources, vec![ok(5.0), ok(1.0)], 0, HOLD, true)
            .expect("first run");
        let held = memory
            .combine(&sources, vec![failed("down"), ok(2.0)], 30_000, HOLD, true)
            .expect("held");
        assert_eq!(held.statuses[0].handling, Some(FailureHandling::Held));
        assert_eq!(held.samples[0].value, 5.0);
        assert_eq!(held.samples[0].labels["held"], "true");
        assert_eq!(held.samples[0].labels["source"], "a");
        let err = memory
            .combine(&sources, vec![failed("down"), ok(2.0)], 46_000, HOLD, true)
            .expect_err("too old");
        assert!(
            matches!(&err, SourcesFailure::Source { not_held: Some(why), .. } if why.contains("over holdFor")),
            "{err:?}"
        );
    }

    #[test]
    fn hold_with_nothing_held_yet_fails_the_run() {
        let memory = SourceMemory::default();
        let err = memory
            .combine(
                &[source("a", OnFailure::Hold), source("b", OnFailure::Ignore)],
                vec![failed("down"), Gathered::Samples(vec![])],
                0,
                HOLD,
                true,
            )
            .expect_err("nothing to hold");
        assert!(
            matches!(&err, SourcesFailure::Source { not_held: Some(why), .. } if why.contains("no good samples"))
        );
    }

    #[test]
    fn every_source_failing_fails_the_run_even_when_ignored() {
        let memory = SourceMemory::default();
        let err = memory
            .combine(
                &[
                    source("a", OnFailure::Ignore),
                    source("b", OnFailure::Ignore),
                ],
                vec![failed("x"), failed("y")],
                0,
                HOLD,
                true,
            )
            .expect_err("all failed");
        assert!(matches!(err, SourcesFailure::AllFailed(names) if names == ["a", "b"]));
    }

    #[test]
    fn a_preview_does_not_change_what_a_later_run_holds() {
        let memory = SourceMemory::default();
        let sources = [source("a", OnFailure::Hold), source("b", OnFailure::Fail)];
        let ok = |v| Gathered::Samples(vec![sample("q", v)]);
        memory
            .combine(&sources, vec![ok(5.0), ok(1.0)], 0, HOLD, true)
            .expect("run");
        memory
            .combine(&sources, vec![ok(9.0), ok(1.0)], 1_000, HOLD, false)
            .expect("preview");
        let held = memory
            .combine(&sources, vec![failed("down"), ok(1.0)], 2_000, HOLD, true)
            .expect("held");
        assert_eq!(held.samples[0].value, 5.0, "the preview's 9 was not kept");
        assert_eq!(held.statuses[0].consecutive_failures, 1);
    }

    #[test]
    fn the_list_is_checked_naming_the_entry() {
        let list = |sources: Vec<MetricSource>| MetricsSpec::Sources(sources).validate();
        assert!(list(vec![source("a", OnFailure::Fail)]).is_ok());
        let err = list(vec![]).expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
        let err = list(vec![source("Bad_Name", OnFailure::Fail)]).expect_err("name");
        assert!(err.to_string().contains("metrics[0].name"), "{err}");
        let err = list(vec![
            source("a", OnFailure::Fail),
            source("a", OnFailure::Fail),
        ])
        .expect_err("dup");
        assert!(err.to_string().contains("metrics[1].name"), "{err}");
        let mut held = source("a", OnFailure::Ignore);
        held.hold_for = Some(HumanDuration(std::time::Duration::from_secs(5)));
        let err = list(vec![held]).expect_err("holdFor");
        assert!(err.to_string().contains("metrics[0].holdFor"), "{err}");
        let many = (0..=MAX_SOURCES)
            .map(|i| source(&format!("s{i}"), OnFailure::Fail))
            .collect();
        assert!(list(many).is_err());
    }

    #[test]
    fn a_string_is_one_source_and_a_list_is_several() {
        let one: MetricsSpec = serde_json::from_str(r#""file:m.wasm""#).expect("one");
        assert!(matches!(one, MetricsSpec::One(_)));
        let many: MetricsSpec = serde_json::from_str(
            r#"[{"name": "a", "component": "file:a.wasm", "onFailure": "hold", "holdFor": "1m"}]"#,
        )
        .expect("list");
        assert_eq!(many.sources()[0].on_failure, OnFailure::Hold);
        let back: MetricsSpec =
            serde_json::from_value(serde_json::to_value(&many).expect("json")).expect("again");
        assert_eq!(back, many);
        let err = serde_json::from_str::<MetricsSpec>(
            r#"[{"name": "a", "component": "file:a.wasm", "onFailur": "hold"}]"#,
        )
        .expect_err("typo");
        assert!(err.to_string().contains("onFailur"), "{err}");
        assert!(serde_json::from_str::<MetricsSpec>("7").is_err());
    }
}
