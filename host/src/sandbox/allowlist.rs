//! The URL allow-list of the `http` capability.

use url::Url;

/// Why the `http` capability refuses a URL; the guest gets its text as `error.denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// The URL does not parse.
    #[error("{url:?} is not a valid URL: {why}")]
    Invalid {
        /// The URL asked for.
        url: String,
        /// The parser's reason.
        why: url::ParseError,
    },
    /// A scheme other than http and https.
    #[error("{0:?}: only http and https are allowed")]
    Scheme(String),
    /// A user name or password in the URL.
    #[error("{0:?}: credentials in URLs are not allowed")]
    Credentials(String),
    /// No host, or no port and no default port for the scheme.
    #[error("{0:?} has no host or port")]
    NoHostOrPort(String),
    /// Not matched by any pattern of the autoscaler's allow-list.
    #[error("{0:?} is not on the autoscaler's HTTP allow-list")]
    NotAllowed(String),
    /// A literal IP address in a network the sandbox denies whatever the allow-list says.
    #[error("{ip} is in {network}, which sandbox.httpDenyNetworks denies")]
    DeniedNetwork {
        /// The address in the URL.
        ip: std::net::IpAddr,
        /// The denied network that holds it.
        network: ipnet::IpNet,
    },
}

/// Placeholder in a pattern that stands for any current replica's address.
const REPLICA: &str = "{replica}";

/// Compiled allow-list for one call: patterns with `{replica}` expanded to the call's replicas.
#[derive(Debug, Clone)]
pub(crate) struct UrlAllowList {
    patterns: Vec<String>,
}

impl UrlAllowList {
    pub(crate) fn new(
        patterns: &[String],
        replica_addresses: impl Iterator<Item = String>,
    ) -> Self {
        let addresses: Vec<String> = replica_addresses.map(|a| url_host(&a)).collect();
        let mut expanded = Vec::new();
        for pattern in patterns {
            if pattern.contains(REPLICA) {
                expanded.extend(addresses.iter().map(|a| pattern.replace(REPLICA, a)));
            } else {
                expanded.push(pattern.clone());
            }
        }
        UrlAllowList { patterns: expanded }
    }

    /// Parses `url` and checks it against the patterns; the error says why it was refused.
    pub(crate) fn check(&self, url: &str) -> Result<Url, UrlRefusal> {
        let parsed = Url::parse(url).map_err(|why| UrlRefusal::Invalid {
            url: url.to_owned(),
            why,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlRefusal::Scheme(url.to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlRefusal::Credentials(url.to_owned()));
        }
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return Err(UrlRefusal::NoHostOrPort(url.to_owned()));
        };
        let path = parsed.path();
        let with_port = format!("{}://{host}:{port}{path}", parsed.scheme());
        let candidates = if parsed.port().is_none() {
            vec![with_port, format!("{}://{host}{path}", parsed.scheme())]
        } else {
            vec![with_port]
        };
        let allowed = self.patterns.iter().any(|p| {
            candidates
                .iter()
                .any(|c| glob_match(p.as_bytes(), c.as_bytes()))
        });
        if allowed {
            Ok(parsed)
        } else {
            Err(UrlRefusal::NotAllowed(url.to_owned()))
        }
    }
}

/// A replica address as it appears in a URL: IPv6 in brackets and in the canonical form the
/// URL parser writes (`fd00:0::05` → `[fd00::5]`), so `http://{replica}:8080/` matches what a
/// guest's URL parses to.
fn url_host(address: &str) -> String {
    let bare = address.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => format!("[{ip}]"),
        Err(_) => address.to_owned(),
    }
}

