//! The egress policy: which addresses outbound provider calls may reach.
//!
//! A tenant admin chooses a provider's base URL, so without a policy any
//! tenant could make the server call its own internal network (SSRF):
//! `http://127.0.0.1:6379`, a cloud metadata service on `169.254.169.254`,
//! a LAN admin page. [`EgressPolicy`] refuses every address that is not a
//! public unicast one ([`is_internal`]: loopback, RFC 1918 and other private
//! ranges, link-local, CGNAT, multicast, unspecified, reserved, and the IPv6
//! forms that embed such an IPv4 address) unless the operator names it in
//! the allow list (`CHATCORE_EGRESS_ALLOW`: CIDRs, `ip:port` or host names).
//!
//! The check is made where the connection is opened, never on the text of
//! the URL alone:
//! - a host name is resolved by [`PolicyResolver`], reqwest's DNS hook,
//!   which drops refused addresses from the answer: the connection can only
//!   go to an address that was checked, so DNS rebinding (a name that
//!   resolves to a public address when checked and a private one when used)
//!   cannot get around it;
//! - an IP literal (which reqwest connects to without resolving) is checked
//!   before the request is sent ([`EgressPolicy::check_url`]). The URL
//!   parser has already turned the decimal and short IPv4 forms
//!   (`http://2130706433/`, `http://127.1/`) into `127.0.0.1`.
//!
//! The HTTP client follows no redirect (a public server cannot bounce a call
//! to an internal one) and uses no proxy (the policy can only be enforced on
//! connections it sees). A URL with userinfo (`http://user:pass@host/`) is
//! refused: credentials belong in the provider's API key, which is stored
//! encrypted, not in a URL that is shown and logged.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;

/// One entry of the allow list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// Every address in a network (`10.0.0.0/8`, `192.168.1.20`, `fd00::/8`).
    Net(IpNet),
    /// One address and port (`127.0.0.1:11434`, `[::1]:8000`).
    Socket(SocketAddr),
    /// A host name, on any port or one (`ollama.internal`, `localhost:11434`):
    /// whatever it resolves to may be reached through that name.
    Host {
        /// The name, lower case, without a trailing dot.
        name: String,
        /// Only this port, when given.
        port: Option<u16>,
    },
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressRule::Net(n) => write!(f, "{n}"),
            EgressRule::Socket(s) => write!(f, "{s}"),
            EgressRule::Host { name, port: None } => f.write_str(name),
            EgressRule::Host {
                name,
                port: Some(p),
            } => write!(f, "{name}:{p}"),
        }
    }
}

impl std::str::FromStr for EgressRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty entry".into());
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(EgressRule::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(EgressRule::Net(IpNet::from(ip)));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(EgressRule::Socket(sa));
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((n, p)) => (
                n,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("{s:?}: the port is not a number"))?,
                ),
            ),
            None => (s, None),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a CIDR, an IP address, ip:port or a host name"
            ));
        }
        Ok(EgressRule::Host { name, port })
    }
}

/// Where outbound provider calls may go. The default refuses every
/// internal address and allows nothing extra. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Arc<Vec<EgressRule>>,
}

/// Why the policy refused a call. Its `Display` never names the address:
/// it reaches callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The target is an internal address that the allow list does not name.
    #[error(
        "the egress policy refused the connection: the provider's address is not a public one (an operator can allow it with CHATCORE_EGRESS_ALLOW)"
    )]
    Refused,
    /// The URL carries a user name or password.
    #[error("the base URL must not contain a user name or password")]
    Userinfo,
    /// Not an `http` or `https` URL with a host.
    #[error("the base URL must be an http:// or https:// URL with a host")]
    Scheme,
}

impl EgressPolicy {
    /// The default: internal addresses refused, nothing allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy allowing `rules` besides public addresses.
    pub fn with_rules(rules: Vec<EgressRule>) -> Self {
        Self {
            allow: Arc::new(rules),
        }
    }

