//! One body type for both directions: a client's request body, an upstream
//! response body read by the proxy's own client, or a small body the proxy
//! made itself (error answers, retried bodyless requests).
//! An enum rather than a boxed trait object, so no allocation per request.
//!
//! Streamed bodies run under a [`Guard`] (`guard.rs`, below the codecs
//! that read them).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::cancel::Reached;
use crate::guard::{BodyError, BoxError, Guard, body_error};
use crate::http1::RequestBody;
use crate::http1::client::ResponseBody;
use crate::http2::body as http2;

/// A client's request body, as the server that read the request made it.
#[derive(Debug)]
pub enum ClientBody {
    /// From hyper's server (HTTP/2).
    Hyper(Incoming),
    /// From the proxy's own HTTP/1 loop.
    H1(RequestBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
        }
    }
}

#[derive(Debug)]
pub enum ProxyBody {
    /// A client's request body, passed on as it comes.
    Stream { body: ClientBody, guard: Guard },
    /// An upstream response body; its connection goes back to the pool
    /// once the body has been read to the end (and is closed if it never
    /// is, since a half-read response cannot be reused). Dropped before
    /// then, its request counts as cancelled by the client.
    Upstream {
        body: ResponseBody,
        guard: Guard,
        reached: Reached,
    },
    /// The bytes, until they have been sent once.
    Full(Option<Bytes>),
    /// An HTTP/2 target's response body (`crate::http2`), trailers and
    /// all; `reached` as for [`ProxyBody::Upstream`].
    Http2 {
        body: http2::ResponseBody,
        guard: Guard,
        reached: Reached,
    },
    /// A request body sent again after an HTTP/2 target refused it
    /// unprocessed, or read ahead before a target was chosen: what it
    /// had, then the rest.
    Replayed(Box<http2::Replayed>),
}

impl ProxyBody {
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// Whether the whole body is in memory: writing it out waits for the
    /// client alone, never for a backend.
    pub fn is_in_hand(&self) -> bool {
        match self {
            ProxyBody::Full(_) => true,
            ProxyBody::Upstream { body, .. } => body.is_in_hand(),
            ProxyBody::Stream { body, .. } => body.is_end_stream(),
            ProxyBody::Http2 { body, .. } => body.is_end_stream(),
            ProxyBody::Replayed(body) => body.is_end_stream(),
        }
    }

    pub fn stream(body: ClientBody, guard: Guard) -> Self {
        ProxyBody::Stream { body, guard }
    }

    /// Wraps an HTTP/2 target's response body, as [`ProxyBody::upstream`].
    pub fn http2(body: http2::ResponseBody, guard: Guard, mut reached: Reached) -> Self {
        if body.is_end_stream() {
            reached.done();
        }
        ProxyBody::Http2 {
            body,
            guard,
            reached,
        }
    }

    /// Wraps an upstream response body; `reached` is disarmed once the
    /// body is done.
    pub fn upstream(body: ResponseBody, guard: Guard, mut reached: Reached) -> Self {
        if body.is_end_stream() {
            reached.done();
        }
        ProxyBody::Upstream {
            body,
            guard,
            reached,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Stream { body, guard } => match guard.poll(Pin::new(body), cx) {
                // A broken chunked framing shows only while the body
                // streams; tell it apart from an upstream failure.
                Poll::Ready(Some(Err(e))) if body_error(e.as_ref()).is_none() => {
                    Poll::Ready(Some(Err(BodyError::Malformed.into())))
                }
                polled => polled,
            },
            ProxyBody::Upstream {
                body,
                guard,
                reached,
            } => {
                let polled = guard.poll(Pin::new(&mut *body), cx);
                // Read to the end, or failed on the backend's side (or
                // stalled there): not the client's doing.
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) || body.is_end_stream() {
                    reached.done();
                }
                polled
            }
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Http2 {
                body,
                guard,
                reached,
            } => {
                let polled = guard.poll(Pin::new(&mut *body), cx);
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) || body.is_end_stream() {
                    reached.done();
                }
                polled
            }
            ProxyBody::Replayed(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream { body, .. } => body.is_end_stream(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Http2 { body, .. } => body.is_end_stream(),
            ProxyBody::Replayed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream { body, .. } => body.size_hint(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Http2 { body, .. } => body.size_hint(),
            ProxyBody::Replayed(body) => body.size_hint(),
        }
    }
}
