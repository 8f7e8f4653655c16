//! The proxy's own answers: short JSON errors with fixed text, never an
//! internal address (those go to the `proxy` log).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::http2::grpc;
use crate::validate::Reject;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static RETRY_AFTER_1: HeaderValue = HeaderValue::from_static("1");
static CLOSE: HeaderValue = HeaderValue::from_static("close");

/// The answer to a refused request; `Connection: close` when the framing
/// or the peer is in doubt, which makes hyper close after writing it.
pub fn rejection(reject: Reject) -> Response<ProxyBody> {
    let mut res = error_response(reject.status, reject.message);
    if reject.close {
        res.headers_mut().insert(header::CONNECTION, CLOSE.clone());
    }
    res
}

/// `503` with `Retry-After: 1` and the JSON body DESIGN fixes.
pub fn no_healthy_targets() -> Response<ProxyBody> {
    let mut res = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "No healthy servers available",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, RETRY_AFTER_1.clone());
    res
}

/// A short JSON error. The message is fixed text: it never carries an
/// upstream address (those go to the `proxy` log). Marked as the proxy's
/// own, so that a gRPC call gets it as a gRPC status instead
/// (`crate::http2::grpc::answer`).
pub fn error_response(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let body = Bytes::from(format!("{{\"error\":\"{message}\"}}"));
    let mut res = Response::new(ProxyBody::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, JSON.clone());
    res.extensions_mut().insert(grpc::Local);
    res.extensions_mut().insert(grpc::Message(message));
    res
}