    /// Parses a comma-separated allow list (`CHATCORE_EGRESS_ALLOW`):
    /// CIDRs, IP addresses, `ip:port`, host names, `host:port`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let rules = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<EgressRule>, String>>()?;
        Ok(Self::with_rules(rules))
    }

    /// This policy with `other`'s rules added.
    pub fn merged(&self, other: &EgressPolicy) -> Self {
        let mut rules = self.allow.to_vec();
        rules.extend(other.allow.iter().cloned());
        Self::with_rules(rules)
    }

    /// The allow list.
    pub fn rules(&self) -> &[EgressRule] {
        &self.allow
    }

    /// Whether a connection to `addr`, reached through the name `host` (none
    /// for an IP literal), is allowed.
    pub fn allows(&self, host: Option<&str>, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if !is_internal(ip) {
            return true;
        }
        let host = host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        self.allow.iter().any(|r| match r {
            EgressRule::Net(n) => n.contains(&ip),
            EgressRule::Socket(s) => canonical(s.ip()) == ip && s.port() == addr.port(),
            EgressRule::Host { name, port } => {
                host.as_deref() == Some(name.as_str()) && port.is_none_or(|p| p == addr.port())
            }
        })
    }

    /// Checks what can be checked of a URL before connecting: the scheme,
    /// no userinfo, and an IP-literal host (names are checked when they are
    /// resolved, see [`PolicyResolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        let port = check_shape(url)?;
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), port),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), port),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(EgressError::Scheme),
        }
    }

    fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), EgressError> {
        if self.allows(None, SocketAddr::new(ip, port)) {
            Ok(())
        } else {
            Err(EgressError::Refused)
        }
    }

    /// Checks a base URL as a provider is configured: its shape, then its
    /// host, resolved (bounded by `timeout`). A name that does not resolve
    /// now passes (it is checked again at every connection); one that
    /// resolves to any refused address is refused.
    pub async fn check_target(&self, url: &Url, timeout: Duration) -> Result<(), EgressError> {
        self.check_url(url)?;
        let port = check_shape(url)?;
        let Some(url::Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let lookup = tokio::net::lookup_host((name, port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        if addrs.iter().all(|a| self.allows(Some(name), *a)) {
            Ok(())
        } else {
            Err(EgressError::Refused)
        }
    }
}

/// The port of an `http(s)` URL without userinfo.
fn check_shape(url: &Url) -> Result<u16, EgressError> {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(EgressError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EgressError::Userinfo);
    }
    url.port_or_known_default().ok_or(EgressError::Scheme)
}

/// An IPv4 address written in IPv6 form (mapped `::ffff:a.b.c.d`) is that
/// IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` is anything but a public unicast address: loopback,
/// private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), CGNAT
/// (100.64/10), multicast, unspecified, broadcast, documentation,
/// benchmarking and reserved ranges, and IPv6 addresses that embed such an
/// IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) or tunnel to an
/// arbitrary one (Teredo).
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| {
        is_internal_v4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ))
    };
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast() // ff00::/8
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
        // IPv4-compatible ::a.b.c.d (deprecated)
        || (s[..6].iter().all(|x| *x == 0) && embedded_v4(s[6], s[7]))
        // NAT64 64:ff9b::/96 and 64:ff9b:1::/48
        || (s[0] == 0x0064 && s[1] == 0xff9b)
        // 6to4 2002::/16 embeds an IPv4 address in the next 32 bits
        || (s[0] == 0x2002 && embedded_v4(s[1], s[2]))
}

/// The error a [`PolicyResolver`] fails a connection with. Found in the
/// source chain of the transport error, it becomes
/// [`super::ProviderError::EgressRefused`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the egress policy refused every address of this host")]
pub struct EgressDenied;

/// reqwest's DNS hook: resolves a name with the system resolver, then keeps
/// only the addresses the policy allows. `port` is the port the client
/// connects to (a provider's client talks to one base URL); it decides the
/// `ip:port` and `host:port` rules.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: EgressPolicy,
    port: u16,
}

