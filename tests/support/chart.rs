//! Checks of the Helm chart that need no Helm binary: templates read as YAML once their
//! actions are stripped, the values they use, and the RBAC rules they grant.

use std::path::PathBuf;

use anyhow::Context as _;

/// `charts/wasmscaler`.
pub fn chart_dir() -> PathBuf {
    super::repo_root().join("charts").join("wasmscaler")
}

/// The text of a template with every `{{ … }}` action removed and lines left empty dropped:
/// what remains is the YAML skeleton Helm would fill in.
pub fn strip_actions(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut kept = String::new();
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            kept.push_str(&rest[..start]);
            rest = rest[start..]
                .find("}}")
                .map_or("", |end| &rest[start + end + 2..]);
        }
        kept.push_str(rest);
        if !kept.trim().is_empty() {
            out.push_str(kept.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Every YAML template (file name, documents), actions stripped.
pub fn templates() -> anyhow::Result<Vec<(String, Vec<serde_yaml::Value>)>> {
    let mut all = Vec::new();
    let dir = chart_dir().join("templates");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = strip_actions(&std::fs::read_to_string(&path)?);
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .with_context(|| format!("templates/{name}"))?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        all.push((name, docs));
    }
    Ok(all)
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

/// The chart's RBAC rules, as rendered without actions.
pub fn rbac_rules() -> anyhow::Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (_, docs) in templates()? {
        for doc in docs {
            if matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
                for rule in doc["rules"].as_sequence().cloned().unwrap_or_default() {
                    rules.push((
                        strings(&rule["apiGroups"]),
                        strings(&rule["resources"]),
                        strings(&rule["verbs"]),
                    ));
                }
            }
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
