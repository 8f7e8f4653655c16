//! Request checks a faithful intermediary makes before anything reaches a
//! backend, on a head that is already framed: by the proxy's own HTTP/1
//! parser (`http1::head`) or, for HTTP/2, by hyper.
//!
//! What `http1::head` already refuses before an HTTP/1 request gets here,
//! so nothing below repeats it:
//! - malformed request lines: bad method token, double spaces, tabs, SP
//!   inside the target, control bytes, unknown versions (`HTTP/1.1x`,
//!   `HTTP/11`, `http/1.1`, `HTTP/2.0`, none at all): 400;
//! - malformed header lines: empty or non-token names, whitespace before
//!   the colon or at the start of a line, obs-fold, bare CR, NUL and other
//!   controls in values: 400 (bare LF line endings are accepted and
//!   re-serialised with CRLF upstream);
//! - a target that is not visible ASCII: 400; over 65,534 bytes: 414;
//! - `Content-Length` that is not 1*DIGIT, overflows u64, or differs
//!   between lines: 400 (equal duplicates are merged into one);
//! - `Transfer-Encoding` whose last coding is not `chunked`: 400; with
//!   `Content-Length` too, the length is dropped, the body is read chunked
//!   and the connection closes afterwards;
//! - more than `max_headers` fields, or a head over `max_header_bytes`:
//!   431;
//! - invalid chunked framing in a body (bad size line, bare LF, data
//!   longer than its size): the body stream fails and the connection is
//!   closed. That happens while the body streams, after this check.
//!
//! The refusals both use (`BAD_TE`, `TE_HTTP10`, `BAD_LENGTH`,
//! `BAD_TARGET`) are defined here, once. `Transfer-Encoding` on HTTP/1.0
//! is the one rule both apply: the parser must (it decides the framing),
//! and this check keeps the promise for any head, however it was read.
//!
//! A fragment (`#...`) in the target is silently dropped by `http` before
//! the service sees it, so it can be neither refused nor forwarded here.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{Method, StatusCode, Version};

use crate::config::Limits;

/// Why a request is refused: the status and a short fixed message (never
/// anything taken from the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    pub message: &'static str,
    /// Close the client connection after answering (the framing or the
    /// peer is in doubt).
    pub close: bool,
}

impl Reject {
    const fn new(status: StatusCode, message: &'static str, close: bool) -> Reject {
        Reject {
            status,
            message,
            close,
        }
    }
}

/// The underscore twins of the sticky headers. Some servers fold `_` into
/// `-`; a client must not be able to smuggle a sticky hint that way.
static X_TARGET_SERVER_UNDERSCORE: HeaderName = HeaderName::from_static("x_target_server");
static X_TARGET_SERVER_LAST_USE_UNDERSCORE: HeaderName =
    HeaderName::from_static("x_target_server_last_use");

const URI_TOO_LONG: Reject = Reject::new(StatusCode::URI_TOO_LONG, "URI too long", false);
pub(crate) const BAD_TARGET: Reject =
    Reject::new(StatusCode::BAD_REQUEST, "Invalid request target", false);
pub(crate) const TE_HTTP10: Reject = Reject::new(
    StatusCode::BAD_REQUEST,
    "Transfer-Encoding is not allowed in HTTP/1.0",
    true,
);
pub(crate) const BAD_TE: Reject =
    Reject::new(StatusCode::BAD_REQUEST, "Invalid Transfer-Encoding", true);
const UNSUPPORTED_TE: Reject = Reject::new(
    StatusCode::NOT_IMPLEMENTED,
    "Unsupported transfer coding",
    true,
);
const NO_HOST: Reject = Reject::new(StatusCode::BAD_REQUEST, "Missing Host header", true);
const MANY_HOSTS: Reject = Reject::new(StatusCode::BAD_REQUEST, "Multiple Host headers", true);
const BAD_HOST: Reject = Reject::new(StatusCode::BAD_REQUEST, "Invalid Host header", true);
const HOST_MISMATCH: Reject = Reject::new(
    StatusCode::BAD_REQUEST,
    "Host does not match the request target",
    true,
);
const UNDERSCORE_NAME: Reject =
    Reject::new(StatusCode::BAD_REQUEST, "Invalid sticky header name", false);
