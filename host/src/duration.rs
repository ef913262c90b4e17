//! Small value types shared by every layer: a duration as people write it in config files.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text is not a duration; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number leads it.
    #[error("{0:?} is not a duration (examples: 500ms, 15s, 2m)")]
    NotANumber(String),
    /// The unit is none of ms, s, m, h.
    #[error("unknown duration unit {unit:?} in {text:?} (use ms, s, m or h)")]
    UnknownUnit {
        /// The text.
        text: String,
        /// Its unit.
        unit: String,
    },
    /// Negative or too large to be a time.
    #[error("{0:?} is not a valid duration")]
    OutOfRange(String),
}

/// A duration written as `500ms`, `15s`, `2m`, `1h`, or a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `500ms`, `15s`, `1.5s`, `2m`, `1h`, or bare milliseconds.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
        let ms = match unit.trim() {
            "" | "ms" => value,
            "s" => value * 1e3,
            "m" => value * 60e3,
            "h" => value * 3600e3,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        if !ms.is_finite() || ms < 0.0 {
            return Err(DurationError::OutOfRange(text.to_owned()));
        }
        Ok(HumanDuration(Duration::from_micros((ms * 1e3) as u64)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// In a CRD schema a duration is a string such as `15s`; plain milliseconds are accepted
/// by the parser but not advertised.
impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)?$",
            "description": "A duration: 500ms, 15s, 2m or 1h.",
        })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(HumanDuration(Duration::from_millis(ms))),
            Raw::Text(text) => HumanDuration::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DurationError, HumanDuration};
    use std::time::Duration;

    #[test]
    fn durations_parse_and_bad_ones_name_what_is_wrong() {
        assert_eq!(
            HumanDuration::parse("1.5s"),
            Ok(HumanDuration(Duration::from_millis(1500)))
        );
        assert_eq!(
            HumanDuration::parse("250"),
            Ok(HumanDuration(Duration::from_millis(250)))
        );
        assert_eq!(
            HumanDuration::parse("15 d"),
            Err(DurationError::UnknownUnit {
                text: "15 d".into(),
                unit: "d".into()
            })
        );
        assert_eq!(
            HumanDuration::parse("soon"),
            Err(DurationError::NotANumber("soon".into()))
        );
        assert!(
            HumanDuration::parse("2x")
                .unwrap_err()
                .to_string()
                .contains("use ms, s, m or h")
        );
    }
}
