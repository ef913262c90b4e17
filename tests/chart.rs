//! The Helm chart, linted and rendered by the real Helm library (`support::chart::render`):
//! it lints clean, renders every kind it promises (and leaves out what its values turn off),
//! every value a template uses exists in values.yaml, the chart's CRD is the one the code
//! generates, and the rendered pod is hardened. (Its RBAC is checked against the
//! controller's real requests in tests/controller.rs.)

use std::collections::BTreeSet;

use serde_json::json;
use wasmscaler_tests::chart::{Rendered, chart_dir, rbac_rules, render};

fn values() -> anyhow::Result<serde_yaml::Value> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(
        chart_dir().join("values.yaml"),
    )?)?)
}

/// Every `.Values.a.b` path used in the templates, with the file using it.
fn values_used() -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(chart_dir().join("templates"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path)?;
        for (at, _) in text.match_indices(".Values.") {
            let rest = &text[at + ".Values.".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(rest.len());
            used.insert((name.clone(), rest[..end].trim_end_matches('.').to_owned()));
        }
    }
    Ok(used)
}

fn kinds(rendered: &Rendered) -> BTreeSet<String> {
    rendered
        .templates
        .iter()
        .flat_map(|(_, docs)| docs)
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect()
}

/// No lint finding above info (`helm lint --strict`).
fn assert_lints_clean(rendered: &Rendered, what: &str) {
    let findings: Vec<_> = rendered.lint.iter().filter(|(s, _, _)| *s >= 2).collect();
    assert!(findings.is_empty(), "{what}: helm lint: {findings:?}");
}

#[test]
fn the_chart_lints_clean_and_renders_what_its_values_ask_for() -> anyhow::Result<()> {
    let defaults = render(json!({}))?;
    assert_lints_clean(&defaults, "defaults");
    let kinds_by_default = kinds(&defaults);
    for expected in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "PersistentVolumeClaim",
        "Secret",
        "ConfigMap",
    ] {
        assert!(
            kinds_by_default.contains(expected),
            "no {expected} by default: {kinds_by_default:?}"
        );
    }
    for optional in ["ServiceMonitor", "NetworkPolicy"] {
        assert!(
            !kinds_by_default.contains(optional),
            "{optional} rendered while disabled"
        );
    }
    for (_, docs) in &defaults.templates {
        for doc in docs {
            assert!(doc["apiVersion"].as_str().is_some(), "{doc:?}");
            assert!(doc["metadata"]["name"].as_str().is_some(), "{doc:?}");
        }
    }
    assert!(defaults.notes.contains("wasmscaler"), "{}", defaults.notes);

    let custom = render(json!({
        "replicaCount": 3,
        "serviceMonitor": { "enabled": true },
        "networkPolicy": { "enabled": true },
        "persistence": { "enabled": false },
        "api": { "existingSecret": "my-token" },
    }))?;
    assert_lints_clean(&custom, "custom values");
    let kinds = kinds(&custom);
    for present in ["ServiceMonitor", "NetworkPolicy"] {
        assert!(kinds.contains(present), "no {present}: {kinds:?}");
    }
    for absent in ["PersistentVolumeClaim", "Secret"] {
        assert!(!kinds.contains(absent), "{absent} rendered: {kinds:?}");
    }
    let deployment = &custom.file("deployment.yaml")?[0];
    assert_eq!(deployment["spec"]["replicas"], 3);
    let volumes = serde_json::to_string(&deployment["spec"]["template"]["spec"]["volumes"])?;
    assert!(!volumes.contains("persistentVolumeClaim"), "{volumes}");
    // The token comes from the named Secret.
    assert!(
        serde_json::to_string(deployment)?.contains("\"my-token\""),
        "{deployment:?}"
    );

    // A value of the wrong shape is Helm's error, named.
    let Err(error) = render(json!({ "rbac": { "scaleTargets": "apps" } })) else {
        panic!("a string for a list rendered");
    };
    assert!(error.to_string().contains("rbac.yaml"), "{error}");
    Ok(())
}

#[test]
fn every_value_a_template_uses_is_in_values_yaml() -> anyhow::Result<()> {
    let values = values()?;
    let used = values_used()?;
    assert!(used.len() > 20, "suspiciously few values used: {used:?}");
    for (file, path) in used {
        let mut node = &values;
        for key in path.split('.') {
            node = node.get(key).unwrap_or_else(|| {
                panic!("templates/{file} uses .Values.{path}, which values.yaml lacks")
            });
        }
    }
    Ok(())
}

#[test]
fn the_chart_crd_is_the_one_the_code_generates() -> anyhow::Result<()> {
    let chart = std::fs::read_to_string(chart_dir().join("crds").join("wasmautoscalers.yaml"))?;
    let code = wasmscaler::controller::crd::crd_yaml()?;
    assert!(
        chart == code,
        "charts/wasmscaler/crds/wasmautoscalers.yaml differs from `wasmscaler crd`; regenerate it with\n  cargo run -p wasmscaler -- crd > charts/wasmscaler/crds/wasmautoscalers.yaml"
    );
    let crd: serde_yaml::Value = serde_yaml::from_str(&chart)?;
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "wsa");
    let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_sequence()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        columns,
        ["Target", "Min", "Max", "Current", "Desired", "Age", "Ready"]
    );
    assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_mapping());
    Ok(())
}

