//! Where a policy comes from: a file, an HTTPS URL pinned by digest, an OCI artifact, or an
//! upload to this host's policy store. Written as one string so a config file or a
//! `WasmAutoscaler` names a policy the way an image is named.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to a policy component.
///
/// | written as | meaning |
/// |---|---|
/// | `file:/policies/cpu.wasm`, or a bare path | a file (in the config file, relative to it) |
/// | `https://host/cpu.wasm@sha256:HEX` | fetched, and refused unless its sha256 is `HEX` |
/// | `oci://registry/repo:tag`, `oci://registry/repo@sha256:HEX` | an OCI artifact |
/// | `policy:NAME`, `policy:NAME@sha256:HEX` | uploaded to this host (`PUT /api/v1/policies/NAME`) |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyRef {
    /// A file on the host.
    File(PathBuf),
    /// An HTTP(S) URL and the sha256 its content must have.
    Url {
        /// The URL, without the digest suffix.
        url: String,
        /// Hex sha256 of the content.
        sha256: String,
    },
    /// An OCI artifact: `registry/repository[:tag][@sha256:HEX]`.
    Oci(String),
    /// An uploaded policy, optionally pinned to a digest.
    Uploaded {
        /// Its name in the store.
        name: String,
        /// Hex sha256 it must have.
        sha256: Option<String>,
    },
}

const DIGEST_PREFIX: &str = "@sha256:";

/// Why a policy reference does not parse. Each names the reference as written, with any URL
/// credentials redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefError {
    /// Nothing was written.
    #[error("policy reference is empty")]
    Empty,
    /// `file:` with no path.
    #[error("{0}: the file path is missing")]
    NoPath(String),
    /// An `https://` reference without `@sha256:`.
    #[error("{0}: a URL reference must pin the content: append @sha256:HEX")]
    Unpinned(String),
    /// The digest after `@sha256:` is not 64 hexadecimal digits.
    #[error("{reference}: {digest:?} is not a sha256 digest (64 hexadecimal digits)")]
    BadDigest {
        /// The reference.
        reference: String,
        /// What stood for the digest.
        digest: String,
    },
    /// The URL or OCI reference itself is malformed.
    #[error("{reference}: {problem}")]
    Malformed {
        /// The reference.
        reference: String,
        /// The parser's complaint.
        problem: String,
    },
    /// `policy:` with no name.
    #[error("{0}: the policy name is missing")]
    NoName(String),
    /// A scheme other than the four.
    #[error("{reference}: unknown scheme {scheme:?} (use file:, https://, oci:// or policy:)")]
    UnknownScheme {
        /// The reference.
        reference: String,
        /// Its scheme.
        scheme: String,
    },
}

fn hex_digest(reference: &str, digest: &str) -> Result<String, PolicyRefError> {
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(PolicyRefError::BadDigest {
            reference: crate::redact::redact(reference),
            digest: digest.chars().take(80).collect(),
        })
    }
}

impl PolicyRef {
    /// Parses the string form (see the type's table).
    pub fn parse(text: &str) -> Result<Self, PolicyRefError> {
        let text = text.trim();
        let named = || crate::redact::redact(text);
        if text.is_empty() {
            return Err(PolicyRefError::Empty);
        }
        if let Some(path) = text
            .strip_prefix("file://")
            .or_else(|| text.strip_prefix("file:"))
        {
            if path.is_empty() {
                return Err(PolicyRefError::NoPath(named()));
            }
            return Ok(PolicyRef::File(PathBuf::from(path)));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            let Some((url, digest)) = text.rsplit_once(DIGEST_PREFIX) else {
                return Err(PolicyRefError::Unpinned(named()));
            };
            url::Url::parse(url).map_err(|e| PolicyRefError::Malformed {
                reference: named(),
                problem: e.to_string(),
            })?;
            return Ok(PolicyRef::Url {
                url: url.to_owned(),
                sha256: hex_digest(text, digest)?,
            });
        }
        if let Some(reference) = text.strip_prefix("oci://") {
            reference
                .parse::<oci_client::Reference>()
                .map_err(|e| PolicyRefError::Malformed {
                    reference: named(),
                    problem: format!("not an OCI reference: {e}"),
                })?;
            return Ok(PolicyRef::Oci(reference.to_owned()));
        }
        if let Some(rest) = text.strip_prefix("policy:") {
            let (name, sha256) = match rest.split_once(DIGEST_PREFIX) {
                Some((name, digest)) => (name, Some(hex_digest(text, digest)?)),
                None => (rest, None),
            };
            if name.is_empty() {
                return Err(PolicyRefError::NoName(named()));
            }
            return Ok(PolicyRef::Uploaded {
                name: name.to_owned(),
                sha256,
            });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(PolicyRefError::UnknownScheme {
                reference: named(),
                scheme: scheme.to_owned(),
            });
        }
        Ok(PolicyRef::File(PathBuf::from(text)))
    }
}

