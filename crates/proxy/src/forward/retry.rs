//! What to do after an attempt fails, decided apart from doing it.
//!
//! [`decide`] is a pure function of where the attempt failed ([`Kind`]),
//! whether the request may go again, the retries left and whether the
//! one free resend was used: the whole policy, testable as a table. The
//! request path does what it says (count, log, resend, answer).
//!
//! [`Failure`] is the typed failure the policy reads, made from
//! `upstream`'s errors in one place ([`Failure::from_upstream`]).

use http::request::Parts;
use http::{Request, Response, StatusCode};

use crate::body::{BodyError, ProxyBody};
use crate::http1::client::Failed;
use crate::respond::{error_response, rejection};
use crate::upstream::ConnectError;
use crate::validate::Reject;

/// Where an attempt failed, as the retry policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Nothing reached the target (no connection, or a write that moved
    /// no byte): the request is untouched.
    NotSent,
    /// Sent (perhaps partly) on a pooled connection, then the exchange
    /// failed: perhaps the backend closing an idle connection just as the
    /// request went out (the keep-alive race).
    SentReused,
    /// Sent (perhaps partly) on a new connection, then the exchange failed.
    SentFresh,
    /// The client's request body broke the proxy's rules.
    Body(BodyError),
    /// The response head did not come in time.
    Timeout,
}

impl Kind {
    /// Whether the failure counts against the target (passive health); a
    /// broken client body does not.
    pub(super) fn blames_target(self) -> bool {
        !matches!(self, Kind::Body(_))
    }
}

/// The policy's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Send again on a new connection to the same target: a reused
    /// connection died under the request, which is the backend closing an
    /// idle connection, not the backend failing. Costs no retry.
    ResendFresh,
    /// Try another target (one retry).
    TryAnother,
    /// Stop and answer the client.
    Answer(Answer),
}

/// The proxy's own answers to a failed forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// `502`: the target failed and nothing else can be tried.
    BadGateway,
    /// `504`: no response head within `response_timeout`.
    GatewayTimeout,
    /// `413`: the request body grew past `max_body_bytes`.
    BodyTooLarge,
    /// `400`: the request body broke its framing.
    BadBody,
    /// `408`: the request body stalled.
    BodyTimeout,
}

/// The retry policy.
///
/// `replayable`: the request may be sent again after a failed send (RFC
/// 9112 section 9.3.1: idempotent, without a body, not an upgrade, and its
/// head came back from the exchange). A request that was not sent at all
/// goes to another target whatever its method and body. `fresh_used`: this
/// target already had its free resend on a new connection.
pub(super) fn decide(
    kind: Kind,
    replayable: bool,
    retries_left: u32,
    fresh_used: bool,
) -> Decision {
    match kind {
        Kind::Body(BodyError::TooLarge) => Decision::Answer(Answer::BodyTooLarge),
        Kind::Body(BodyError::Malformed) => Decision::Answer(Answer::BadBody),
        Kind::Body(BodyError::Stalled) => Decision::Answer(Answer::BodyTimeout),
        Kind::Timeout => Decision::Answer(Answer::GatewayTimeout),
        Kind::SentReused if replayable && !fresh_used => Decision::ResendFresh,
        Kind::SentReused | Kind::SentFresh if !replayable => Decision::Answer(Answer::BadGateway),
        Kind::NotSent | Kind::SentReused | Kind::SentFresh if retries_left == 0 => {
            Decision::Answer(Answer::BadGateway)
        }
        Kind::NotSent | Kind::SentReused | Kind::SentFresh => Decision::TryAnother,
    }
}

impl Answer {
    pub(super) fn response(self) -> Response<ProxyBody> {
        let body = |status, message| {
            rejection(Reject {
                status,
                message,
                close: true,
            })
        };
        match self {
            Answer::BadGateway => error_response(StatusCode::BAD_GATEWAY, "Bad gateway"),
            Answer::GatewayTimeout => {
                error_response(StatusCode::GATEWAY_TIMEOUT, "Gateway timeout")
            }
            Answer::BodyTooLarge => body(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
            Answer::BadBody => body(StatusCode::BAD_REQUEST, "Invalid request body"),
            Answer::BodyTimeout => body(StatusCode::REQUEST_TIMEOUT, "Request body timeout"),
        }
    }
}

// === impl Failure ===

/// Why an attempt produced no response.
pub(super) enum Failure {
    /// Nothing reached the target; the request comes back untouched
    /// (boxed: failures are rare, and the result stays small).
    NotSent(Box<Request<ProxyBody>>, Reason),
    /// The request was (perhaps partly) written, then the exchange failed.
    /// `reused`: on a pooled connection. `head`: a bodyless request's
    /// head, to send again where that is safe.
    Sent {
        reused: bool,
        reason: Reason,
        head: Option<Box<Parts>>,
    },
    /// The client's request body broke the proxy's rules (not the
    /// target's fault).
    Body(BodyError),
    /// The response head did not come in time.
    Timeout,
}

/// What the log says about a failed attempt; the policy never reads it.
///
/// `upstream` says why in words (`ConnectError`, `Failed`); they are moved
/// here, not copied, and printed as they came.
#[derive(Debug)]
pub(super) enum Reason {
    /// No connection could be had: resolve, connect, TLS or the connect
    /// timeout.
    Connect(ConnectError),
    /// Writing the request, or reading or parsing the answer, failed.
    Exchange(String),
}

/// `upstream`'s errors as they reach the request path.
pub(super) enum Upstream {
    /// Connecting failed; the request was never handed over (boxed as
    /// `Failure::NotSent` keeps it).
    Connect(ConnectError, Box<Request<ProxyBody>>),
    /// The exchange on a connection failed.
    Exchange(Failed),
}

impl Failure {
    /// The boundary: the one place `upstream`'s errors are read. `reused`:
    /// the exchange ran on a pooled connection.
    pub(super) fn from_upstream(error: Upstream, reused: bool) -> Failure {
        match error {
            Upstream::Connect(e, req) => Failure::NotSent(req, Reason::Connect(e)),
            Upstream::Exchange(Failed::NotSent(req, e)) => {
                Failure::NotSent(req, Reason::Exchange(e))
            }
            Upstream::Exchange(Failed::Sent { error, head }) => Failure::Sent {
                reused,
                reason: Reason::Exchange(error),
                head,
            },
            Upstream::Exchange(Failed::Body(e)) => Failure::Body(e),
            Upstream::Exchange(Failed::Timeout) => Failure::Timeout,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Failure::NotSent(..) => Kind::NotSent,
            Failure::Sent { reused: true, .. } => Kind::SentReused,
            Failure::Sent { reused: false, .. } => Kind::SentFresh,
            Failure::Body(e) => Kind::Body(*e),
            Failure::Timeout => Kind::Timeout,
        }
    }