const BAD_EXPECT: Reject = Reject::new(
    StatusCode::EXPECTATION_FAILED,
    "Unsupported expectation",
    false,
);
pub(crate) const BAD_LENGTH: Reject =
    Reject::new(StatusCode::BAD_REQUEST, "Invalid Content-Length", true);
const BODY_TOO_LARGE: Reject = Reject::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "Request body too large",
    true,
);

/// Checks a request head. Pure: no I/O, no allocation on success.
pub fn request(parts: &Parts, limits: &Limits) -> Result<(), Reject> {
    target(parts, limits)?;
    framing(parts)?;
    host(parts)?;
    names(&parts.headers)?;
    expect(&parts.headers)?;
    body_size(&parts.headers, limits)
}

/// Length and form of the request target.
fn target(parts: &Parts, limits: &Limits) -> Result<(), Reject> {
    let uri = &parts.uri;
    let pq = uri.path_and_query().map_or("", |p| p.as_str());
    let len = match (uri.scheme(), uri.authority()) {
        // scheme "://" authority path
        (Some(s), Some(a)) => s.as_str().len() + 3 + a.as_str().len() + pq.len(),
        (None, Some(a)) => a.as_str().len() + pq.len(),
        _ => pq.len(),
    };
    if len > limits.max_uri_bytes {
        return Err(URI_TOO_LONG);
    }
    // asterisk-form only with OPTIONS.
    if pq == "*" && parts.method != Method::OPTIONS {
        return Err(BAD_TARGET);
    }
    // authority-form only with CONNECT (refused before this anyway).
    if uri.scheme().is_none() && uri.authority().is_some() && parts.method != Method::CONNECT {
        return Err(BAD_TARGET);
    }
    // Raw bytes >= 0x80 (which `http` lets through as UTF-8) must be
    // percent-encoded; userinfo in an absolute-form target is an error.
    if !pq.is_ascii() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(BAD_TARGET);
    }
    Ok(())
}

/// `Transfer-Encoding`: only a single `chunked` is forwarded (re-chunked
/// upstream). `http1::head` refuses it on HTTP/1.0 and when `chunked` is
/// not last; the lists it lets through are checked here.
fn framing(parts: &Parts) -> Result<(), Reject> {
    let mut lines = parts.headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(line) = lines.next() else {
        return Ok(());
    };
    if parts.version < Version::HTTP_11 {
        return Err(TE_HTTP10);
    }
    if lines.next().is_some() {
        return Err(BAD_TE);
    }
    let mut codings = 0usize;
    let mut chunked = 0usize;
    let mut last_chunked = false;
    for coding in line.as_bytes().split(|&b| b == b',') {
        let coding = trim_ows(coding);
        if coding.is_empty() {
            return Err(BAD_TE);
        }
        codings += 1;
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            chunked += 1;
        }
    }
    if chunked != 1 || !last_chunked {
        return Err(BAD_TE);
    }
    if codings > 1 {
        // e.g. `gzip, chunked`: the proxy would strip the gzip layer's
        // label while forwarding its bytes.
        return Err(UNSUPPORTED_TE);
    }
    Ok(())
}

/// `Host`: required once in HTTP/1.1, a plain authority, and the same as
/// an absolute-form target's authority.
fn host(parts: &Parts) -> Result<(), Reject> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(MANY_HOSTS);
    }
    let Some(host) = host else {
        // HTTP/1.0 may omit it; HTTP/2 carries `:authority` in the URI.
        return if parts.version == Version::HTTP_11 {
            Err(NO_HOST)
        } else {
            Ok(())
        };
    };
    let Some((name, port)) = split_authority(host.as_bytes()) else {
        return Err(BAD_HOST);
    };
    if let Some(authority) = parts.uri.authority()
        && !same_authority(authority, parts.uri.scheme(), name, port)
    {
        return Err(HOST_MISMATCH);
    }
    Ok(())
}

