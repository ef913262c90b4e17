//! What the operator lets a namespace's `WasmAutoscaler` ask for.
//!
//! Whoever may create a `WasmAutoscaler` in one namespace chooses its limits, its policy
//! source and its guests' HTTP allow-list, and all of it runs inside the controller. These
//! bounds (the chart's `tenantBounds`, a YAML file given with `--tenant-bounds`) cap each of
//! those choices. A resource outside them is refused before anything is fetched or run, with a
//! message naming the bound it broke.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::engine::{AutoscalerSpec, HumanDuration};
use crate::policies::{PolicyRef, SourceRules};
use crate::sandbox::glob_match;
use crate::sandbox::network::DeniedNetworks;
use crate::sandbox::{Capabilities, Limits};

/// The operator's bounds on every tenant's `WasmAutoscaler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TenantBounds {
    /// Upper bound of each per-call limit a resource may set (`spec.limits.*`). Defaults:
    /// fuel 5×10^8 (ten times the default; a JavaScript guest needs ~3×10^6), timeout 10 s,
    /// memory 256 MiB, and the per-call defaults for the rest.
    pub max_limits: Limits,
    /// Shortest `spec.interval` accepted (the HPA syncs every 15 s).
    pub min_interval: HumanDuration,
    /// Largest `spec.maxConcurrentGathers`.
    pub max_concurrent_gathers: u32,
    /// Largest `capabilities.state.maxBytes` (guest state is kept in the controller's volume).
    pub max_state_bytes: u64,
    /// Largest `capabilities.http.maxBodyBytes`.
    pub max_http_body_bytes: u64,
    /// Longest `capabilities.http.timeoutMs`.
    pub max_http_timeout_ms: u64,
    /// The envelope of guests' HTTP allow-lists: each pattern's `scheme://host[:port]` must
    /// fall inside one of these (`*` matches any run of characters other than `/`; the
    /// tenant's `{replica}` is matched as written). Default: any host over http or https;
    /// the networks below are denied on top of it.
    pub http_allow: Vec<String>,
    /// Host names a pattern may not name (with `*`): the cluster's API server and metadata
    /// services by name. Their addresses are also denied when dialled (`sandbox.httpDenyNetworks`).
    pub http_deny_hosts: Vec<String>,
    /// Which policy sources a resource may name. Default: no `file:` references (a path is
    /// the controller's file system), any OCI registry and HTTPS host, uploads.
    pub sources: SourceRules,
    /// Other bounds for particular namespaces (e.g. a platform team's), each replacing these
    /// whole for resources in that namespace.
    #[schemars(skip)]
    pub namespaces: std::collections::BTreeMap<String, TenantBounds>,
}

impl Default for TenantBounds {
    fn default() -> Self {
        TenantBounds {
            max_limits: Limits {
                fuel: 500_000_000,
                timeout_ms: 10_000,
                memory_bytes: 256 << 20,
                ..Limits::default()
            },
            min_interval: HumanDuration(std::time::Duration::from_secs(5)),
            max_concurrent_gathers: 16,
            max_state_bytes: 1 << 20,
            max_http_body_bytes: 1 << 20,
            max_http_timeout_ms: 10_000,
            http_allow: vec!["http://*".into(), "https://*".into()],
            http_deny_hosts: [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.*",
                "metadata",
                "metadata.google.internal",
                "instance-data",
                "instance-data.*",
            ]
            .map(String::from)
            .to_vec(),
            sources: SourceRules {
                file_dirs: Some(Vec::new()),
                ..SourceRules::default()
            },
            namespaces: std::collections::BTreeMap::new(),
        }
    }
}

/// A resource outside the bounds: which bound, and what the resource asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (operator bound tenantBounds.{bound})")]
pub struct OutOfBounds {
    /// The bound, as its key in the bounds file (`maxLimits.fuel`, `sources`, …).
    pub bound: String,
    /// What was asked for.
    pub message: String,
}

