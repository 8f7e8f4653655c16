//! Who a request's client is, for the per-client rate (`[limits]`), when
//! the proxy stands behind another proxy: every request then arrives from
//! that proxy's address, and the client is in a header it adds
//! (`client_header`, e.g. `X-Forwarded-For`). A header is only words a
//! peer sends, so it is believed only from `trusted_proxies`; from any
//! other peer it is ignored and the peer's own address is the client, so a
//! client cannot name another one to spend its tokens or escape its own.
//!
//! Kept apart from `limits` because it owns a different question (whose
//! bucket) from the table (how full it is), and it parses outside input:
//! CIDRs at config time and header values on the request path, neither of
//! which allocates there.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;
use tether_daemon::config::{ConfigError, RawLimits};

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network as a 128-bit number (IPv4 as IPv4-mapped IPv6), masked.
    network: u128,
    mask: u128,
}

impl Cidr {
    /// `addr` or `addr/len`; `None` if it is neither.
    pub fn parse(raw: &str) -> Option<Cidr> {
        let (addr, len) = match raw.trim().split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (raw.trim(), None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        // An IPv4 block lives in the mapped range's low 32 bits.
        let (bits, offset) = match ip {
            IpAddr::V4(_) => (32u32, 96u32),
            IpAddr::V6(_) => (128, 0),
        };
        let len = match len {
            Some(len) => len.parse::<u32>().ok().filter(|&l| l <= bits)?,
            None => bits,
        };
        let prefix = offset + len;
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        Some(Cidr {
            network: wide(ip) & mask,
            mask,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        wide(ip) & self.mask == self.network
    }
}

/// `ip` as a 128-bit number; IPv4 (also IPv4-mapped) as IPv4-mapped IPv6,
/// so one comparison serves both families.
fn wide(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `[limits] client_header` and `trusted_proxies`, validated. The default
/// (no header) makes the peer's address the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    header: Option<HeaderName>,
    trusted: Arc<[Cidr]>,
}

impl ClientIdentity {
    pub fn from_raw(raw: &RawLimits) -> Result<ClientIdentity, ConfigError> {
        let trusted = raw
            .trusted_proxies
            .iter()
            .flatten()
            .map(|raw| {
                Cidr::parse(raw).ok_or_else(|| {
                    ConfigError::new(
                        "limits.trusted_proxies",
                        format!("{raw:?} is not an address or an address/prefix block"),
                    )
                })
            })
            .collect::<Result<Arc<[Cidr]>, _>>()?;
        let header = match raw.client_header.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => Some(HeaderName::try_from(name).map_err(|_| {
                ConfigError::new(
                    "limits.client_header",
                    format!("{name:?} is not a header name"),
                )
            })?),
        };
        match (&header, trusted.is_empty()) {
            (Some(_), true) => Err(ConfigError::new(
                "limits.trusted_proxies",
                "must list the proxies limits.client_header is believed from",
            )),
            (None, false) => Err(ConfigError::new(
                "limits.trusted_proxies",
                "only applies with limits.client_header",
            )),
            _ => Ok(ClientIdentity { header, trusted }),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client of a request from `peer` with `headers`.
    ///
    /// From a trusted peer, the right-most address in the header that is
    /// not itself a trusted proxy. Each proxy appends the address it
    /// received from, so the entries right of the client were written by
    /// trusted proxies, and the first untrusted one from the right is the
    /// address the outermost trusted proxy saw: the one a client cannot
    /// choose. Everything left of it the client could have sent itself
    /// (the left-most entry is the classic spoof). With several header
    /// lines, the last line is the right-most.
    ///
    /// The peer's address when the peer is not trusted, the header is
    /// absent, every entry is a trusted proxy, or the entry reached first
    /// is not an address (a trusted proxy wrote something else there: its
    /// own address is then the safe key, if a coarse one).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let Some(name) = &self.header else {
            return peer;
        };
        if !self.trusts(peer) {
            return peer;
        }
        for value in headers.get_all(name).iter().rev() {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            for entry in value.rsplit(',') {
                let Some(ip) = entry_ip(entry.trim()) else {
                    return peer;
                };
                if !self.trusts(ip) {
                    return ip;
                }
            }
        }
        peer
    }
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, or with a
/// port (`192.0.2.1:5000`, `[2001:db8::1]:5000`).
fn entry_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn identity(header: &str, trusted: &[&str]) -> ClientIdentity {
        ClientIdentity::from_raw(&RawLimits {
            client_header: Some(header.into()),
            trusted_proxies: Some(trusted.iter().map(|s| (*s).to_owned()).collect()),
            ..RawLimits::default()
        })
        .expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn cidrs_match_their_block_only() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(
            c.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        let one = Cidr::parse("192.0.2.7").expect("host");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
        assert!(
            !Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("2001:db8::1"))
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_right_most_untrusted_address_from_a_trusted_peer() {
        let id = identity("x-forwarded-for", &["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        // The client sent a forged entry; the proxy appended the real one.
        let h = xff(&["6.6.6.6, 203.0.113.5"]);
        assert_eq!(id.client(peer, &h), ip("203.0.113.5"));
        // Two trusted proxies in a row: skip the inner one.
        let h = xff(&["6.6.6.6, 203.0.113.5, 10.0.0.9"]);
        assert_eq!(id.client(peer, &h), ip("203.0.113.5"));
        // Several lines: the last is the right-most.
        let h = xff(&["6.6.6.6", "203.0.113.5:4711, 10.0.0.9"]);
        assert_eq!(id.client(peer, &h), ip("203.0.113.5"));
        let h = xff(&["[2001:db8::5]:80"]);
        assert_eq!(id.client(peer, &h), ip("2001:db8::5"));
    }

    #[test]
    fn otherwise_the_peer() {
        let id = identity("x-forwarded-for", &["10.0.0.0/8"]);
        let spoof = xff(&["203.0.113.5"]);
        assert_eq!(
            id.client(ip("198.51.100.1"), &spoof),
            ip("198.51.100.1"),
            "untrusted peer"
        );
        let trusted = ip("10.0.0.1");
        assert_eq!(id.client(trusted, &HeaderMap::new()), trusted, "no header");
        assert_eq!(
            id.client(trusted, &xff(&["10.0.0.2, 10.0.0.3"])),
            trusted,
            "all trusted"
        );
        assert_eq!(
            id.client(trusted, &xff(&["1.2.3.4, unknown"])),
            trusted,
            "not an address"
        );
        let off = ClientIdentity::default();
        assert_eq!(off.client(trusted, &spoof), trusted, "no client_header");
    }

    #[test]
    fn config_errors_name_the_key() {
        let raw = |header: Option<&str>, trusted: Option<&[&str]>| RawLimits {
            client_header: header.map(str::to_owned),
            trusted_proxies: trusted.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
            ..RawLimits::default()
        };
        let key = |r: RawLimits| ClientIdentity::from_raw(&r).expect_err("refused").key;
        assert_eq!(
            key(raw(Some("x f"), Some(&["10.0.0.0/8"]))),
            "limits.client_header"
        );
        assert_eq!(
            key(raw(Some("x-forwarded-for"), None)),
            "limits.trusted_proxies"
        );
        assert_eq!(
            key(raw(None, Some(&["10.0.0.0/8"]))),
            "limits.trusted_proxies"
        );
        assert_eq!(
            key(raw(Some("x-forwarded-for"), Some(&["10.0.0.0/40"]))),
            "limits.trusted_proxies"
        );
        let empty = ClientIdentity::from_raw(&raw(Some(""), None)).expect("empty is off");
        assert_eq!(empty, ClientIdentity::default());
    }
}
