//! The Helm chart as Helm itself renders it: the real Helm library (PyPI's helm-python-sdk,
//! Helm's Go SDK; no helm binary), driven by `render_chart.py` from the venv that
//! `tests/toolchains/install.sh helm` makes. Also the RBAC rules the chart grants.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// `charts/wasmscaler`.
pub fn chart_dir() -> PathBuf {
    super::repo_root().join("charts").join("wasmscaler")
}

/// What Helm made of the chart with some values.
pub struct Rendered {
    /// `helm lint --strict`'s findings: (severity 1 info, 2 warning, 3 error; path; text).
    pub lint: Vec<(u64, String, String)>,
    /// Every YAML template (file name, documents), rendered; a template that renders to
    /// nothing has no documents.
    pub templates: Vec<(String, Vec<serde_yaml::Value>)>,
    /// `NOTES.txt`, rendered.
    pub notes: String,
}

impl Rendered {
    /// The documents of `templates/FILE`.
    pub fn file(&self, file: &str) -> anyhow::Result<&[serde_yaml::Value]> {
        self.templates
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, docs)| docs.as_slice())
            .with_context(|| format!("no templates/{file}"))
    }

    /// Every rendered document of `kind`.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a serde_yaml::Value> {
        self.templates
            .iter()
            .flat_map(|(_, docs)| docs)
            .filter(move |d| d["kind"].as_str() == Some(kind))
    }
}

/// Lints and renders the chart as release `wasmscaler` in namespace `wasmscaler`, `values`
/// (JSON) over the chart's own.
pub fn render(values: serde_json::Value) -> anyhow::Result<Rendered> {
    let root = super::repo_root();
    super::toolchains_ready()?;
    let python = root.join(".cache/helm/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run `bash tests/toolchains/install.sh helm`",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/support/render_chart.py"))
        .arg(chart_dir())
        .arg(values.to_string())
        .output()
        .context("running render_chart.py")?;
    anyhow::ensure!(
        out.status.success(),
        "Helm could not render the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let lint = report["lint"]["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["severity"].as_u64().unwrap_or(0),
                m["path"].as_str().unwrap_or_default().to_owned(),
                m["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut templates = Vec::new();
    let mut notes = String::new();
    let manifests = report["manifests"].as_object().cloned().unwrap_or_default();
    for (path, text) in manifests {
        let text = text.as_str().unwrap_or_default();
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        if name == "NOTES.txt" {
            notes = text.to_owned();
            continue;
        }
        if !name.ends_with(".yaml") {
            continue;
        }
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .with_context(|| format!("{path} as rendered"))?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        templates.push((name, docs));
    }
    templates.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Rendered {
        lint,
        templates,
        notes,
    })
}

/// (group, resource or resource/subresource, verb) of one API request path, or `None` for
/// discovery and other non-resource paths.
pub fn request_permission(method: &str, path_and_query: &str) -> Option<(String, String, String)> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [] => return None,
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

fn strings(value: &serde_yaml::Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One rule of the chart's Roles and ClusterRoles: (apiGroups, resources, verbs).
pub type Rule = (Vec<String>, Vec<String>, Vec<String>);

/// The chart's RBAC rules, as Helm renders them with the chart's values.
pub fn rbac_rules() -> anyhow::Result<Vec<Rule>> {
    let rendered = render(serde_json::json!({}))?;
    let mut rules = Vec::new();
    for doc in rendered
        .of_kind("Role")
        .chain(rendered.of_kind("ClusterRole"))
    {
        for rule in doc["rules"].as_sequence().cloned().unwrap_or_default() {
            rules.push((
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
            ));
        }
    }
    Ok(rules)
}

/// Fails unless the chart's Roles and ClusterRoles allow every request in `requests`
/// (method, path with query, body), naming the first that is not.
pub fn assert_rbac_covers(requests: &[(String, String, String)]) -> anyhow::Result<()> {
    let rules = rbac_rules()?;
    anyhow::ensure!(!rules.is_empty(), "the chart grants no RBAC rules");
    let mut checked = 0;
    for (method, path, _) in requests {
        let Some((group, resource, verb)) = request_permission(method, path) else {
            continue;
        };
        checked += 1;
        let allowed = rules.iter().any(|(groups, resources, verbs)| {
            groups.iter().any(|g| *g == group || g == "*")
                && resources.iter().any(|r| *r == resource || r == "*")
                && verbs.iter().any(|v| *v == verb || v == "*")
        });
        anyhow::ensure!(
            allowed,
            "the chart's RBAC does not allow {verb} on {resource:?} in group {group:?} ({method} {path})"
        );
    }
    anyhow::ensure!(checked > 0, "no resource requests to check");
    Ok(())
}