fn out(bound: impl Into<String>, message: impl Into<String>) -> OutOfBounds {
    OutOfBounds {
        bound: bound.into(),
        message: message.into(),
    }
}

impl TenantBounds {
    /// The bounds of resources in `namespace`.
    pub(crate) fn for_namespace(&self, namespace: &str) -> &TenantBounds {
        self.namespaces.get(namespace).unwrap_or(self)
    }

    /// Checks `spec` against every bound of its namespace; `denied` are the networks the
    /// sandbox refuses to dial, so a pattern naming one of their addresses is refused here
    /// already.
    pub fn check(&self, spec: &AutoscalerSpec, denied: &DeniedNetworks) -> Result<(), OutOfBounds> {
        self.for_namespace(&spec.namespace).check_own(spec, denied)
    }

    fn check_own(&self, spec: &AutoscalerSpec, denied: &DeniedNetworks) -> Result<(), OutOfBounds> {
        self.check_limits(&spec.scaling.limits)?;
        if spec.scaling.interval.0 < self.min_interval.0 {
            return Err(out(
                "minInterval",
                format!(
                    "spec.interval {} is shorter than {}",
                    spec.scaling.interval, self.min_interval
                ),
            ));
        }
        if spec.scaling.max_concurrent_gathers > self.max_concurrent_gathers {
            return Err(out(
                "maxConcurrentGathers",
                format!(
                    "spec.maxConcurrentGathers {} is above {}",
                    spec.scaling.max_concurrent_gathers, self.max_concurrent_gathers
                ),
            ));
        }
        // The autoscaler's grants and each listed source's own: a source cannot be granted
        // what the autoscaler could not.
        for capabilities in spec.scaling.grants() {
            self.check_grants(capabilities, denied)?;
        }
        for reference in spec.scaling.references() {
            self.check_source(reference)?;
        }
        Ok(())
    }

    fn check_grants(
        &self,
        capabilities: &Capabilities,
        denied: &DeniedNetworks,
    ) -> Result<(), OutOfBounds> {
        if let Some(state) = &capabilities.state
            && state.max_bytes > self.max_state_bytes
        {
            return Err(out(
                "maxStateBytes",
                format!(
                    "capabilities.state.maxBytes {} is above {}",
                    state.max_bytes, self.max_state_bytes
                ),
            ));
        }
        if let Some(http) = &capabilities.http {
            if http.max_body_bytes > self.max_http_body_bytes {
                return Err(out(
                    "maxHttpBodyBytes",
                    format!(
                        "capabilities.http.maxBodyBytes {} is above {}",
                        http.max_body_bytes, self.max_http_body_bytes
                    ),
                ));
            }
            if http.timeout_ms > self.max_http_timeout_ms {
                return Err(out(
                    "maxHttpTimeoutMs",
                    format!(
                        "capabilities.http.timeoutMs {} is above {}",
                        http.timeout_ms, self.max_http_timeout_ms
                    ),
                ));
            }
            for pattern in &http.allow {
                self.check_pattern(pattern, denied)?;
            }
        }
        Ok(())
    }

    fn check_source(&self, reference: &PolicyRef) -> Result<(), OutOfBounds> {
        self.sources
            .permits(reference)
            .map_err(|refused| out("sources", refused.to_string()))
    }