    /// Whether a request that was sent can be again: `replayable` as the
    /// request path judged it, and its head came back.
    pub(super) fn replayable(&self, replayable: bool) -> bool {
        match self {
            Failure::Sent { head, .. } => replayable && head.is_some(),
            _ => replayable,
        }
    }

    /// The request to send again, if there is one: whole when it was not
    /// sent, a bodyless request's head when it was.
    pub(super) fn into_request(self) -> Option<Request<ProxyBody>> {
        match self {
            Failure::NotSent(req, _) => Some(*req),
            Failure::Sent { head, .. } => {
                head.map(|head| Request::from_parts(*head, ProxyBody::empty()))
            }
            Failure::Body(_) | Failure::Timeout => None,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Connect(e) => f.write_str(&e.0),
            Reason::Exchange(words) => f.write_str(words),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Answer::*;
    use Decision::{Answer as A, ResendFresh, TryAnother};
    use Kind::*;

    /// Every kind against every input that matters to it.
    #[test]
    fn the_retry_policy() {
        #[rustfmt::skip]
        let table: &[(Kind, bool, u32, bool, Decision)] = &[
            // kind, replayable, retries left, fresh used => decision
            // Not sent: the request is untouched, so any request may go
            // elsewhere while retries last.
            (NotSent, true, 1, false, TryAnother),
            (NotSent, false, 1, false, TryAnother),
            (NotSent, false, 1, true, TryAnother),
            (NotSent, true, 0, false, A(BadGateway)),
            // Sent on a reused connection: one free resend on a new
            // connection, for a replayable request, whatever the retries.
            (SentReused, true, 0, false, ResendFresh),
            (SentReused, true, 2, false, ResendFresh),
            (SentReused, true, 2, true, TryAnother),
            (SentReused, true, 0, true, A(BadGateway)),
            (SentReused, false, 2, false, A(BadGateway)),
            // Sent on a new connection: the backend failed.
            (SentFresh, true, 2, false, TryAnother),
            (SentFresh, true, 2, true, TryAnother),
            (SentFresh, true, 0, false, A(BadGateway)),
            (SentFresh, false, 2, false, A(BadGateway)),
            // The client's body: its own answer, never a retry.
            (Body(BodyError::TooLarge), true, 2, false, A(BodyTooLarge)),
            (Body(BodyError::Malformed), true, 2, false, A(BadBody)),
            (Body(BodyError::Stalled), true, 2, false, A(BodyTimeout)),
            (Body(BodyError::Stalled), false, 0, true, A(BodyTimeout)),
            // No head in time: the target may still be working on it.
            (Timeout, true, 2, false, A(GatewayTimeout)),
            (Timeout, false, 0, true, A(GatewayTimeout)),
        ];
        for &(kind, replayable, retries_left, fresh_used, want) in table {
            assert_eq!(
                decide(kind, replayable, retries_left, fresh_used),
                want,
                "{kind:?} replayable={replayable} retries_left={retries_left} fresh_used={fresh_used}"
            );
        }
    }

    #[test]
    fn only_a_broken_client_body_spares_the_target() {
        for kind in [NotSent, SentReused, SentFresh, Timeout] {
            assert!(kind.blames_target(), "{kind:?}");
        }
        for e in [
            BodyError::TooLarge,
            BodyError::Malformed,
            BodyError::Stalled,
        ] {
            assert!(!Body(e).blames_target());
        }
    }

    #[test]
    fn each_answer_has_its_status() {
        for (answer, status) in [
            (BadGateway, StatusCode::BAD_GATEWAY),
            (GatewayTimeout, StatusCode::GATEWAY_TIMEOUT),
            (BodyTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
            (BadBody, StatusCode::BAD_REQUEST),
            (BodyTimeout, StatusCode::REQUEST_TIMEOUT),
        ] {
            assert_eq!(answer.response().status(), status, "{answer:?}");
        }
    }

    #[test]
    fn a_sent_request_without_its_head_cannot_go_again() {
        let sent = |head| Failure::Sent {
            reused: true,
            reason: Reason::Exchange(String::new()),
            head,
        };
        assert!(!sent(None).replayable(true));
        let (parts, ()) = Request::new(()).into_parts();
        let with_head = sent(Some(Box::new(parts)));
        assert!(with_head.replayable(true));
        assert!(!with_head.replayable(false));
        assert_eq!(with_head.kind(), SentReused);
        assert!(with_head.into_request().is_some());
    }
}