/// Header names that must not reach the sticky logic in any spelling.
fn names(headers: &HeaderMap) -> Result<(), Reject> {
    if headers.contains_key(&X_TARGET_SERVER_UNDERSCORE)
        || headers.contains_key(&X_TARGET_SERVER_LAST_USE_UNDERSCORE)
    {
        return Err(UNDERSCORE_NAME);
    }
    Ok(())
}

/// `Expect`: only `100-continue` (any case) is understood.
fn expect(headers: &HeaderMap) -> Result<(), Reject> {
    let understood = |v: &HeaderValue| trim_ows(v.as_bytes()).eq_ignore_ascii_case(b"100-continue");
    if headers.get_all(header::EXPECT).iter().all(understood) {
        Ok(())
    } else {
        Err(BAD_EXPECT)
    }
}

/// A declared body over the limit is refused before any of it is read.
fn body_size(headers: &HeaderMap, limits: &Limits) -> Result<(), Reject> {
    let Some(max) = limits.max_body_bytes else {
        return Ok(());
    };
    for value in headers.get_all(header::CONTENT_LENGTH) {
        match digits(value.as_bytes()) {
            Some(len) if len > max => return Err(BODY_TOO_LARGE),
            Some(_) => {}
            None => return Err(BAD_LENGTH),
        }
    }
    Ok(())
}

/// 1*DIGIT as u64; `None` on anything else or overflow.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Splits a `Host` value into host and optional port, or `None` when it
/// is not a plain `uri-host [ ":" port ]` (empty, userinfo, path, spaces,
/// backslashes, controls, non-ASCII...).
fn split_authority(value: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (name, rest) = if value.first() == Some(&b'[') {
        // IP-literal: "[" ( IPv6address / IPvFuture ) "]"
        let end = value.iter().position(|&b| b == b']')?;
        let inner = &value[1..end];
        if inner.is_empty()
            || !inner.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-' | b'_' | b'~')
            })
        {
            return None;
        }
        value.split_at(end + 1)
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let (name, rest) = value.split_at(end);
        if name.is_empty() || !name.iter().all(|&b| is_reg_name_byte(b)) {
            return None;
        }
        (name, rest)
    };
    let port = match rest {
        [] => None,
        [b':', port @ ..] if (1..=5).contains(&port.len()) => {
            Some(u16::try_from(digits(port)?).ok()?)
        }
        _ => return None,
    };
    Some((name, port))
}

