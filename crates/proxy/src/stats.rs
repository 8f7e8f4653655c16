//! What the proxy counts for `/metrics`: per member (kept in the routing
//! table beside the member, so the request path bumps an atomic it already
//! holds a reference to, with no lock and no map) and per proxy.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use http::StatusCode;
use tether_daemon::metrics::{Counter, Gauge, Histogram};

/// Status classes, `1xx` to `5xx`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`CLASSES`] for `status`.
pub fn class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// One member's counters; survive table rebuilds while the member (same
/// name and url) stays in the pool.
#[derive(Debug, Default)]
pub struct MemberStats {
    /// Responses by status class, whether the member or the proxy (502,
    /// 504 on its behalf) produced them.
    pub responses: [Counter; 5],
    pub connect_failures: Counter,
    pub ejections: Counter,
    /// Requests that reached the member and were abandoned by their client
    /// (it left, reset the stream, or took no bytes for `send_timeout`)
    /// before the answer was done.
    pub cancelled: Counter,
    /// Epoch ms of the last response, for the status page.
    pub last_response_ms: AtomicU64,
    /// Requests the member has whose answer is not done: least request
    /// balances by it. Only `cancel::Reached` moves it, so every request
    /// counted in is counted out.
    in_flight: AtomicU32,
}

impl MemberStats {
    pub fn responded(&self, status: StatusCode, now_ms: u64) {
        self.responses[class(status)].inc();
        self.last_response_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Requests sent to the member whose answer is not done yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request goes to the member (see `cancel::Reached`).
    pub(crate) fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Its answer is done, failed, or abandoned.
    pub(crate) fn end_request(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a request ended that never began");
    }

    pub fn errors(&self) -> u64 {
        self.responses[4].get()
    }

    pub fn requests(&self) -> u64 {
        self.responses.iter().map(Counter::get).sum()
    }
}

/// What became of a request's sticky claim (headers or cookie); the
/// `result` label of `tether_sticky_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StickyResult {
    /// Sent to the member it named.
    Honoured,
    /// Well formed (and, if signed, verified), but stale (unsigned
    /// headers), not a member, or that member is down.
    Ignored,
    /// Present but unparsable; with `sign_headers`, also an unsigned
    /// header hint.
    Invalid,
    /// Signed, but the mac does not match: a changed name or time, or a
    /// made-up value.
    Tampered,
    /// Signed and intact, but the signed time is outside the window (or
    /// more than 5 s ahead).
    Expired,
    /// Signed with a key id none of `sticky.keys` has.
    UnknownKey,
}

impl StickyResult {
    pub const ALL: [StickyResult; 6] = [
        StickyResult::Honoured,
        StickyResult::Ignored,
        StickyResult::Invalid,
        StickyResult::Tampered,
        StickyResult::Expired,
        StickyResult::UnknownKey,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StickyResult::Honoured => "honoured",
            StickyResult::Ignored => "ignored",
            StickyResult::Invalid => "invalid",
            StickyResult::Tampered => "tampered",
            StickyResult::Expired => "expired",
            StickyResult::UnknownKey => "unknown_key",
        }
    }
}

/// Why the proxy sent an HTTP/2 GOAWAY; the `reason` label of
/// `tether_goaways_total`. The protocol's error codes where the client
/// broke a rule, the proxy's own reasons where it chose to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goaway {
    /// The drain at shutdown (NO_ERROR).
    Drain,
    /// Every stream of the connection took no bytes for `send_timeout`.
    SendTimeout,
    /// The connection is over `[limits] client_connections` (NO_ERROR).
    ClientLimit,
    /// Abuse: too many resets (Rapid Reset) and the like.
    EnhanceYourCalm,
    Protocol,
    FlowControl,
    FrameSize,
    /// A header block the decoder refused (HPACK).
    Compression,
    Other,
}

impl Goaway {
    pub const ALL: [Goaway; 9] = [
        Goaway::Drain,
        Goaway::SendTimeout,
        Goaway::ClientLimit,
        Goaway::EnhanceYourCalm,
        Goaway::Protocol,
        Goaway::FlowControl,
        Goaway::FrameSize,
        Goaway::Compression,
        Goaway::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Goaway::Drain => "drain",
            Goaway::SendTimeout => "send_timeout",
            Goaway::ClientLimit => "client_connections",
            Goaway::EnhanceYourCalm => "enhance_your_calm",
            Goaway::Protocol => "protocol_error",
            Goaway::FlowControl => "flow_control_error",
            Goaway::FrameSize => "frame_size_error",
            Goaway::Compression => "compression_error",
            Goaway::Other => "other",
        }
    }
}

/// The proxy's own counters.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Time to the response head, every request.
    pub request_duration: Histogram,
    /// Responses the proxy gave without a member (rejections, 503).
    pub local_responses: [Counter; 5],
    pub retries: Counter,
    pub sticky: [Counter; StickyResult::ALL.len()],
    pub open_connections: Gauge,
    /// Routing tables the feed built from a changed merge.
    pub health_updates: Counter,
    /// Subscriptions opened after each checker's first.
    pub health_stream_reconnects: Counter,
    pub goaways: [Counter; Goaway::ALL.len()],
    /// Checkers whose stream is up and which are not impaired.
    pub checkers_live: Gauge,
    /// Connections and requests refused by `[limits]`, by
    /// [`crate::limits::Limit`].
    pub limited: [Counter; crate::limits::Limit::ALL.len()],
    /// Clients the per-client limits table holds.
    pub limit_clients: Gauge,
    /// Set once the first health round is known (see `feed`): until then
    /// requests get 503 and `/readyz` says not ready.
    pub settled: AtomicBool,
}

impl ProxyStats {
    pub fn sticky(&self, result: StickyResult) {
        self.sticky[result as usize].inc();
    }

    pub fn goaway(&self, reason: Goaway) {
        self.goaways[reason as usize].inc();
    }

    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(CLASSES[class(StatusCode::OK)], "2xx");
        assert_eq!(CLASSES[class(StatusCode::SWITCHING_PROTOCOLS)], "1xx");
        assert_eq!(CLASSES[class(StatusCode::GATEWAY_TIMEOUT)], "5xx");
        assert_eq!(CLASSES[class(StatusCode::NOT_FOUND)], "4xx");
    }

    #[test]
    fn goaway_reasons_index_their_counters() {
        for (i, r) in Goaway::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }

    #[test]
    fn sticky_results_index_their_counters() {
        for (i, r) in StickyResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
