//! The bodies that cross an HTTP/2 target's connection.
//!
//! [`Outgoing`]: a request body on its way to the target, with a copy of
//! what was sent kept until the target answers (at most [`KEEP_BYTES`]).
//! A target that did not process the stream (`REFUSED_STREAM`, or a
//! GOAWAY below it) has taken nothing, so the request goes to another
//! target as a connect failure's does: what was sent, then the rest
//! ([`Replayed`]). A gRPC call's request is a few messages, so it almost
//! always fits.
//!
//! [`ResponseBody`]: the target's answer, trailers and all; it holds the
//! connection's stream slot until it is done or dropped (dropping it
//! resets the stream upstream: a client that went away cancels the call).
//! A gRPC answer the target broke off (a reset, a lost connection) ends
//! with `grpc-status: 14` (UNAVAILABLE) in trailers, as a gRPC client
//! expects, rather than a reset of its own stream.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::client::Slot;
use super::grpc;
use crate::body::ProxyBody;
use crate::guard::{BodyError, BoxError, body_error};

/// What a request body may have sent and still be sent again elsewhere.
pub const KEEP_BYTES: usize = 64 * 1024;

/// A frame of a request body, kept to be sent again.
#[derive(Debug)]
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Kept {
    fn frame(self) -> Frame<Bytes> {
        match self {
            Kept::Data(b) => Frame::data(b),
            Kept::Trailers(t) => Frame::trailers(t),
        }
    }
}

#[derive(Debug)]
struct Sending {
    /// `None` once taken back.
    body: Option<ProxyBody>,
    /// Every frame handed to the connection, while `keeping`.
    sent: Vec<Kept>,
    sent_bytes: usize,
    /// Still copying: no answer yet, and all that was sent is in `sent`.
    keeping: bool,
    /// The proxy's own rule the body broke (too large, stalled, broken).
    failed: Option<BodyError>,
}

/// A request body handed to an HTTP/2 connection (see the module doc).
#[derive(Clone)]
pub struct Outgoing {
    shared: Arc<Mutex<Sending>>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outgoing")
    }
}

impl Outgoing {
    pub fn new(body: ProxyBody) -> Outgoing {
        Outgoing {
            shared: Arc::new(Mutex::new(Sending {
                body: Some(body),
                sent: Vec::new(),
                sent_bytes: 0,
                keeping: true,
                failed: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sending> {
        // A panic while holding it leaves plain data; keep going.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target answered: nothing will be sent again.
    pub fn answered(&self) {
        let mut s = self.lock();
        s.keeping = false;
        s.sent = Vec::new();
    }

    /// The proxy's rule the body broke, if it broke one.
    pub fn failed(&self) -> Option<BodyError> {
        self.lock().failed
    }

    /// The body to send elsewhere: what was sent, then the rest. `None`
    /// when more was sent than was kept (or it was taken already).
    pub fn take_back(&self) -> Option<ProxyBody> {
        let mut s = self.lock();
        if !s.keeping {
            return None;
        }
        let rest = s.body.take()?;
        let sent = std::mem::take(&mut s.sent);
        if sent.is_empty() {
            return Some(rest);
        }
        Some(ProxyBody::Replayed(Box::new(Replayed {
            sent: sent.into(),
            rest,
        })))
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(body) = s.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if s.keeping => {
                let kept = if let Some(data) = frame.data_ref() {
                    s.sent_bytes += data.len();
                    Kept::Data(data.clone())
                } else if let Some(trailers) = frame.trailers_ref() {
                    Kept::Trailers(trailers.clone())
                } else {
                    return polled;
                };
                if s.sent_bytes > KEEP_BYTES {
                    s.keeping = false;
                    s.sent = Vec::new();
                } else {
                    s.sent.push(kept);
                }
            }
            Poll::Ready(Some(Err(e))) => s.failed = body_error(e.as_ref()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.lock().body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.lock()
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A request body sent again: the frames the refusing target had, then
/// the rest of the client's body. Also a body read ahead: its first
/// frames, then the rest.
#[derive(Debug)]
pub struct Replayed {
    sent: VecDeque<Kept>,
    rest: ProxyBody,
}

impl Replayed {
    /// A body read ahead before a target was chosen (`forward`): `data`,
    /// the `trailers` if they came, then the rest of the client's body.
    pub fn ahead(data: Vec<Bytes>, trailers: Option<HeaderMap>, rest: ProxyBody) -> Replayed {
        let mut sent: VecDeque<Kept> = data.into_iter().map(Kept::Data).collect();
        sent.extend(trailers.map(Kept::Trailers));
        Replayed { sent, rest }
    }
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(kept) = this.sent.pop_front() {
            return Poll::Ready(Some(Ok(kept.frame())));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.sent.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let kept: u64 = self
            .sent
            .iter()
            .map(|k| match k {
                Kept::Data(b) => b.len() as u64,
                Kept::Trailers(_) => 0,
            })
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(kept));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(kept));
        }
        hint
    }
}

/// An HTTP/2 target's response body (see the module doc).
#[derive(Debug)]
pub struct ResponseBody {
    body: Incoming,
    /// For a gRPC call: end a broken answer with UNAVAILABLE.
    grpc: bool,
    /// Set once the body ended (or was ended with a status).
    done: bool,
    /// The connection's stream slot, freed with the body.
    _slot: Slot,
}

impl ResponseBody {
    pub(super) fn new(body: Incoming, grpc: bool, slot: Slot) -> ResponseBody {
        let done = body.is_end_stream();
        ResponseBody {
            body,
            grpc,
            done,
            _slot: slot,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) if this.grpc => {
                log::debug!(target: "proxy", "gRPC answer broken off upstream: {e}");
                this.done = true;
                let status = grpc::status_trailers(grpc::UNAVAILABLE, "upstream stream ended");
                Poll::Ready(Some(Ok(Frame::trailers(status))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            polled => polled.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
