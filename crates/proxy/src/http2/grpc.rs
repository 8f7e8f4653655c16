//! gRPC's rules on the way through: which requests are gRPC calls, how
//! long their caller waits (`grpc-timeout`), and the proxy's own answers
//! as gRPC statuses.
//!
//! A gRPC client cannot read the proxy's JSON errors: it sees an HTTP
//! status and no `grpc-status`, and reports a protocol error. So every
//! answer the proxy makes itself for a gRPC call (no healthy target,
//! connect failure, timeout, a limit) is a trailers-only gRPC answer:
//! HTTP 200, `content-type: application/grpc`, `grpc-status` and
//! `grpc-message`, no body.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// gRPC status codes the proxy answers with.
pub const INTERNAL: u8 = 13;
pub const UNAVAILABLE: u8 = 14;
pub const DEADLINE_EXCEEDED: u8 = 4;
pub const RESOURCE_EXHAUSTED: u8 = 8;
pub const UNIMPLEMENTED: u8 = 12;
pub const UNAUTHENTICATED: u8 = 16;
pub const PERMISSION_DENIED: u8 = 7;
pub const UNKNOWN: u8 = 2;

/// Marks a response the proxy made itself (`crate::respond`), so that a
/// gRPC call's can be turned into a gRPC status ([`answer`]).
#[derive(Clone, Copy, Debug)]
pub struct Local;

/// Whether the request is a gRPC call: `content-type: application/grpc`,
/// alone or with a `+format` or parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_type(v.as_bytes()))
}

fn is_grpc_type(v: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    v.len() >= GRPC.len()
        && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(v.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The caller's deadline (`grpc-timeout`: at most 8 digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`); `None` when absent or malformed.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for a proxy answer with HTTP `status`.
pub fn code_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        502 | 503 => UNAVAILABLE,
        504 | 408 => DEADLINE_EXCEEDED,
        429 | 413 | 414 | 431 => RESOURCE_EXHAUSTED,
        404 | 405 | 501 => UNIMPLEMENTED,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        400 => INTERNAL,
        _ => UNKNOWN,
    }
}

/// `grpc-status` and `grpc-message` as a header block (trailers).
/// `message` is the proxy's fixed ASCII text, which needs no
/// percent-encoding.
pub fn status_trailers(code: u8, message: &'static str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(2);
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(u16::from(code)));
    h.insert(GRPC_MESSAGE.clone(), HeaderValue::from_static(message));
    h
}

/// A trailers-only gRPC answer: HTTP 200, the status in the head, no
/// body.
pub fn status_response(code: u8, message: &'static str) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::empty());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, APPLICATION_GRPC.clone());
    h.extend(status_trailers(code, message));
    res
}

/// `res` for a gRPC call: the proxy's own answers (marked [`Local`])
/// become gRPC statuses; the targets' pass as they are.
pub fn answer(res: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(&Local) = res.extensions().get::<Local>() else {
        return res;
    };
    let status = res.status();
    let message = res
        .extensions()
        .get::<Message>()
        .map_or("proxy error", |m| m.0);
    let mut out = status_response(code_for(status), message);
    // `Retry-After` says when to come back; `Connection: close` that the
    // client's connection is not to be trusted further (an HTTP/1 framing
    // error): both stay.
    for name in [header::RETRY_AFTER, header::CONNECTION] {
        if let Some(v) = res.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// The fixed text of a proxy answer, kept beside its JSON body for
/// [`answer`].
#[derive(Clone, Copy, Debug)]
pub struct Message(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body;

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc_type(yes.as_bytes()), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc_type(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn grpc_timeouts() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(&GRPC_TIMEOUT, HeaderValue::from_str(v).expect("value"));
            timeout(&h)
        };
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn the_proxys_answers_become_statuses() {
        let made = crate::respond::no_healthy_targets();
        let res = answer(made);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(res.headers()[&GRPC_STATUS], "14");
        assert_eq!(res.headers()[&GRPC_MESSAGE], "No healthy servers available");
        assert!(res.body().is_end_stream());
        for (status, code) in [
            (StatusCode::BAD_GATEWAY, UNAVAILABLE),
            (StatusCode::GATEWAY_TIMEOUT, DEADLINE_EXCEEDED),
            (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED),
            (StatusCode::METHOD_NOT_ALLOWED, UNIMPLEMENTED),
            (StatusCode::BAD_REQUEST, INTERNAL),
        ] {
            let res = answer(crate::respond::error_response(status, "x"));
            assert_eq!(res.headers()[&GRPC_STATUS], code.to_string().as_str());
        }
        // The close of a connection in doubt is kept.
        let closing = answer(crate::respond::rejection(crate::validate::Reject {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: "Request body too large",
            close: true,
        }));
        assert_eq!(closing.headers()[&GRPC_STATUS], "8");
        assert_eq!(closing.headers()[header::CONNECTION], "close");
        // A target's own answer passes untouched.
        let mut theirs = Response::new(ProxyBody::empty());
        *theirs.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(answer(theirs).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