/// `*` matches any run of bytes other than `/`; everything else matches itself.
///
/// Simulates the pattern as an automaton, one text byte at a time: O(pattern × text) in the
/// worst case. (A backtracking matcher is exponential in the number of stars; a guest chooses
/// the URL, so it must not choose the matcher's running time.)
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let states = pattern.len() + 1;
    // reachable[i]: the first i pattern bytes can match the text read so far.
    let mut reachable = vec![false; states];
    reachable[0] = true;
    skip_stars(pattern, &mut reachable);
    let mut next = vec![false; states];
    for &byte in text {
        next.iter_mut().for_each(|s| *s = false);
        for (i, &p) in pattern.iter().enumerate() {
            if !reachable[i] {
                continue;
            }
            if p == b'*' {
                next[i] |= byte != b'/';
            } else if p == byte {
                next[i + 1] = true;
            }
        }
        skip_stars(pattern, &mut next);
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut reachable, &mut next);
    }
    reachable[pattern.len()]
}

/// A star may match nothing: a reachable star makes the position after it reachable too.
fn skip_stars(pattern: &[u8], reachable: &mut [bool]) {
    for (i, &p) in pattern.iter().enumerate() {
        if p == b'*' && reachable[i] {
            reachable[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str], replicas: &[&str]) -> UrlAllowList {
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        UrlAllowList::new(&patterns, replicas.iter().map(|s| s.to_string()))
    }

    #[test]
    fn ipv6_replicas_match_in_brackets() {
        let l = list(
            &["http://{replica}:8080/load"],
            &["fd00:0:0::05", "10.0.0.1"],
        );
        assert!(l.check("http://[fd00::5]:8080/load").is_ok());
        assert!(l.check("http://10.0.0.1:8080/load").is_ok());
        assert!(l.check("http://[fd00::6]:8080/load").is_err());
    }

    #[test]
    fn exact_and_wildcard_patterns() {
        let l = list(
            &["http://127.0.0.1:*/load", "https://metrics.example.com/q"],
            &[],
        );
        assert!(l.check("http://127.0.0.1:8081/load").is_ok());
        assert!(l.check("http://127.0.0.1:8081/load?x=1").is_ok());
        assert!(l.check("https://metrics.example.com/q").is_ok());
        assert!(l.check("https://metrics.example.com:443/q").is_ok());
        assert!(l.check("http://127.0.0.1:8081/other").is_err());
        assert!(l.check("http://127.0.0.1:8081/load/deeper").is_err());
        assert!(l.check("http://10.0.0.1:8081/load").is_err());
        assert!(l.check("https://metrics.example.com:8443/q").is_err());
    }

    #[test]
    fn many_stars_cost_no_more_than_pattern_times_text() {
        // A backtracking matcher takes exponential time here (found by fuzzing the
        // allow-list); this one answers at once.
        let pattern = format!("http://h/{}b", "*a".repeat(40));
        let l = list(&[pattern.as_str()], &[]);
        let url = format!("http://h/{}", "a".repeat(200));
        assert!(l.check(&url).is_err());
        assert!(l.check(&format!("{url}b")).is_ok());
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a", b""));
    }

    #[test]
    fn star_does_not_cross_path_segments() {
        let l = list(&["http://h/*/x"], &[]);
        assert!(l.check("http://h/a/x").is_ok());
        assert!(l.check("http://h/a/b/x").is_err());
    }

    #[test]
    fn replica_placeholder_expands_to_current_replicas_only() {
        let l = list(
            &["http://{replica}/status"],
            &["127.0.0.1:9001", "127.0.0.1:9002"],
        );
        assert!(l.check("http://127.0.0.1:9001/status").is_ok());
        assert!(l.check("http://127.0.0.1:9002/status").is_ok());
        assert!(l.check("http://127.0.0.1:9003/status").is_err());
    }

    #[test]
    fn refuses_other_schemes_credentials_and_garbage() {
        let l = list(&["*"], &[]);
        assert!(matches!(
            l.check("file:///etc/passwd"),
            Err(UrlRefusal::Scheme(_))
        ));
        assert!(matches!(
            l.check("http://u:p@h/"),
            Err(UrlRefusal::Credentials(_))
        ));
        let invalid = l.check("not a url").unwrap_err();
        assert!(matches!(invalid, UrlRefusal::Invalid { .. }));
        assert!(invalid.to_string().contains("not a valid URL"), "{invalid}");
        assert!(matches!(
            list(&["http://a/x"], &[]).check("http://a/y"),
            Err(UrlRefusal::NotAllowed(_))
        ));
    }
}
