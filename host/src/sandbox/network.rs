//! Addresses the `http` capability never connects to, whatever a guest's allow-list says.
//!
//! The allow-list is checked against the URL a guest asks for, but a host name is only a
//! name: `metadata.internal`, a wildcard DNS entry or a tenant's own record can resolve to the
//! cloud's metadata service or the cluster's API server. So the check that matters is made on
//! the addresses actually dialled: the client resolves names through [`GuardedResolver`],
//! which drops denied addresses, and URLs written with an IP literal are checked by
//! [`DeniedNetworks::check_literal`] before any connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::allowlist::UrlRefusal;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Networks guests may not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedNetworks(Arc<Vec<IpNet>>);

/// The default denials: link-local ranges (cloud metadata services live there: AWS, GCP and
/// Azure at 169.254.169.254, AWS's IPv6 endpoint `fd00:ec2::254`), Alibaba's metadata address,
/// and the unspecified addresses (which reach the local host).
pub(crate) fn default_denied_networks() -> Vec<IpNet> {
    [
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "0.0.0.0/32",
        "::/128",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
}

impl DeniedNetworks {
    /// A guard denying `networks`.
    pub fn new(networks: Vec<IpNet>) -> Self {
        DeniedNetworks(Arc::new(networks))
    }

    /// The network that denies `ip`, if any. IPv4-mapped IPv6 addresses are checked as the
    /// IPv4 address they carry.
    pub(crate) fn denying(&self, ip: IpAddr) -> Option<&IpNet> {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.0.iter().find(|net| net.contains(&ip))
    }

    /// Refuses a URL whose host is an IP literal in a denied network (such hosts are dialled
    /// without a name lookup, so the resolver never sees them).
    pub fn check_literal(&self, url: &url::Url) -> Result<(), UrlRefusal> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        match self.denying(ip) {
            Some(net) => Err(UrlRefusal::DeniedNetwork { ip, network: *net }),
            None => Ok(()),
        }
    }

    /// The resolver of a client bound by these denials.
    pub(crate) fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            denied: self.clone(),
        })
    }
}

/// Resolves with the system resolver and keeps only allowed addresses; a name with nothing
/// left fails with an error naming the denial.
#[derive(Debug)]
pub struct GuardedResolver {
    denied: DeniedNetworks,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let denied = self.denied.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| denied.denying(a.ip()).is_none())
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                let why = found
                    .iter()
                    .filter_map(|a| denied.denying(a.ip()).map(|n| format!("{} in {n}", a.ip())))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "{host} resolves only to addresses sandbox.httpDenyNetworks denies ({why})"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> DeniedNetworks {
        DeniedNetworks::new(default_denied_networks())
    }

    #[test]
    fn metadata_and_link_local_addresses_are_denied() {
        let g = guard();
        for ip in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(g.denying(ip).is_some(), "{ip} should be denied");
        }
        for ip in ["127.0.0.1", "10.0.0.5", "fd00::5"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(g.denying(ip).is_none(), "{ip} should be allowed");
        }
    }

    #[test]
    fn literal_urls_are_checked_without_a_lookup() {
        let g = guard();
        let url = url::Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
        let error = g.check_literal(&url).unwrap_err();
        assert!(error.to_string().contains("169.254.0.0/16"), "{error}");
        let url = url::Url::parse("http://[fd00:ec2::254]/").unwrap();
        assert!(g.check_literal(&url).is_err());
        let url = url::Url::parse("http://127.0.0.1:8080/").unwrap();
        assert!(g.check_literal(&url).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_only_to_denied_addresses_fail() {
        let g = DeniedNetworks::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let error = match g.resolver().resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("httpDenyNetworks"), "{error}");
        let addrs: Vec<SocketAddr> = guard()
            .resolver()
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