/// unreserved / pct-encoded / sub-delims (RFC 3986 reg-name).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// Case-insensitive host and port comparison, a missing port meaning the
/// scheme's default.
fn same_authority(
    authority: &Authority,
    scheme: Option<&Scheme>,
    host: &[u8],
    port: Option<u16>,
) -> bool {
    let default = if scheme == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    authority.host().as_bytes().eq_ignore_ascii_case(host)
        && authority.port_u16().unwrap_or(default) == port.unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, version: Version, headers: &[(&str, &[u8])]) -> Parts {
        let mut b = http::Request::builder()
            .method(method)
            .uri(uri)
            .version(version);
        for (k, v) in headers {
            b = b.header(*k, HeaderValue::from_bytes(v).expect("value"));
        }
        b.body(()).expect("request").into_parts().0
    }

    fn check(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Result<(), Reject> {
        let limits = Limits {
            max_body_bytes: Some(100),
            max_uri_bytes: 64,
            ..Limits::default()
        };
        request(&parts(method, uri, Version::HTTP_11, headers), &limits)
    }

    fn status(r: Result<(), Reject>) -> u16 {
        r.map_or_else(|e| e.status.as_u16(), |()| 200)
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(check("GET", "/", &[("host", b"a.example")]), Ok(()));
        assert_eq!(check("GET", "/", &[("host", b"A.example:8080")]), Ok(()));
        assert_eq!(check("GET", "/", &[("host", b"[::1]:80")]), Ok(()));
        assert_eq!(check("OPTIONS", "*", &[("host", b"a")]), Ok(()));
        let h10 = parts("GET", "/", Version::HTTP_10, &[]);
        assert_eq!(request(&h10, &Limits::default()), Ok(()));
        let h2 = parts("GET", "http://a.example/", Version::HTTP_2, &[]);
        assert_eq!(request(&h2, &Limits::default()), Ok(()));
    }

    #[test]
    fn target_rules() {
        let long = format!("/{}", "a".repeat(64));
        assert_eq!(status(check("GET", &long, &[("host", b"a")])), 414);
        assert_eq!(status(check("GET", "*", &[("host", b"a")])), 400);
        assert_eq!(status(check("GET", "a.example:80", &[("host", b"a")])), 400);
        assert_eq!(status(check("GET", "/caf%C3%A9", &[("host", b"a")])), 200);
    }

    #[test]
    fn host_rules() {
        assert_eq!(check("GET", "/", &[]), Err(NO_HOST));
        assert_eq!(
            check("GET", "/", &[("host", b"a"), ("host", b"a")]),
            Err(MANY_HOSTS)
        );
        for bad in [
            &b""[..],
            b"a b",
            b"u@a",
            b"a/b",
            b"a\\b",
            b"a:",
            b"a:x",
            b"a:99999",
            b"[]",
            b":80",
            b"\xffa",
        ] {
            assert_eq!(
                check("GET", "/", &[("host", bad)]),
                Err(BAD_HOST),
                "{bad:?}"
            );
        }
        assert_eq!(
            check("GET", "http://a.example/p", &[("host", b"b.example")]),
            Err(HOST_MISMATCH)
        );
        assert_eq!(
            check("GET", "http://a.example/p", &[("host", b"A.EXAMPLE:80")]),
            Ok(())
        );
        assert_eq!(
            check("GET", "http://a.example:8080/p", &[("host", b"a.example")]),
            Err(HOST_MISMATCH)
        );
    }

    #[test]
    fn framing_rules() {
        let te = |v: &'static [u8]| check("POST", "/", &[("host", b"a"), ("transfer-encoding", v)]);
        assert_eq!(te(b"chunked"), Ok(()));
        assert_eq!(te(b"Chunked"), Ok(()));
        assert_eq!(te(b"chunked, chunked"), Err(BAD_TE));
        assert_eq!(te(b",chunked"), Err(BAD_TE));
        assert_eq!(te(b"gzip"), Err(BAD_TE));
        assert_eq!(te(b"gzip, chunked"), Err(UNSUPPORTED_TE));
        let two = check(
            "POST",
            "/",
            &[
                ("host", b"a"),
                ("transfer-encoding", b"chunked"),
                ("transfer-encoding", b"chunked"),
            ],
        );
        assert_eq!(two, Err(BAD_TE));
        let h10 = parts(
            "POST",
            "/",
            Version::HTTP_10,
            &[("transfer-encoding", b"chunked")],
        );
        assert_eq!(request(&h10, &Limits::default()), Err(TE_HTTP10));
    }

    #[test]
    fn header_rules() {
        let h = |k: &'static str, v: &'static [u8]| check("POST", "/", &[("host", b"a"), (k, v)]);
        assert_eq!(h("x_target_server", b"app-1"), Err(UNDERSCORE_NAME));
        assert_eq!(h("x_target_server_last_use", b"1"), Err(UNDERSCORE_NAME));
        assert_eq!(h("expect", b"100-Continue"), Ok(()));
        assert_eq!(h("expect", b"foo"), Err(BAD_EXPECT));
        assert_eq!(h("content-length", b"100"), Ok(()));
        assert_eq!(h("content-length", b"101"), Err(BODY_TOO_LARGE));
    }
}
