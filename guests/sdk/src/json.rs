//! A number at a JSON path (`a.b[0].c`) of a document.

use serde_json::Value;

use crate::config::ConfigError;

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses `a.b[0].c` (an optional leading `$` or `$.`; keys with other characters as
/// `["a key"]`).
fn parse_path(path: &str) -> Result<Vec<Step>, ConfigError> {
    let bad = |why: &str| ConfigError(format!("path {path:?}: {why}"));
    let mut rest = path.trim();
    rest = rest.strip_prefix('$').unwrap_or(rest);
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(|| bad("an unclosed ["))?;
            let inner = after[..end].trim();
            rest = &after[end + 1..];
            if let Some(quoted) = inner
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
            {
                steps.push(Step::Key(quoted.to_owned()));
            } else {
                let index = inner
                    .parse::<usize>()
                    .map_err(|_| bad("an index must be a whole number or a quoted key"))?;
                steps.push(Step::Index(index));
            }
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        steps.push(Step::Key(rest[..end].to_owned()));
        rest = &rest[end..];
    }
    Ok(steps)
}

/// Why no number was found at a path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathError {
    /// The path itself is malformed (a config error).
    Config(ConfigError),
    /// The document has nothing there, or not a number (the source's answer is unusable).
    Missing(String),
}

/// The number at `path` in `document`. A string holding a number counts (Redis and many
/// APIs answer numbers as strings).
pub fn number_at(document: &Value, path: &str) -> Result<f64, PathError> {
    let steps = parse_path(path).map_err(PathError::Config)?;
    let mut node = document;
    for (i, step) in steps.iter().enumerate() {
        let next = match step {
            Step::Key(key) => node.get(key.as_str()),
            Step::Index(index) => node.get(*index),
        };
        node = next.ok_or_else(|| {
            PathError::Missing(format!(
                "nothing at {path:?} (step {} of {})",
                i + 1,
                steps.len()
            ))
        })?;
    }
    match node {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite())
    .ok_or_else(|| PathError::Missing(format!("{path:?} is not a number: {node}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_read_keys_indexes_and_quoted_keys() {
        let doc = json!({"a": {"b": [{"c": 4}, {"c": "5.5"}]}, "x y": 7});
        assert_eq!(number_at(&doc, "a.b[0].c"), Ok(4.0));
        assert_eq!(number_at(&doc, "$.a.b[1].c"), Ok(5.5));
        assert_eq!(number_at(&doc, "[\"x y\"]"), Ok(7.0));
        assert!(matches!(
            number_at(&doc, "a.b[2].c"),
            Err(PathError::Missing(_))
        ));
        assert!(matches!(number_at(&doc, "a.b"), Err(PathError::Missing(_))));
        assert!(matches!(number_at(&doc, "a[x]"), Err(PathError::Config(_))));
        assert!(matches!(number_at(&doc, "a[0"), Err(PathError::Config(_))));
    }
}
