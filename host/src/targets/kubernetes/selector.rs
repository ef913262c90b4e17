//! Label selectors as text (`status.selector` of a Scale) parsed into kube's [`Selector`], so
//! pods can be matched against the watch cache instead of sent to the API server as a LIST.
//!
//! The grammar is the API server's (`k8s.io/apimachinery/pkg/labels`): comma-separated
//! requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k`. kube-rs
//! prints selectors in it but does not parse them.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// A selector that cannot be parsed, with the requirement at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: cannot parse {requirement:?}")]
pub struct SelectorError {
    /// The whole selector.
    pub selector: String,
    /// The requirement at fault.
    pub requirement: String,
}

/// Splits at the commas that separate requirements (not those inside `( )`).
fn requirements(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect()
}

fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn is_value(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `(a, b)` → {a, b}.
fn set(text: &str) -> Option<BTreeSet<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: BTreeSet<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    values.iter().all(|v| is_value(v)).then_some(values)
}

fn expression(requirement: &str) -> Option<Expression> {
    let pair = |key: &str, value: &str| {
        let (key, value) = (key.trim(), value.trim());
        (is_key(key) && is_value(value)).then(|| (key.to_owned(), value.to_owned()))
    };
    if let Some(key) = requirement.strip_prefix('!') {
        let key = key.trim();
        return is_key(key).then(|| Expression::DoesNotExist(key.to_owned()));
    }
    if let Some((key, value)) = requirement.split_once("!=") {
        return pair(key, value).map(|(k, v)| Expression::NotEqual(k, v));
    }
    if let Some((key, value)) = requirement
        .split_once("==")
        .or_else(|| requirement.split_once('='))
    {
        return pair(key, value).map(|(k, v)| Expression::Equal(k, v));
    }
    if let Some((key, values)) = requirement.split_once(" notin ") {
        let key = key.trim();
        if !is_key(key) {
            return None;
        }
        return set(values).map(|v| Expression::NotIn(key.to_owned(), v));
    }
    if let Some((key, values)) = requirement.split_once(" in ") {
        let key = key.trim();
        if !is_key(key) {
            return None;
        }
        return set(values).map(|v| Expression::In(key.to_owned(), v));
    }
    is_key(requirement).then(|| Expression::Exists(requirement.to_owned()))
}

/// Parses a selector in the API server's text form. The empty selector matches everything.
pub fn parse(text: &str) -> Result<Selector, SelectorError> {
    requirements(text)
        .into_iter()
        .map(|requirement| {
            expression(requirement).ok_or_else(|| SelectorError {
                selector: text.to_owned(),
                requirement: requirement.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt;

    use super::parse;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_requirement_form_matches_as_the_api_server_does() -> Result<(), super::SelectorError> {
        let web = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("app.kubernetes.io/part-of", "shop"),
        ]);
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=api", false),
            ("app!=api", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("tier in (front, back)", true),
            ("tier in (back)", false),
            ("tier notin (back)", true),
            ("tier notin (front,back)", false),
            ("app.kubernetes.io/part-of", true),
            ("canary", false),
            ("!canary", true),
            ("!app", false),
            ("app=web,tier in (front,back),!canary", true),
            ("app=web,canary", false),
        ] {
            assert_eq!(parse(selector)?.matches(&web), expected, "{selector}");
        }
        Ok(())
    }

    #[test]
    fn malformed_selectors_name_the_requirement() {
        for (selector, bad) in [
            ("app=web,tier in front", "tier in front"),
            ("app=we b", "app=we b"),
            ("a b", "a b"),
            ("=web", "=web"),
        ] {
            let error = parse(selector).expect_err(selector);
            assert_eq!(error.requirement, bad, "{selector}");
        }
    }
}
