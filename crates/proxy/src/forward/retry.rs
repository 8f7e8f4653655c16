//! What to do after an attempt fails, decided apart from doing it.
//!
//! [`decide`] is a pure function of where the attempt failed ([`Kind`]),
//! whether the request may go again, the retries left and whether the
//! one free resend was used: the whole policy, testable as a table. The
//! request path does what it says (count, log, resend, answer).
//!
//! [`Failure`] is the typed failure the policy reads, made from
//! `upstream`'s errors in one place ([`Failure::from_upstream`]); its
//! [`Kind`] is a function of the [`upstream::Error`] it carries
//! ([`Kind::of`]).

use http::request::Parts;
use http::{Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::guard::BodyError;
use crate::http1::client::Failed;
use crate::respond::{error_response, rejection};
use crate::upstream::{self, ErrorKind};
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
    /// Where `error` left the request, as the policy sees it: before a
    /// byte was sent, after (on a pooled or a new connection), or waiting
    /// for the answer.
    pub(super) fn of(error: &upstream::Error) -> Kind {
        match error.kind() {
            ErrorKind::Dns(_)
            | ErrorKind::Connect(_)
            | ErrorKind::ConnectTimeout(_)
            | ErrorKind::Tls(_)
            | ErrorKind::NoH2
            | ErrorKind::Refused(_)
            | ErrorKind::NotSent(_) => Kind::NotSent,
            ErrorKind::Http2(_)
            | ErrorKind::PartlySent(_)
            | ErrorKind::ResetAfterSending(_)
            | ErrorKind::ClosedBeforeResponse
            | ErrorKind::StoppedReading
            | ErrorKind::BadHead(_)
            | ErrorKind::HeadTooLarge => {
                if error.reused() {
                    Kind::SentReused
                } else {
                    Kind::SentFresh
                }
            }
            ErrorKind::Timeout(_) => Kind::Timeout,
        }
    }

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
        Kind::Body(e) => Decision::Answer(body_answer(e)),
        Kind::Timeout => Decision::Answer(Answer::GatewayTimeout),
        Kind::SentReused if replayable && !fresh_used => Decision::ResendFresh,
        Kind::SentReused | Kind::SentFresh if !replayable => Decision::Answer(Answer::BadGateway),
        Kind::NotSent | Kind::SentReused | Kind::SentFresh if retries_left == 0 => {
            Decision::Answer(Answer::BadGateway)
        }
        Kind::NotSent | Kind::SentReused | Kind::SentFresh => Decision::TryAnother,
    }
}

/// The answer to a request body that broke one of the proxy's rules.
pub(super) fn body_answer(e: BodyError) -> Answer {
    match e {
        BodyError::TooLarge => Answer::BodyTooLarge,
        BodyError::Malformed => Answer::BadBody,
        BodyError::Stalled => Answer::BodyTimeout,
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

/// Why an attempt produced no response. `upstream`'s error is moved here,
/// not copied: the policy reads its kind, the log prints it.
pub(super) enum Failure {
    /// Nothing reached the target; the request comes back untouched
    /// (boxed: failures are rare, and the result stays small).
    NotSent(Box<Request<ProxyBody>>, upstream::Error),
    /// The request was (perhaps partly) written, then the exchange failed
    /// (on a pooled connection or a new one: the error says). `head`: a
    /// bodyless request's head, to send again where that is safe.
    Sent {
        reason: upstream::Error,
        head: Option<Box<Parts>>,
    },
    /// The client's request body broke the proxy's rules (not the
    /// target's fault).
    Body(BodyError),
    /// The response head did not come in time.
    Timeout(upstream::Error),
}

/// `upstream`'s errors as they reach the request path.
pub(super) enum Upstream {
    /// Connecting failed; the request was never handed over (boxed as
    /// `Failure::NotSent` keeps it).
    Connect(upstream::Error, Box<Request<ProxyBody>>),
    /// The exchange on a connection failed.
    Exchange(Failed),
}

impl Failure {
    /// The boundary: the one place `upstream`'s errors are read.
    pub(super) fn from_upstream(error: Upstream) -> Failure {
        let failure = match error {
            Upstream::Connect(e, req) | Upstream::Exchange(Failed::NotSent(req, e)) => {
                Failure::NotSent(req, e)
            }
            Upstream::Exchange(Failed::Sent { error, head }) => Failure::Sent {
                reason: error,
                head,
            },
            Upstream::Exchange(Failed::Body(e)) => Failure::Body(e),
            Upstream::Exchange(Failed::Timeout(e)) => Failure::Timeout(e),
        };
        debug_assert!(failure.consistent(), "{:?}", failure.kind());
        failure
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Failure::NotSent(_, e) | Failure::Sent { reason: e, .. } | Failure::Timeout(e) => {
                Kind::of(e)
            }
            Failure::Body(e) => Kind::Body(*e),
        }
    }

    /// Whether the variant agrees with its error's kind: a request comes
    /// back whole only when nothing of it was sent.
    fn consistent(&self) -> bool {
        match self {
            Failure::NotSent(_, e) => Kind::of(e) == Kind::NotSent,
            Failure::Sent { reason, .. } => {
                matches!(Kind::of(reason), Kind::SentReused | Kind::SentFresh)
            }
            Failure::Timeout(e) => Kind::of(e) == Kind::Timeout,
            Failure::Body(_) => true,
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
            Failure::Body(_) | Failure::Timeout(_) => None,
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
            reason: upstream::Error::new(ErrorKind::ClosedBeforeResponse, true),
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

    /// Each upstream error kind, on a new connection and a pooled one,
    /// lands where the policy expects: not sent, sent (reused or fresh),
    /// or a timeout.
    #[test]
    fn each_upstream_error_has_its_kind() {
        use crate::upstream::error_kinds;
        for reused in [false, true] {
            for (error_kind, shown) in error_kinds() {
                let debug = format!("{error_kind:?}");
                let want = match &error_kind {
                    ErrorKind::Dns(_)
                    | ErrorKind::Connect(_)
                    | ErrorKind::ConnectTimeout(_)
                    | ErrorKind::Tls(_)
                    | ErrorKind::NoH2
                    | ErrorKind::Refused(_)
                    | ErrorKind::NotSent(_) => NotSent,
                    ErrorKind::Timeout(_) => Timeout,
                    _ if reused => SentReused,
                    _ => SentFresh,
                };
                let error = upstream::Error::new(error_kind, reused);
                assert_eq!(Kind::of(&error), want, "{debug} reused={reused}");
                assert_eq!(error.not_sent(), want == NotSent, "{debug}");
                assert!(want.blames_target());
                // The failure made from it agrees, and logs what it says.
                let failure = match want {
                    NotSent => Failure::from_upstream(Upstream::Connect(
                        error,
                        Box::new(Request::new(ProxyBody::empty())),
                    )),
                    Timeout => Failure::from_upstream(Upstream::Exchange(Failed::Timeout(error))),
                    _ => Failure::from_upstream(Upstream::Exchange(Failed::Sent {
                        error,
                        head: None,
                    })),
                };
                assert_eq!(failure.kind(), want, "{debug}");
                let logged = match &failure {
                    Failure::NotSent(_, e)
                    | Failure::Sent { reason: e, .. }
                    | Failure::Timeout(e) => e.to_string(),
                    Failure::Body(_) => unreachable!(),
                };
                assert_eq!(logged, shown);
            }
        }
    }
}
