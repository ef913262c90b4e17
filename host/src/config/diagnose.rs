//! Better messages for parse errors inside an autoscaler entry.
//!
//! An entry's scaling fields are a flattened [`ScalingSpec`], which serde reads from a buffer:
//! its errors lose the field's path and position (they point at the entry's first line, and an
//! unknown field no longer lists the known ones). This reads the failing entry again to name
//! the field, its line and the fields an entry takes.

use serde_yaml::{Mapping, Value};

use crate::engine::{AutoscalerSpec, ScalingSpec};

/// A clearer message for `error`, raised while parsing `text`, when it is inside an
/// autoscaler entry's scaling fields; `None` keeps serde's own.
pub(super) fn autoscaler_error(text: &str, error: &serde_yaml::Error) -> Option<String> {
    let message = error.to_string();
    let index: usize = message
        .strip_prefix("autoscalers[")?
        .split_once(']')?
        .0
        .parse()
        .ok()?;
    let document: Value = serde_yaml::from_str(text).ok()?;
    let entry = document.get("autoscalers")?.get(index)?.as_mapping()?;
    // serde_yaml points at the entry's first key; its siblings share that column.
    let location = error.location()?;
    let keys = EntryKeys {
        text,
        first_line: location.line(),
        column: location.column(),
    };
    let at = |key: &str| match keys.line_of(key) {
        Some(line) => format!("at line {line} column {}", keys.column),
        None => format!("at line {} column {}", keys.first_line, keys.column),
    };
    // The scaling fields alone, read again with their path: this finds an error inside them,
    // an unknown field within a nested section (`behavior.scaleUp`) too.
    let scaling_fields = fields_of(schemars::schema_for!(ScalingSpec));
    let scaling: Mapping = entry
        .iter()
        .filter(|(k, _)| {
            k.as_str()
                .is_some_and(|k| scaling_fields.iter().any(|f| f == k))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Err(failed) = serde_path_to_error::deserialize::<_, ScalingSpec>(Value::Mapping(scaling))
    {
        let path = failed.path().to_string();
        let top = path.split(['.', '[']).next().unwrap_or_default();
        return Some(format!(
            "autoscalers[{index}].{path}: {} {}",
            failed.inner(),
            at(top)
        ));
    }
    // Otherwise an unknown key of the entry itself. One unknown inside `target:` keeps
    // serde's message, which names it.
    let field = unknown_field(&message)?;
    if !entry.contains_key(field) {
        return None;
    }
    let known: Vec<String> = fields_of(schemars::schema_for!(AutoscalerSpec))
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    Some(format!(
        "autoscalers[{index}]: unknown field `{field}`, expected one of {} {}",
        known.join(", "),
        at(field)
    ))
}

/// The field named by serde's "unknown field `x`, ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.split_once("unknown field `")?.1;
    Some(rest.split_once('`')?.0)
}

/// The fields a type's schema lists, in name order (a flattened struct's included).
fn fields_of(schema: schemars::Schema) -> Vec<String> {
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// Where an entry's keys are in the file: lines from `first_line` (1-based) whose key starts
/// at `column`, until a line indented less.
struct EntryKeys<'a> {
    text: &'a str,
    first_line: usize,
    column: usize,
}

impl EntryKeys<'_> {
    fn line_of(&self, key: &str) -> Option<usize> {
        let indent = self.column.checked_sub(1)?;
        for (i, line) in self
            .text
            .lines()
            .enumerate()
            .skip(self.first_line.saturating_sub(1))
        {
            let content = line.trim_start();
            let depth = line.len() - content.len();
            // The first line may carry the list's `- ` before its key (the column counts
            // characters, so a line with others before it is read from its first key).
            let content = if i + 1 == self.first_line {
                line.get(indent..).unwrap_or(content)
            } else if content.is_empty() || content.starts_with('#') {
                continue;
            } else if depth < indent {
                return None;
            } else if depth > indent {
                continue;
            } else {
                content
            };
            if content
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
            {
                return Some(i + 1);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::ConfigFile;

    fn error_of(entry_fields: &str) -> String {
        let text = format!(
            "autoscalers:\n  - name: web\n    target:\n      kubernetes: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n    policy: p.wasm\n{entry_fields}"
        );
        ConfigFile::parse(&text, Path::new("f.yaml"))
            .expect_err("a bad entry")
            .to_string()
    }

    #[test]
    fn a_misspelt_scaling_field_is_named_with_its_line_and_the_known_fields() {
        let message = error_of("    maxReplicas: 4\n    tolerence: 0.1\n");
        assert!(
            message.contains("autoscalers[0]: unknown field `tolerence`, expected one of"),
            "{message}"
        );
        assert!(
            message.contains("`tolerance`") && message.contains("`target`"),
            "{message}"
        );
        assert!(message.ends_with("at line 7 column 5"), "{message}");
    }

    #[test]
    fn a_wrong_type_names_the_field_path_and_its_line() {
        let message = error_of("    maxReplicas: lots\n");
        assert!(
            message.contains("autoscalers[0].maxReplicas: invalid type: string \"lots\""),
            "{message}"
        );
        assert!(message.ends_with("at line 6 column 5"), "{message}");
        let nested = error_of(
            "    maxReplicas: 4\n    behavior:\n      scaleUp:\n        selectPolicy: Most\n",
        );
        assert!(
            nested.contains("autoscalers[0].behavior.scaleUp.selectPolicy: unknown variant"),
            "{nested}"
        );
        assert!(nested.ends_with("at line 7 column 5"), "{nested}");
    }

    #[test]
    fn an_unknown_nested_field_is_named_by_its_path_even_when_a_top_level_key_shares_its_name() {
        // `policy:` is an entry key too; the unknown one is inside `behavior.scaleUp`.
        let message =
            error_of("    maxReplicas: 4\n    behavior:\n      scaleUp:\n        policy: Max\n");
        assert!(
            message.contains("autoscalers[0].behavior.scaleUp")
                && message.contains("unknown field `policy`"),
            "{message}"
        );
        assert!(message.ends_with("at line 7 column 5"), "{message}");
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let message = error_of("    minReplicas: 1\n");
        assert!(message.contains("missing field `maxReplicas`"), "{message}");
    }
}
