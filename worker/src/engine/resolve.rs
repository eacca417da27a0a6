//! The resolver of the HTTP client: looks names up and refuses any that resolves to an address
//! the [`NetPolicy`] forbids, handing the checked addresses straight to the connector so that
//! there is no second resolution to rebind (DNS pinning).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::engine::forensics::Probe;
use crate::policy::address::{NetPolicy, Refusal};

/// Host name lookups, replaceable in tests so that no test ever needs real DNS.
pub trait Lookup: Send + Sync + fmt::Debug {
    /// The addresses of `host`.
    fn lookup(&self, host: String) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver (getaddrinfo through tokio).
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    }
}

/// A reqwest resolver that refuses names with any forbidden address.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<NetPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<NetPolicy>, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }

    /// The policy every resolved address is checked against.
    pub fn policy(&self) -> &NetPolicy {
        &self.policy
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        let lookup = self.lookup.lookup(host.clone());
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let ips = lookup.await?;
            let elapsed = started.elapsed();
            if ips.is_empty() {
                return Err(Box::new(Refusal::NoAddresses(host)) as _);
            }
            for &ip in &ips {
                if let Err(Refusal::Address { ip, range }) = policy.check_ip(ip) {
                    return Err(Box::new(Refusal::Resolved { host, ip, range }) as _);
                }
            }
            // For the attempt's forensics, when this lookup is made for a delivery's request.
            if let Some(probe) = Probe::current() {
                probe.record(|p| {
                    p.dns = Some(elapsed);
                    p.remote_ip = p.remote_ip.or_else(|| ips.first().copied());
                });
            }
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct FixedLookup(Vec<IpAddr>);

    impl Lookup for FixedLookup {
        fn lookup(&self, _host: String) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
            let ips = self.0.clone();
            Box::pin(async move { Ok(ips) })
        }
    }

    async fn resolve(ips: &[&str]) -> Result<Vec<SocketAddr>, String> {
        use reqwest::dns::Resolve;
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        let resolver = GuardedResolver::new(Arc::new(NetPolicy::default()), Arc::new(FixedLookup(ips)));
        let name: reqwest::dns::Name = "hooks.example.com".parse().unwrap();
        resolver.resolve(name).await.map(Iterator::collect).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_name_with_any_forbidden_address_is_refused() {
        let err = resolve(&["93.184.216.34", "169.254.169.254"]).await.unwrap_err();
        assert_eq!(
            err,
            "host `hooks.example.com` resolves to 169.254.169.254, which is in a forbidden range \
             (link-local 169.254.0.0/16 (cloud metadata))"
        );
        assert!(resolve(&["10.0.0.5"]).await.is_err());
        assert_eq!(resolve(&[]).await.unwrap_err(), "host `hooks.example.com` did not resolve to any address");
        assert_eq!(resolve(&["93.184.216.34"]).await.unwrap(), vec!["93.184.216.34:0".parse().unwrap()]);
    }
}
