//! What a pool member is and how it is probed.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// Default probe kind: a TCP connect.
pub const DEFAULT_KIND: ProbeKind = ProbeKind::Tcp;
/// Default HTTP probe path.
pub const DEFAULT_PATH: &str = "/";
/// Default time between two probes of one target.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default time a probe may take before it counts as a failure.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive successes that turn an unhealthy target healthy.
pub const DEFAULT_RISE: NonZeroU32 = NonZeroU32::new(2).expect("non-zero");
/// Default consecutive failures that turn a healthy target unhealthy.
pub const DEFAULT_FALL: NonZeroU32 = NonZeroU32::new(3).expect("non-zero");
/// Default time between two resolutions of an `expand = "dns"` entry, and
/// how long a static target's host-name lookup stands.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(10);

/// How a target is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A TCP connect to the target's host and port.
    Tcp,
    /// `GET {path}` answered with a status in 200-399.
    Http,
    /// `grpc.health.v1.Health/Check` for a service name, answered
    /// `SERVING`.
    Grpc,
}

impl ProbeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Http => "http",
            ProbeKind::Grpc => "grpc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(ProbeKind::Tcp),
            "http" => Some(ProbeKind::Http),
            "grpc" => Some(ProbeKind::Grpc),
            _ => None,
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated probe specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// What a probe asks for: the request path of an HTTP probe (starts
    /// with `/`), or the service name of a gRPC probe (`[health] service`,
    /// default `""`); see [`ProbeSpec::grpc_service`]. One field for both
    /// because a probe asks for one or the other, never both.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
}

impl ProbeSpec {
    /// The service name a gRPC probe asks `grpc.health.v1.Health/Check`
    /// about (`""`: the server as a whole).
    pub fn grpc_service(&self) -> &str {
        &self.path
    }
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            kind: DEFAULT_KIND,
            path: DEFAULT_PATH.to_owned(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// A pool member: a unique name, the base URL requests are sent to, and how
/// it is probed. The URL has been validated by whoever built the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `http://host:port`, or `https://host:port` for a target reached
    /// over TLS.
    pub url: String,
    pub probe: ProbeSpec,
    /// CA files (PEM) an `https://` target's certificate may chain to
    /// besides the system roots: `[upstream_tls] ca`, then the target's own
    /// `tls_ca`. Paths only: whoever connects reads them.
    pub tls_ca: Vec<PathBuf>,
}

/// The url schemes a target may have, as `scheme://`.
const SCHEMES: [&str; 2] = ["http://", "https://"];

impl Target {
    /// Whether `url` is `https://`: requests and HTTP probes go over TLS.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// The host and port of `url` (`http://host:port` or
    /// `https://host:port`, as config leaves it), an IPv6 literal without
    /// its brackets. `None` for a url config would not have let through.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        let authority = self.authority()?;
        let (host, port) = authority.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (!host.is_empty()).then_some((host, port))
    }

    /// The `host:port` of `url` as a Host header carries it (an IPv6
    /// literal in brackets). `None` for a url config would not have let
    /// through.
    pub fn authority(&self) -> Option<&str> {
        SCHEMES
            .iter()
            .find_map(|s| self.url.strip_prefix(s))
            .filter(|a| !a.is_empty() && !a.contains('/'))
    }
}

/// One `[[targets]]` entry: a target as configured, or, with `expand =
/// "dns"`, a template that stands for one member per address its host
/// resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    /// The target itself, or the template of a DNS entry's members.
    pub target: Target,
    /// `Some` for `expand = "dns"`: how often the host is resolved again.
    pub dns_refresh: Option<Duration>,
    /// A static target given by host name: how long one lookup of it
    /// stands before a probe looks it up again (`[health] dns_refresh`).
    /// A DNS entry's members are addresses and never looked up.
    pub host_refresh: Duration,
}

impl PoolEntry {
    /// A static entry: exactly this target, a host name in its url looked
    /// up again every [`DEFAULT_DNS_REFRESH`].
    pub fn fixed(target: Target) -> Self {
        PoolEntry {
            target,
            dns_refresh: None,
            host_refresh: DEFAULT_DNS_REFRESH,
        }
    }

    /// A DNS entry re-resolved every `refresh`.
    pub fn dns(template: Target, refresh: Duration) -> Self {
        PoolEntry {
            target: template,
            dns_refresh: Some(refresh),
            host_refresh: refresh,
        }
    }

    /// This entry with a host name in its url looked up again every
    /// `refresh` (a static entry; a DNS entry's members are addresses).
    #[must_use]
    pub fn with_host_refresh(mut self, refresh: Duration) -> Self {
        self.host_refresh = refresh;
        self
    }

