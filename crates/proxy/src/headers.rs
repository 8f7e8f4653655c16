//! Header names the proxy reads and writes, as statics, and the header
//! rewriting of a faithful intermediary (hop-by-hop removal, forwarding
//! headers).

use std::net::SocketAddr;

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

/// Removes hop-by-hop headers: `Connection` and every header it names,
/// plus the fixed list of RFC 9110 section 7.6.1.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by Connection are removed first; only when Connection
    // is present is anything parsed, so the common case costs a lookup.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
}

/// Adds the forwarding headers to a request going upstream. `host` is the
/// client's Host (or HTTP/2 authority), if any.
pub fn add_forwarding(headers: &mut HeaderMap, peer: SocketAddr, host: Option<HeaderValue>) {
    let ip = peer.ip().to_canonical();
    let xff = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 42);
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.to_string().as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => HeaderValue::from_str(&ip.to_string()).ok(),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), PROTO_HTTP.clone());
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
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        add_forwarding(&mut h, peer, Some(HeaderValue::from_static("example.test")));
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.test");
        assert_eq!(h["via"], "1.1 tether");
    }
}
