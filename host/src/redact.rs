//! Credentials never leave in text: URLs with a user or password (`https://user:pass@host/`)
//! are written with `***` in their place wherever they appear, in logs, status, Events and API
//! answers alike.

/// `text` with every URL's userinfo replaced by `***`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first `/`, `?`, `#` or whitespace; userinfo is what comes
        // before its last `@`.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                rest = &after[user_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// `text` redacted and cut to at most `max` bytes on a character boundary, ending in a note of
/// how much was cut: what every guest-written or error text is stored and shown as.
pub fn bounded(text: &str, max: usize) -> String {
    let text = redact(text);
    if text.len() <= max {
        return text;
    }
    let suffix = |cut: usize| format!("… ({cut} bytes cut)");
    // The note's length with the largest count it can hold.
    let room = max.saturating_sub(suffix(text.len()).len());
    if room == 0 {
        return crate::sandbox::truncate_text(&text, max).0.to_owned();
    }
    let (kept, cut) = crate::sandbox::truncate_text(&text, room);
    format!("{kept}{}", suffix(cut))
}

/// An error and its causes in one line, each cause only if its text is not already there
/// (wrappers often repeat their source: "file: No such file (os error 2): No such file (os
/// error 2)"), with credentials redacted.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    redact(&text)
}

#[cfg(test)]
mod tests {
    use super::{redact, report};

    #[test]
    fn bounded_text_stays_within_its_bound_on_a_character_boundary() {
        assert_eq!(super::bounded("short", 10), "short");
        let long = "é".repeat(600);
        let kept = super::bounded(&long, 1024);
        assert!(kept.len() <= 1024 && kept.ends_with("bytes cut)"), "{kept}");
        let secret = format!("https://u:p@h/ {}", "x".repeat(100));
        let kept = super::bounded(&secret, 40);
        assert!(
            kept.len() <= 40 && kept.starts_with("https://***@h/"),
            "{kept}"
        );
        assert!(super::bounded(&long, 3).len() <= 3);
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        #[derive(Debug, thiserror::Error)]
        #[error("/p/x.wasm: {source}")]
        struct Wrapped {
            source: std::io::Error,
        }
        let error = anyhow::Error::new(Wrapped { source: io }).context("loading file:/p/x.wasm");
        assert_eq!(
            report(error.as_ref()),
            "loading file:/p/x.wasm: /p/x.wasm: No such file (os error 2)"
        );
    }

    #[test]
    fn userinfo_is_replaced_everywhere() {
        assert_eq!(
            redact("GET https://bob:s3cret@example.com/a.wasm failed; see http://x@y:80/"),
            "GET https://***@example.com/a.wasm failed; see http://***@y:80/"
        );
        assert_eq!(
            redact("error sending request for url (https://u:p@h/x)"),
            "error sending request for url (https://***@h/x)"
        );
    }

    #[test]
    fn text_without_credentials_is_unchanged() {
        for text in [
            "plain",
            "https://example.com/a@b",
            "oci://registry/repo@sha256:00",
            "mail me@example.com",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}