#[test]
fn the_pod_is_hardened_probed_and_leader_elected() -> anyhow::Result<()> {
    let values = values()?;
    assert_eq!(values["replicaCount"], 2);
    assert_eq!(values["leaderElection"]["enabled"], true);
    let pod = &values["podSecurityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
    let container = &values["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"][0], "ALL");
    assert!(values["resources"]["requests"]["cpu"].is_string());
    assert!(values["resources"]["limits"]["memory"].is_string());

    let rendered = render(json!({}))?;
    let deployment = &rendered.file("deployment.yaml")?[0];
    let pod_spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod_spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(
        container["resources"]["limits"]["memory"],
        values["resources"]["limits"]["memory"]
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(args.first(), Some(&"controller"));
    // Every flag the chart passes is one the binary accepts.
    let mut cli = <wasmscaler::cli::Cli as clap::CommandFactory>::command();
    // Built, so global flags (--log-json) are propagated to the subcommand.
    cli.build();
    let help = cli
        .find_subcommand_mut("controller")
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default();
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(
            help.contains(flag),
            "the chart passes {flag}, unknown to `wasmscaler controller`"
        );
    }
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .map(|m| m.iter().filter_map(|v| v["mountPath"].as_str()).collect())
        .unwrap_or_default();
    for writable in ["/var/lib/wasmscaler", "/var/cache/wasmscaler", "/tmp"] {
        assert!(
            mounts.contains(&writable),
            "{writable} is not mounted (read-only root)"
        );
    }
    Ok(())
}

#[test]
fn the_example_resources_are_valid_wasm_autoscalers() -> anyhow::Result<()> {
    let dir = chart_dir().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let resource: wasmscaler::controller::crd::WasmAutoscaler =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        resource
            .autoscaler_spec()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        checked += 1;
    }
    assert!(checked > 0, "no examples in {}", dir.display());
    Ok(())
}

/// Every (group, resource, verb) the chart grants.
fn granted() -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let mut all = BTreeSet::new();
    for (groups, resources, verbs) in rbac_rules()? {
        for group in &groups {
            for resource in &resources {
                for verb in &verbs {
                    all.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    Ok(all)
}

#[test]
fn the_rbac_grants_exactly_the_calls_the_controller_makes() -> anyhow::Result<()> {
    // The calls in the code: the watcher (list, watch), status by server-side apply, workloads
    // watched into caches (read directly while a cache is not healthy) and scaled through
    // /scale with merge patches, target pods watched and listed, and annotated
    // (and the controller's own pod labelled), pod metrics listed, Events created and their
    // series patched, the Leases read, created and replaced (with shards: listed, and long-dead members deleted). tests/controller.rs checks every
    // request the controller sent against the same rules.
    let mut expected = BTreeSet::new();
    let mut add = |group: &str, resource: &str, verbs: &[&str]| {
        for verb in verbs {
            expected.insert((group.to_owned(), resource.to_owned(), (*verb).to_owned()));
        }
    };
    add("wasmscaler.dev", "wasmautoscalers", &["list", "watch"]);
    add("wasmscaler.dev", "wasmautoscalers/status", &["patch"]);
    for kind in ["deployments", "statefulsets", "replicasets"] {
        add("apps", kind, &["get", "list", "watch"]);
        add("apps", &format!("{kind}/scale"), &["get", "patch"]);
    }
    add("", "pods", &["list", "watch", "patch"]);
    add("metrics.k8s.io", "pods", &["list"]);
    add("events.k8s.io", "events", &["create", "patch"]);
    add(
        "coordination.k8s.io",
        "leases",
        &["get", "list", "create", "update", "delete"],
    );
    let granted = granted()?;
    let extra: Vec<_> = granted.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&granted).collect();
    assert!(extra.is_empty(), "granted but never used: {extra:?}");
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
    Ok(())
}

#[test]
fn the_service_routes_to_the_leader_and_the_bounds_reach_the_controller() -> anyhow::Result<()> {
    let rendered = render(json!({}))?;
    let service = &rendered.file("service.yaml")?[0];
    assert_eq!(
        service["spec"]["selector"][wasmscaler::controller::lease::ROLE_LABEL],
        "leader",
        "the Service does not select the leader: {service:?}"
    );
    // Without leader election every replica serves, so the Service selects them all.
    let unelected = render(json!({ "leaderElection": { "enabled": false } }))?;
    let service = &unelected.file("service.yaml")?[0];
    assert!(
        service["spec"]["selector"]
            .get(wasmscaler::controller::lease::ROLE_LABEL)
            .is_none(),
        "{service:?}"
    );
    // The values' bounds are the file the controller reads: empty means the built-in ones.
    let values = values()?;
    let bounds: wasmscaler::controller::bounds::TenantBounds =
        serde_yaml::from_value(values["tenantBounds"].clone())?;
    assert_eq!(
        bounds,
        wasmscaler::controller::bounds::TenantBounds::default()
    );
    let deployment = &rendered.file("deployment.yaml")?[0];
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let args = serde_json::to_string(&pod_spec["containers"][0]["args"])?;
    assert!(
        args.contains("--tenant-bounds=/etc/wasmscaler/bounds/bounds.yaml"),
        "{args}"
    );
    assert_eq!(
        pod_spec["terminationGracePeriodSeconds"],
        values["terminationGracePeriodSeconds"]
    );
    Ok(())
}
