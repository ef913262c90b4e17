//! The config file's reference, generated from the JSON schema of the types it is parsed
//! into, as the CRD is: `docs/config-reference.md` cannot drift from the parser (a unit test
//! compares them), and `wasmscaler config-schema` gives editors the same schema.

use schemars::Schema;
use serde_json::{Map, Value};

use super::ConfigFile;

/// The JSON schema of the config file (draft 2020-12).
pub fn schema() -> Schema {
    schemars::schema_for!(ConfigFile)
}

/// The reference as Markdown: the file's fields, then each type they use, in name order.
pub fn reference() -> String {
    let schema = schema();
    let root = schema.as_object().cloned().unwrap_or_default();
    let mut out = String::from(
        "# The config file reference\n\n\
         Generated from the code (`WASMSCALER_BLESS=1 cargo test -p wasmscaler --lib \
         config_reference` rewrites it); `wasmscaler config-schema` prints the same as a JSON \
         schema, for editors. [configuration.md](configuration.md) is the guide. Names are \
         camelCase; a field not listed is an error.\n",
    );
    section(&mut out, "The file (`wasmscaler.yaml`)", &root);
    let definitions = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, definition) in &definitions {
        if let Some(definition) = definition.as_object() {
            section(&mut out, name, definition);
        }
    }
    out
}

/// One type: its description, then its fields as a table, or its values as a list.
fn section(out: &mut String, title: &str, schema: &Map<String, Value>) {
    out.push_str(&format!("\n## {title}\n\n"));
    if let Some(description) = text(schema, "description") {
        out.push_str(&format!("{description}\n\n"));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("| Field | Type | Default | Description |\n|---|---|---|---|\n");
        for (field, property) in properties {
            let property = property.as_object().cloned().unwrap_or_default();
            let default = if required.contains(&field.as_str()) {
                "required".to_owned()
            } else {
                default_of(&property)
            };
            out.push_str(&format!(
                "| `{field}` | {} | {default} | {} |\n",
                type_of(&property),
                cell(&text(&property, "description").unwrap_or_default()),
            ));
        }
    } else if let Some(values) = values_of(schema) {
        for (value, description) in values {
            match description {
                Some(d) => out.push_str(&format!("- `{value}`: {d}\n")),
                None => out.push_str(&format!("- `{value}`\n")),
            }
        }
    } else {
        out.push_str(&format!("Type: {}.\n", type_of(schema)));
    }
}

/// The type of a field, in words, with links to the types it refers to.
fn type_of(schema: &Map<String, Value>) -> String {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let name = target.rsplit('/').next().unwrap_or(target);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            if let Some(values) = values_of(schema) {
                let values: Vec<String> = values.iter().map(|(v, _)| format!("`{v}`")).collect();
                return format!("one of {}", values.join(", "));
            }
            let kinds: Vec<String> = options
                .iter()
                .filter_map(Value::as_object)
                .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .map(type_of)
                .collect();
            return kinds.join(" or ");
        }
    }
    if let Some(values) = values_of(schema) {
        let values: Vec<String> = values.iter().map(|(v, _)| format!("`{v}`")).collect();
        return format!("one of {}", values.join(", "));
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null")
            .to_owned(),
        _ => return "any".to_owned(),
    };
    let nested = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_object)
            .map(type_of)
            .unwrap_or_else(|| "any".to_owned())
    };
    match kind.as_str() {
        "array" => format!("list of {}", nested("items")),
        "object"
            if schema
                .get("additionalProperties")
                .is_some_and(Value::is_object) =>
        {
            format!("map of string to {}", nested("additionalProperties"))
        }
        "integer" if schema.get("minimum").and_then(Value::as_f64) == Some(0.0) => {
            "integer ≥ 0".to_owned()
        }
        _ => kind,
    }
}

/// The values of an enumeration (`enum`, or `oneOf`/`anyOf` of constants), each with its
/// description.
fn values_of(schema: &Map<String, Value>) -> Option<Vec<(String, Option<String>)>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.iter().map(|v| (plain(v), None)).collect());
    }
    let options = ["oneOf", "anyOf"]
        .iter()
        .find_map(|key| schema.get(*key).and_then(Value::as_array))?;
    options
        .iter()
        .map(|option| {
            let option = option.as_object()?;
            let value = option.get("const").or_else(|| {
                option
                    .get("enum")
                    .and_then(Value::as_array)
                    .filter(|values| values.len() == 1)
                    .and_then(|values| values.first())
            })?;
            Some((plain(value), text(option, "description")))
        })
        .collect()
}

/// A field's default as a cell: scalars and empty values as written; a whole object's
/// defaults are in its own section.
fn default_of(schema: &Map<String, Value>) -> String {
    match schema.get("default") {
        None | Some(Value::Null) => "—".to_owned(),
        Some(Value::Object(map)) if !map.is_empty() => "see its type".to_owned(),
        Some(Value::Array(items)) if !items.is_empty() => {
            let items: Vec<String> = items.iter().map(plain).collect();
            format!("`{}`", items.join(", "))
        }
        Some(value) => format!("`{}`", plain(value)),
    }
}

/// A JSON value as a user writes it in YAML: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// A string field of a schema, on one line.
fn text(schema: &Map<String, Value>, key: &str) -> Option<String> {
    let text = schema.get(key)?.as_str()?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_reference_in_docs_is_current() {
        crate::fsutil::assert_doc_current(
            "config-reference.md",
            &super::reference(),
            "config_reference",
        );
    }

    #[test]
    fn every_field_of_an_autoscaler_and_its_defaults_are_listed() {
        let reference = super::reference();
        let autoscaler = reference
            .split("\n## AutoscalerSpec\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("an AutoscalerSpec section");
        for row in [
            "| `maxReplicas` | integer ≥ 0 | required |",
            "| `interval` | [Duration](#duration) | `15s` |",
            "| `target` | [TargetSpec](#targetspec) | required |",
            "| `runMode` | [RunMode](#runmode) | `per-resource` |",
        ] {
            assert!(
                autoscaler.contains(row),
                "missing {row:?} in:\n{autoscaler}"
            );
        }
        assert!(reference.contains("- `per-replica`: Once per replica"));
    }
}