impl PolicyRef {
    /// The string form, credentials included: what parses back to this reference. Only for
    /// serialization; [`Display`](fmt::Display) redacts them.
    pub(crate) fn to_raw_string(&self) -> String {
        match self {
            PolicyRef::Url { url, sha256 } => format!("{url}{DIGEST_PREFIX}{sha256}"),
            other => other.to_string(),
        }
    }
}

/// The string form with any URL credentials replaced by `***` (it ends up in logs, status
/// and Events).
impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A bare path unless it would read back as something else (a path with `://` in
            // it, or one starting with `policy:`): then after `file://`, which parsing strips
            // exactly (found by fuzzing).
            PolicyRef::File(path) => {
                let bare = path.display().to_string();
                if PolicyRef::parse(&bare).is_ok_and(|back| back == *self) {
                    f.write_str(&bare)
                } else {
                    write!(f, "file://{bare}")
                }
            }
            PolicyRef::Url { url, sha256 } => {
                write!(f, "{}{DIGEST_PREFIX}{sha256}", crate::redact::redact(url))
            }
            PolicyRef::Oci(reference) => write!(f, "oci://{reference}"),
            PolicyRef::Uploaded { name, sha256: None } => write!(f, "policy:{name}"),
            PolicyRef::Uploaded {
                name,
                sha256: Some(sha256),
            } => write!(f, "policy:{name}{DIGEST_PREFIX}{sha256}"),
        }
    }
}

impl From<PathBuf> for PolicyRef {
    fn from(path: PathBuf) -> Self {
        PolicyRef::File(path)
    }
}

impl From<&std::path::Path> for PolicyRef {
    fn from(path: &std::path::Path) -> Self {
        PolicyRef::File(path.to_path_buf())
    }
}

impl Serialize for PolicyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_raw_string())
    }
}

impl<'de> Deserialize<'de> for PolicyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PolicyRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for PolicyRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PolicyRef".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "file:PATH, https://URL@sha256:HEX, oci://REGISTRY/REPO[:TAG][@sha256:HEX] or policy:NAME[@sha256:HEX]",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PolicyRef;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn file_paths_that_look_like_other_forms_round_trip() {
        // Found by fuzzing: these printed as bare paths that parsed back differently.
        for text in [
            "file:policifile://x/cpu.wasm",
            "file:policy:cpu",
            "file: leading-space.wasm",
            "file:oci://not/a/registry",
            "file:////double//slash/http:///x",
        ] {
            let parsed = PolicyRef::parse(text).expect(text);
            assert!(matches!(parsed, PolicyRef::File(_)), "{text}");
            assert_eq!(PolicyRef::parse(&parsed.to_string()), Ok(parsed), "{text}");
        }
        assert!(PolicyRef::parse("file:").is_err());
    }

    #[test]
    fn every_form_round_trips() {
        for text in [
            "guests/cpu.wasm".to_string(),
            format!("https://example.com/p/cpu.wasm@sha256:{D}"),
            "oci://ghcr.io/acme/cpu:v1".into(),
            format!("oci://127.0.0.1:5000/acme/cpu@sha256:{D}"),
            "policy:cpu-target".into(),
            format!("policy:cpu-target@sha256:{D}"),
        ] {
            let parsed = PolicyRef::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            PolicyRef::parse("file:/p/cpu.wasm"),
            Ok(PolicyRef::File("/p/cpu.wasm".into()))
        );
    }

    #[test]
    fn url_credentials_are_kept_for_serialization_and_hidden_in_text() {
        let text = format!("https://bob:pw@example.com/cpu.wasm@sha256:{D}");
        let parsed = PolicyRef::parse(&text).unwrap();
        assert_eq!(parsed.to_raw_string(), text);
        assert_eq!(
            parsed.to_string(),
            format!("https://***@example.com/cpu.wasm@sha256:{D}")
        );
        let json = serde_json::to_string(&parsed).unwrap();
        assert_eq!(serde_json::from_str::<PolicyRef>(&json).unwrap(), parsed);
    }

    #[test]
    fn bad_references_say_why() {
        let err = |t: &str| PolicyRef::parse(t).expect_err(t).to_string();
        assert!(err("https://example.com/cpu.wasm").contains("must pin"));
        assert!(err("https://example.com/cpu.wasm@sha256:abc").contains("not a sha256"));
        assert!(err("ftp://example.com/cpu.wasm").contains("unknown scheme"));
        assert!(err("oci://UPPER/Case").contains("not an OCI reference"));
        assert!(err("policy:").contains("name is missing"));
        assert!(err("").contains("empty"));
        // Credentials in a URL never reach the message.
        let leaked = err("https://user:secret@example.com/cpu.wasm@sha256:abc");
        assert!(!leaked.contains("secret"), "{leaked}");
        assert!(matches!(
            PolicyRef::parse("gopher://x/y"),
            Err(super::PolicyRefError::UnknownScheme { scheme, .. }) if scheme == "gopher"
        ));
    }
}
