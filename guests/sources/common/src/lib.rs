//! What the stock metric sources share, apart from their bindings: reading the autoscaler's
//! `config` with errors that name the key, percent-encoding a URL component, and reading a
//! number at a JSON path.

use serde_json::Value;

/// A config key that is missing or malformed; the guest reports it as `invalid-config`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

/// The autoscaler's `config` pairs.
pub struct Config<'a>(pub &'a [(String, String)]);

impl<'a> Config<'a> {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming it.
    pub fn required(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.get(key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ConfigError(format!("{key} is required")))
    }

    /// `key` as a finite number, `default` when unset.
    pub fn number(&self, key: &str, default: Option<f64>) -> Result<f64, ConfigError> {
        match self.get(key) {
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| ConfigError(format!("{key} must be a number, got {text:?}"))),
            None => default.ok_or_else(|| ConfigError(format!("{key} is required"))),
        }
    }

    /// `key` as `true` or `false`, `default` when unset.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(str::trim) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ConfigError(format!(
                "{key} must be true or false, got {other:?}"
            ))),
        }
    }
}

/// Percent-encodes `text` for a URL query value or path segment: everything but RFC 3986's
/// unreserved characters.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

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

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(
            encode_component("sum(rate(x{job=\"a b\"}[5m]))"),
            "sum%28rate%28x%7Bjob%3D%22a%20b%22%7D%5B5m%5D%29%29"
        );
        assert_eq!(encode_component("safe-._~"), "safe-._~");
    }

    #[test]
    fn config_errors_name_the_key() {
        let pairs = vec![("n".to_string(), "lots".to_string())];
        let config = Config(&pairs);
        assert_eq!(
            config.number("n", None),
            Err(ConfigError("n must be a number, got \"lots\"".into()))
        );
        assert_eq!(
            config.required("url"),
            Err(ConfigError("url is required".into()))
        );
        assert_eq!(config.number("m", Some(2.0)), Ok(2.0));
    }
}
