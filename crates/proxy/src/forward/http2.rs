//! The request path's arm for `protocol = "h2" | "h2c"` targets: the
//! attempt through `crate::http2::client`, its failure as the retry
//! policy reads it, and the answer going back.

use http::{Request, Response};

use super::retry::{self, Failure};
use super::{Attempt, Proxy, rewrite};
use crate::body::ProxyBody;
use crate::cancel::Reached;
use crate::config::Settings;
use crate::guard::{Guard, Pace};
use crate::headers::Peer;
use crate::http2::body::ResponseBody;
use crate::http2::{Protocol, grpc};
use crate::table::Upstream;

/// The pace a request body must keep. A gRPC stream may be quiet far
/// longer than an HTTP body (a watch, a subscription): it has none. HTTP/2
/// PINGs find a dead target, `send_timeout` a client that stopped reading,
/// and the caller's deadline bounds the call.
pub(super) fn request_pace(s: &Settings, grpc: bool) -> Pace {
    if grpc {
        Pace::Unbounded
    } else {
        s.request_pace
    }
}

/// The pace an answer's body must keep: `body_timeout`'s inactivity rule
/// (a backend may stream events slowly), none for a gRPC stream.
pub(super) fn response_pace(s: &Settings, grpc: bool) -> Pace {
    if grpc {
        Pace::Unbounded
    } else {
        Pace::idle(s.body_timeout)
    }
}

impl Proxy {
    /// One attempt at an HTTP/2 target. The response head is awaited for
    /// `response_timeout`, or a gRPC caller's shorter `grpc-timeout`.
    pub(super) async fn exchange_h2(
        &self,
        s: &Settings,
        req: Request<ProxyBody>,
        upstream: &Upstream,
        protocol: Protocol,
        fresh_only: bool,
        grpc: bool,
    ) -> Result<(Response<ResponseBody>, Reached), Failure> {
        let wait = match grpc.then(|| grpc::timeout(req.headers())).flatten() {
            Some(deadline) => deadline.min(s.response_timeout),
            None => s.response_timeout,
        };
        self.h2
            .exchange(
                &self.connector,
                s,
                req,
                upstream,
                protocol,
                fresh_only,
                grpc,
                wait,
            )
            .await
            .map_err(|failed| Failure::from_upstream(retry::Upstream::Exchange(failed)))
    }

    /// The target answered: as `answer` does for HTTP/1 targets (no
    /// upgrades over HTTP/2).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_h2(
        &self,
        res: Response<ResponseBody>,
        reached: Reached,
        attempt: &Attempt,
        s: &Settings,
        peer: &Peer,
        now_ms: u64,
        grpc: bool,
    ) -> Response<ProxyBody> {
        attempt.upstream.passive.success();
        let guard = Guard::new(response_pace(s, grpc), None);
        let mut res = res.map(|b| ProxyBody::http2(b, guard, reached));
        // The client's connection says its own version.
        *res.version_mut() = http::Version::HTTP_11;
        rewrite::response(res, &attempt.upstream, s, peer.is_tls(), now_ms)
    }
}
