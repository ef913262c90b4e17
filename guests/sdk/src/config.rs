//! The autoscaler's `config`, read with errors that name the key, and URL components.

/// A config key that is missing or malformed; the guest reports it as `invalid-config` (with
/// the `bindings` feature it converts into the contract's error with `?`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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

    /// `key` as a number from 0 to 1, `default` when unset.
    pub fn fraction(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let value = self.number(key, Some(default))?;
        if !(0.0..=1.0).contains(&value) {
            return Err(ConfigError(format!(
                "{key} must be between 0 and 1, got {value}"
            )));
        }
        Ok(value)
    }

    /// `key` as a number above 0, required.
    pub fn positive(&self, key: &str) -> Result<f64, ConfigError> {
        let value = self.number(key, None)?;
        if value <= 0.0 {
            return Err(ConfigError(format!("{key} must be above 0, got {value}")));
        }
        Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let pairs = vec![
            ("n".to_string(), "lots".to_string()),
            ("f".to_string(), "1.5".to_string()),
        ];
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
        assert!(config.fraction("f", 0.5).is_err());
        assert!(config.positive("m").is_err());
    }
}