    pub fn is_dns(&self) -> bool {
        self.dns_refresh.is_some()
    }

    /// The member a DNS entry has for one resolved address: named
    /// `"<name>@<ip>:<port>"`, sent to `http://<ip>:<port>` (`https://`
    /// for an `https://` template; an IPv6 address in brackets), probed
    /// like the template. Its requests and probes send
    /// [`member_host`](PoolEntry::member_host) as their Host, and over TLS
    /// as the name the certificate is verified for.
    pub fn member(&self, addr: SocketAddr) -> Target {
        let scheme = if self.target.is_tls() {
            "https"
        } else {
            "http"
        };
        Target {
            name: format!("{}@{addr}", self.target.name),
            url: format!("{scheme}://{addr}"),
            probe: self.target.probe.clone(),
            tls_ca: self.target.tls_ca.clone(),
        }
    }

    /// The Host a DNS entry's members send: the template url's
    /// `host:port` (`backend:8080`), not the address a member is sent to,
    /// since virtual-hosted backends route on it. `None` for a fixed
    /// entry, whose url's authority is its Host already.
    pub fn member_host(&self) -> Option<&str> {
        if self.is_dns() {
            self.target.authority()
        } else {
            None
        }
    }
}

impl From<Target> for PoolEntry {
    fn from(target: Target) -> Self {
        PoolEntry::fixed(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, url: &str) -> Target {
        Target {
            name: name.to_owned(),
            url: url.to_owned(),
            probe: ProbeSpec::default(),
            tls_ca: Vec::new(),
        }
    }

    #[test]
    fn host_port_strips_scheme_and_brackets() {
        assert_eq!(
            target("a", "http://app.internal:8080").host_port(),
            Some(("app.internal", 8080))
        );
        assert_eq!(
            target("a", "http://[::1]:80").host_port(),
            Some(("::1", 80))
        );
        assert_eq!(
            target("a", "https://app.internal:443").host_port(),
            Some(("app.internal", 443))
        );
        assert_eq!(target("a", "http://nohost").host_port(), None);
        assert_eq!(target("a", "ftp://x:1").host_port(), None);
    }

    #[test]
    fn authority_is_what_a_host_header_carries() {
        assert_eq!(
            target("a", "http://app.internal:8080").authority(),
            Some("app.internal:8080")
        );
        assert_eq!(target("a", "http://[::1]:80").authority(), Some("[::1]:80"));
        assert_eq!(target("a", "http://").authority(), None);
        assert_eq!(target("a", "ftp://x:1").authority(), None);
    }

    #[test]
    fn dns_members_keep_the_template_host() {
        let t = target("web", "http://web.internal:8080");
        let entry = PoolEntry::dns(t.clone(), DEFAULT_DNS_REFRESH);
        assert_eq!(entry.member_host(), Some("web.internal:8080"));
        assert_eq!(PoolEntry::fixed(t).member_host(), None);
    }

    #[test]
    fn dns_members_are_named_by_address() {
        let mut t = target("web", "http://web.internal:8080");
        t.probe.kind = ProbeKind::Http;
        let entry = PoolEntry::dns(t, DEFAULT_DNS_REFRESH);
        let v4 = entry.member("10.0.0.5:8080".parse().expect("addr"));
        assert_eq!(v4.name, "web@10.0.0.5:8080");
        assert_eq!(v4.url, "http://10.0.0.5:8080");
        assert_eq!(v4.probe.kind, ProbeKind::Http);
        let v6 = entry.member("[fd00::5]:8080".parse().expect("addr"));
        assert_eq!(v6.name, "web@[fd00::5]:8080");
        assert_eq!(v6.url, "http://[fd00::5]:8080");
    }

    #[test]
    fn tls_members_stay_tls_and_keep_their_trust() {
        let mut t = target("web", "https://web.internal:443");
        t.tls_ca = vec![PathBuf::from("/etc/tether/web-ca.pem")];
        assert!(t.is_tls());
        assert_eq!(t.authority(), Some("web.internal:443"));
        let entry = PoolEntry::dns(t.clone(), DEFAULT_DNS_REFRESH);
        let m = entry.member("10.0.0.5:443".parse().expect("addr"));
        assert_eq!(m.url, "https://10.0.0.5:443");
        assert!(m.is_tls());
        assert_eq!(m.tls_ca, t.tls_ca);
        assert_eq!(entry.member_host(), Some("web.internal:443"));
        assert!(!target("a", "http://x:1").is_tls());
    }
}