    /// Every limit at or below its bound. Compared field by field through their JSON form,
    /// so a limit added to [`Limits`] is bounded without a change here.
    fn check_limits(&self, limits: &Limits) -> Result<(), OutOfBounds> {
        let (asked, bound) = match (
            serde_json::to_value(limits),
            serde_json::to_value(&self.max_limits),
        ) {
            (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => (a, b),
            _ => return Err(out("maxLimits", "the limits cannot be compared")),
        };
        for (field, value) in &asked {
            let (Some(value), Some(max)) = (
                value.as_u64(),
                bound.get(field).and_then(serde_json::Value::as_u64),
            ) else {
                continue;
            };
            if value > max {
                return Err(out(
                    format!("maxLimits.{field}"),
                    format!("spec.limits.{field} {value} is above {max}"),
                ));
            }
        }
        Ok(())
    }

    /// A guest URL pattern inside the envelope and naming no denied host or address.
    fn check_pattern(&self, pattern: &str, denied: &DeniedNetworks) -> Result<(), OutOfBounds> {
        let authority_end = pattern
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| pattern[start..].find('/').map(|end| start + end))
            .unwrap_or(pattern.len());
        let origin = &pattern[..authority_end];
        // Inclusion of one glob in another: the envelope must match the pattern's text with
        // the pattern's own `*` read literally. An envelope star can absorb a pattern star
        // (neither crosses `/`), and a literal envelope character can never match one, so
        // a match means every URL the pattern allows, the envelope allows too.
        if !self
            .http_allow
            .iter()
            .any(|envelope| glob_match(envelope.as_bytes(), origin.as_bytes()))
        {
            return Err(out(
                "httpAllow",
                format!(
                    "capabilities.http.allow pattern {pattern:?} is outside the allowed {}",
                    self.http_allow.join(", ")
                ),
            ));
        }
        let host = host_of(origin);
        if let Some(denial) = self
            .http_deny_hosts
            .iter()
            .find(|d| glob_match(d.as_bytes(), host.as_bytes()))
        {
            return Err(out(
                "httpDenyHosts",
                format!(
                    "capabilities.http.allow pattern {pattern:?} names {host}, denied by {denial:?}"
                ),
            ));
        }
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            && let Some(net) = denied.denying(ip)
        {
            return Err(out(
                "httpDenyNetworks",
                format!(
                    "capabilities.http.allow pattern {pattern:?} names {ip}, in the denied {net}"
                ),
            ));
        }
        Ok(())
    }
}

