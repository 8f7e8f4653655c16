//! Header names the proxy reads and writes, as statics, and the header
//! rewriting of a faithful intermediary (hop-by-hop removal, forwarding
//! headers).

use std::net::SocketAddr;

use crate::conn::ConnInfo;
use crate::ip_text;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The pool member a client used; echoed on every proxied response.
pub static X_TARGET_SERVER: HeaderName = HeaderName::from_static("x-target-server");
/// When the client used it, epoch milliseconds.
pub static X_TARGET_SERVER_LAST_USE: HeaderName =
    HeaderName::from_static("x-target-server-last-use");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

static VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 tether");
static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Whether `name` is hop-by-hop whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
}

/// The elements of a comma-separated field value such as `Connection`'s
/// tokens, without their surrounding whitespace: the one reading of such
/// a list, for the HTTP/1 heads and the hop-by-hop rules alike.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Removes hop-by-hop headers: `Connection` and every header it names,
/// plus the fixed list of RFC 9110 section 7.6.1. One pass over the names
/// finds those present, and only they are removed: a removal hashes, and
/// most messages carry one of them at most (`Connection: keep-alive`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named = headers.get_all(header::CONNECTION);
    let is_named = |name: &HeaderName| {
        named
            .iter()
            .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes())))
    };
    const ON_STACK: usize = 8;
    let mut doomed: [Option<HeaderName>; ON_STACK] = [const { None }; ON_STACK];
    let mut more = Vec::new();
    let mut n = 0;
    for name in headers.keys() {
        if is_hop_by_hop(name) || is_named(name) {
            match doomed.get_mut(n) {
                Some(slot) => *slot = Some(name.clone()),
                None => more.push(name.clone()),
            }
            n += 1;
        }
    }
    for name in doomed.into_iter().flatten().chain(more) {
        headers.remove(name);
    }
}

/// The client end of a connection, with what every request on it needs
/// prepared once.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    tls: bool,
    /// Accepted over `[limits] client_connections`: its requests are
    /// answered `429` (see `limits`).
    pub over_connection_limit: bool,
}

impl Peer {
    pub fn new(conn: &ConnInfo) -> Peer {
        // The IP's text is not held: written per request (`ip_text`), it
        // costs an idle connection nothing.
        Peer {
            addr: conn.peer,
            tls: conn.tls.is_some(),
            over_connection_limit: false,
        }
    }

    /// Whether the client reached the proxy over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// Adds the forwarding headers to a request going upstream. `host` is the
/// client's Host (or HTTP/2 authority), if any.
pub fn add_forwarding(headers: &mut HeaderMap, peer: &Peer, host: Option<HeaderValue>) {
    let xff = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) => {
            let mut ip = [0; ip_text::MAX_LEN];
            let len = ip_text::write(peer.addr.ip().to_canonical(), &mut ip);
            let mut v = Vec::with_capacity(prev.len() + 2 + len);
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(&ip[..len]);
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(ip_text::header_value(peer.addr.ip())),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    let proto = if peer.tls { &PROTO_HTTPS } else { &PROTO_HTTP };
    headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    headers.append(header::VIA, VIA_VALUE.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_the_headers_it_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("h"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    fn plain(addr: &str) -> Peer {
        let addr = addr.parse().expect("addr");
        Peer::new(&ConnInfo {
            peer: addr,
            tls: None,
        })
    }

    #[test]
    fn forwarded_proto_says_https_on_tls() {
        let addr = "127.0.0.1:5000".parse().expect("addr");
        let tls = Peer::new(&ConnInfo {
            peer: addr,
            tls: Some(crate::conn::TlsInfo {
                alpn: None,
                sni: None,
            }),
        });
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &tls, None);
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &plain("127.0.0.1:5000"), None);
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn an_ipv4_mapped_peer_is_written_as_ipv4() {
        let peer = plain("[::ffff:10.0.0.1]:1");
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &peer, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        let peer = plain("127.0.0.1:5000");
        add_forwarding(
            &mut h,
            &peer,
            Some(HeaderValue::from_static("example.test")),
        );
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.test");
        assert_eq!(h["via"], "1.1 tether");
    }
}