impl PolicyResolver {
    /// A resolver for connections to `port` under `policy`.
    pub fn new(policy: EgressPolicy, port: u16) -> Self {
        Self { policy, port }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.allows(Some(&host), *a))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(EgressDenied) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A URL as it may be shown or logged: user name and password removed,
/// every query value replaced by `REDACTED` (keys kept), no fragment. Text
/// that does not parse as a URL is replaced whole.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else {
        return "[REDACTED]".into();
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        if keys.is_empty() {
            url.set_query(None);
        } else {
            let mut q = url.query_pairs_mut();
            q.clear();
            for k in &keys {
                q.append_pair(k, "REDACTED");
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001::1",
            "2001:db8::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} is internal");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn allow_rules() {
        let p = EgressPolicy::parse(
            "10.0.0.0/8, 127.0.0.1:11434, [::1]:8000, ollama.lan, vllm.lan:9000, 192.168.1.5",
        )
        .unwrap();
        assert_eq!(p.rules().len(), 6);
        assert!(p.allows(None, sa("10.9.8.7:80")));
        assert!(p.allows(None, sa("127.0.0.1:11434")));
        assert!(!p.allows(None, sa("127.0.0.1:11435")));
        assert!(p.allows(None, sa("[::1]:8000")));
        assert!(p.allows(None, sa("[::ffff:127.0.0.1]:11434")), "mapped");
        assert!(p.allows(Some("Ollama.LAN."), sa("192.168.7.7:1")));
        assert!(!p.allows(Some("other.lan"), sa("192.168.7.7:1")));
        assert!(p.allows(Some("vllm.lan"), sa("172.16.0.9:9000")));
        assert!(!p.allows(Some("vllm.lan"), sa("172.16.0.9:9001")));
        assert!(p.allows(None, sa("192.168.1.5:443")));
        assert!(
            p.allows(None, sa("8.8.8.8:443")),
            "public is always allowed"
        );
        for bad in ["", "10.0.0.0/33", "host:port", "a b", "-"] {
            if !bad.is_empty() {
                assert!(EgressPolicy::parse(bad).is_err(), "{bad:?}");
            }
        }
        assert!(EgressPolicy::parse(" , ").unwrap().rules().is_empty());
    }

    #[test]
    fn urls_are_checked_after_normalisation() {
        let p = EgressPolicy::new();
        let check = |u: &str| p.check_url(&Url::parse(u).unwrap());
        for u in [
            "http://127.0.0.1:8080/v1",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert_eq!(check(u), Err(EgressError::Refused), "{u}");
        }
        assert_eq!(
            check("http://user:pw@api.example.com/"),
            Err(EgressError::Userinfo)
        );
        assert_eq!(check("ftp://api.example.com/"), Err(EgressError::Scheme));
        assert_eq!(check("https://api.openai.com/v1"), Ok(()));
        assert_eq!(check("http://localhost:1/"), Ok(()), "names: at resolution");
    }

    #[tokio::test]
    async fn targets_are_resolved_when_configured() {
        let p = EgressPolicy::new();
        let t = Duration::from_secs(2);
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            p.check_target(&u("http://localhost:9/"), t).await,
            Err(EgressError::Refused)
        );
        assert_eq!(
            p.check_target(&u("http://no-such-host.invalid/"), t).await,
            Ok(()),
            "a name that does not resolve is checked at call time"
        );
        let allowed = EgressPolicy::parse("localhost").unwrap();
        assert_eq!(
            allowed.check_target(&u("http://localhost:9/"), t).await,
            Ok(())
        );
    }

    #[test]
    fn urls_are_redacted_for_display() {
        assert_eq!(
            redact_url("https://u:p@gw.example.com/v1?deployment=prod&sig=abc#x"),
            "https://gw.example.com/v1?deployment=REDACTED&sig=REDACTED"
        );
        assert_eq!(
            redact_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1"
        );
        assert_eq!(redact_url("not a url"), "[REDACTED]");
    }
}