/// The host of `scheme://host[:port]`, without the port (IPv6 in brackets kept whole).
fn host_of(origin: &str) -> &str {
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TargetSpec;
    use crate::sandbox::network::default_denied_networks;
    use crate::sandbox::{HttpGrant, StateGrant};
    use crate::targets::kubernetes::KubernetesRef;

    fn spec() -> AutoscalerSpec {
        let target = TargetSpec::Kubernetes(KubernetesRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: Some("team-a".into()),
        });
        let mut spec = AutoscalerSpec::new("web", target, "", 10);
        spec.scaling.policy = Some(PolicyRef::parse("oci://registry.example/acme/cpu:v1").unwrap());
        spec
    }

    fn check(spec: &AutoscalerSpec) -> Result<(), OutOfBounds> {
        TenantBounds::default().check(spec, &DeniedNetworks::new(default_denied_networks()))
    }

    fn bound_of(spec: &AutoscalerSpec) -> String {
        check(spec).expect_err("out of bounds").bound
    }

    #[test]
    fn the_default_spec_is_within_the_default_bounds() {
        assert_eq!(check(&spec()), Ok(()));
    }

    #[test]
    fn each_limit_is_bounded_by_name() {
        let mut s = spec();
        s.scaling.limits.fuel = u64::MAX;
        assert_eq!(bound_of(&s), "maxLimits.fuel");
        let mut s = spec();
        s.scaling.limits.timeout_ms = 3_600_000;
        assert_eq!(bound_of(&s), "maxLimits.timeoutMs");
        let mut s = spec();
        s.scaling.limits.memory_bytes = 4 << 30;
        assert_eq!(bound_of(&s), "maxLimits.memoryBytes");
        let mut s = spec();
        s.scaling.limits.max_message_bytes = 1 << 20;
        assert_eq!(bound_of(&s), "maxLimits.maxMessageBytes");
        let message = check(&s).unwrap_err().to_string();
        assert!(
            message.contains("tenantBounds.maxLimits.maxMessageBytes"),
            "{message}"
        );
    }

    #[test]
    fn interval_gathers_and_state_are_bounded() {
        let mut s = spec();
        s.scaling.interval = HumanDuration::parse("1ms").unwrap();
        assert_eq!(bound_of(&s), "minInterval");
        let mut s = spec();
        s.scaling.max_concurrent_gathers = 1000;
        assert_eq!(bound_of(&s), "maxConcurrentGathers");
        let mut s = spec();
        s.scaling.capabilities.state = Some(StateGrant { max_bytes: 1 << 30 });
        assert_eq!(bound_of(&s), "maxStateBytes");
    }

    #[test]
    fn http_grants_are_bounded() {
        let mut s = spec();
        s.scaling.capabilities.http = Some(HttpGrant {
            max_body_bytes: 1 << 30,
            ..HttpGrant::allow(["http://{replica}/load"])
        });
        assert_eq!(bound_of(&s), "maxHttpBodyBytes");
        s.scaling.capabilities.http = Some(HttpGrant {
            timeout_ms: 600_000,
            ..HttpGrant::allow(["http://{replica}/load"])
        });
        assert_eq!(bound_of(&s), "maxHttpTimeoutMs");
    }

    #[test]
    fn url_hosts_can_be_restricted() {
        let bounds = TenantBounds {
            sources: SourceRules {
                url_hosts: vec!["*.example.com".into()],
                ..SourceRules::default()
            },
            ..TenantBounds::default()
        };
        let denied = DeniedNetworks::new(Vec::new());
        let digest = "a".repeat(64);
        let mut s = spec();
        s.scaling.policy = Some(
            PolicyRef::parse(&format!("https://cdn.example.com/p.wasm@sha256:{digest}")).unwrap(),
        );
        assert_eq!(bounds.check(&s, &denied), Ok(()));
        s.scaling.policy =
            Some(PolicyRef::parse(&format!("https://evil.test/p.wasm@sha256:{digest}")).unwrap());
        let error = bounds.check(&s, &denied).unwrap_err();
        assert!(error.message.contains("sources.urlHosts"), "{error}");
    }

    #[test]
    fn file_references_need_an_allowed_directory() {
        let mut s = spec();
        s.scaling.policy = Some(PolicyRef::File("/dev/zero".into()));
        assert_eq!(bound_of(&s), "sources");
        let bounds = TenantBounds {
            sources: SourceRules {
                file_dirs: Some(vec!["/policies".into()]),
                ..SourceRules::default()
            },
            ..TenantBounds::default()
        };
        let denied = DeniedNetworks::new(Vec::new());
        s.scaling.policy = Some(PolicyRef::File("/policies/cpu.wasm".into()));
        assert_eq!(bounds.check(&s, &denied), Ok(()));
        s.scaling.policy = Some(PolicyRef::File("/policies/../dev/zero".into()));
        assert_eq!(bounds.check(&s, &denied).unwrap_err().bound, "sources");
    }

    #[test]
    fn registries_and_uploads_can_be_restricted() {
        let bounds = TenantBounds {
            sources: SourceRules {
                oci_registries: vec!["registry.internal:5000".into()],
                uploads: false,
                ..SourceRules::default()
            },
            ..TenantBounds::default()
        };
        let denied = DeniedNetworks::new(Vec::new());
        let mut s = spec();
        assert_eq!(bounds.check(&s, &denied).unwrap_err().bound, "sources");
        s.scaling.policy =
            Some(PolicyRef::parse("oci://registry.internal:5000/acme/cpu:v1").unwrap());
        assert_eq!(bounds.check(&s, &denied), Ok(()));
        s.scaling.policy = Some(PolicyRef::parse("policy:cpu").unwrap());
        let error = bounds.check(&s, &denied).unwrap_err();
        assert!(error.message.contains("sources.uploads"), "{error}");
    }

    #[test]
    fn a_namespace_can_have_bounds_of_its_own() {
        let platform = TenantBounds {
            sources: SourceRules {
                file_dirs: Some(vec!["/policies".into()]),
                ..SourceRules::default()
            },
            ..TenantBounds::default()
        };
        let bounds = TenantBounds {
            namespaces: [("platform".to_string(), platform)].into(),
            ..TenantBounds::default()
        };
        let denied = DeniedNetworks::new(Vec::new());
        let mut s = spec();
        s.scaling.policy = Some(PolicyRef::File("/policies/cpu.wasm".into()));
        s.namespace = "team-a".into();
        assert_eq!(bounds.check(&s, &denied).unwrap_err().bound, "sources");
        s.namespace = "platform".into();
        assert_eq!(bounds.check(&s, &denied), Ok(()));
        let yaml = "namespaces:\n  platform:\n    sources: {fileDirs: [/policies]}\n";
        let parsed: TenantBounds = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(
            parsed.for_namespace("platform").sources.file_dirs,
            Some(vec!["/policies".into()])
        );
    }

    #[test]
    fn the_readme_example_parses() {
        let yaml = r#"
maxLimits: { fuel: 200000000, timeoutMs: 5000 }
minInterval: 15s
httpAllow: ["http://{replica}:*", "http://*.svc.cluster.local:*"]
sources: { fileDirs: [], ociRegistries: ["registry.internal:5000"], urlHosts: [], uploads: true }
namespaces:
  platform: { sources: { fileDirs: [/policies], ociRegistries: ["*"] } }
"#;
        let bounds: TenantBounds = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(bounds.max_limits.fuel, 200_000_000);
        assert_eq!(bounds.min_interval, HumanDuration::parse("15s").unwrap());
        let platform = bounds.for_namespace("platform");
        assert_eq!(platform.sources.file_dirs, Some(vec!["/policies".into()]));
        assert_eq!(
            bounds.for_namespace("team-a").sources.url_hosts,
            Vec::<String>::new()
        );
    }

    #[test]
    fn http_patterns_must_fall_inside_the_envelope() {
        let bounds = TenantBounds {
            http_allow: vec!["http://{replica}:*".into(), "https://*.example.com".into()],
            ..TenantBounds::default()
        };
        let denied = DeniedNetworks::new(default_denied_networks());
        let with = |patterns: &[&str]| {
            let mut s = spec();
            s.scaling.capabilities.http = Some(HttpGrant::allow(patterns.iter().copied()));
            bounds.check(&s, &denied)
        };
        assert_eq!(
            with(&["http://{replica}:8080/load", "https://api.example.com/*"]),
            Ok(())
        );
        assert_eq!(with(&["https://*.example.com/x"]), Ok(()));
        for outside in [
            "http://*/*",
            "https://*/x",
            "https://evil.com/.example.com",
            "http://{replica}/x",
        ] {
            assert_eq!(
                with(&[outside]).unwrap_err().bound,
                "httpAllow",
                "{outside}"
            );
        }
    }

    #[test]
    fn metadata_and_cluster_api_are_refused_by_default() {
        let with = |pattern: &str| {
            let mut s = spec();
            s.scaling.capabilities.http = Some(HttpGrant::allow([pattern]));
            check(&s)
        };
        assert_eq!(
            with("http://169.254.169.254/latest/*").unwrap_err().bound,
            "httpDenyNetworks"
        );
        assert_eq!(
            with("http://[fd00:ec2::254]/latest/*").unwrap_err().bound,
            "httpDenyNetworks"
        );
        assert_eq!(
            with("https://kubernetes.default.svc/api/*")
                .unwrap_err()
                .bound,
            "httpDenyHosts"
        );
        assert_eq!(
            with("https://kubernetes.default.svc.cluster.local:443/*")
                .unwrap_err()
                .bound,
            "httpDenyHosts"
        );
        assert_eq!(with("http://web.team-a.svc:8080/metrics"), Ok(()));
    }
}
