//! Fuzz check: request validation (`tether_proxy::validate::request`) on
//! request heads built from arbitrary method, target and header bytes,
//! wherever the `http` crate accepts them (neither `http1::head` nor
//! hyper hands the proxy anything `http` refuses). Nothing panics, and a head that passes keeps the
//! promises `validate.rs` makes: at most one `Host` (exactly one in
//! HTTP/1.1) that matches an absolute target's authority, at most one
//! `Transfer-Encoding` and it is `chunked` (never on HTTP/1.0), no
//! underscore spelling of the sticky headers, and a declared body within
//! the limit.
//!
//! Input: lines split at `\n`: method, target, a version byte (low two
//! bits: HTTP/1.0, 1.1, 2, 0.9; bit 2: tight limits), then `name:value`
//! header lines (split at the first `:`, the value as is). A line `http`
//! refuses is skipped (a refused method or target ends the run).
//!
//! Shared by `fuzz/fuzz_targets/validate.rs` and
//! `crates/proxy/tests/fuzz_corpus.rs`.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use tether_proxy::config::Limits;
use tether_proxy::validate;

pub fn run(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let (Some(method), Some(uri)) = (lines.next(), lines.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(uri)) else {
        return;
    };
    let flags = lines.next().and_then(|l| l.first().copied()).unwrap_or(1);
    let version = match flags & 3 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        2 => Version::HTTP_2,
        _ => Version::HTTP_09,
    };
    let limits = if flags & 4 == 0 {
        Limits::default()
    } else {
        Limits {
            max_uri_bytes: 16,
            max_body_bytes: Some(100),
            ..Limits::default()
        }
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            parts.headers.append(n, v);
        }
    }

    match validate::request(&parts, &limits) {
        Err(reject) => {
            assert!(reject.status.is_client_error() || reject.status.is_server_error());
            assert!(!reject.message.is_empty());
        }
        Ok(()) => {
            let h = &parts.headers;
            let hosts = h.get_all(header::HOST).iter().count();
            assert!(hosts <= 1, "{hosts} Host headers passed");
            if version == Version::HTTP_11 {
                assert_eq!(hosts, 1, "HTTP/1.1 without Host passed");
            }
            if let (Some(host), Some(authority)) = (h.get(header::HOST), parts.uri.authority()) {
                let host = host.to_str().expect("a valid Host is ASCII");
                let (name, port) = match host.rfind(':') {
                    Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
                    _ => (host, None),
                };
                let default = if parts.uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                };
                let port = port.map_or(default, |p| p.parse::<u16>().expect("a valid port"));
                assert!(
                    name.eq_ignore_ascii_case(authority.host())
                        && port == authority.port_u16().unwrap_or(default),
                    "Host {host:?} passed against target {authority}"
                );
            }
            let te: Vec<_> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
            assert!(
                te.len() <= 1,
                "{} Transfer-Encoding headers passed",
                te.len()
            );
            if let Some(te) = te.first() {
                assert!(
                    version >= Version::HTTP_11,
                    "Transfer-Encoding on {version:?}"
                );
                let te = te.as_bytes().trim_ascii();
                assert!(
                    te.eq_ignore_ascii_case(b"chunked"),
                    "Transfer-Encoding {te:?} passed"
                );
            }
            for name in ["x_target_server", "x_target_server_last_use"] {
                assert!(!h.contains_key(name), "{name} passed");
            }
            if let Some(max) = limits.max_body_bytes {
                for v in h.get_all(header::CONTENT_LENGTH) {
                    let len: u64 = v
                        .to_str()
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("a valid length");
                    assert!(len <= max, "Content-Length {len} over {max} passed");
                }
            }
        }
    }
}
