//! One body type for both directions: a streamed hyper body, or a small
//! body the proxy made itself (error answers, retried bodyless requests).
//! An enum rather than a boxed trait object, so no allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::Authority;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::upstream::{self, Sender};

#[derive(Debug)]
pub enum ProxyBody {
    Stream(Incoming),
    /// An upstream response body; its connection goes back to the pool
    /// once the body has been read to the end (and is closed if it never
    /// is, since a half-read response cannot be reused).
    Upstream {
        body: Incoming,
        conn: Option<(Authority, Sender)>,
    },
    /// The bytes, until they have been sent once.
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// Wraps an upstream response body. A body that is already complete
    /// (no content) returns its connection at once: hyper may never poll it.
    pub fn upstream(body: Incoming, authority: Authority, sender: Sender) -> Self {
        if body.is_end_stream() {
            upstream::checkin(authority, sender);
            return ProxyBody::Upstream { body, conn: None };
        }
        ProxyBody::Upstream {
            body,
            conn: Some((authority, sender)),
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A complete upstream body whose end was never polled still frees
        // its connection for reuse; an incomplete one closes it.
        if let ProxyBody::Upstream { body, conn } = self
            && body.is_end_stream()
            && let Some((authority, sender)) = conn.take()
        {
            upstream::checkin(authority, sender);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Stream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Upstream { body, conn } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    // hyper stops polling once a body of known length is
                    // complete, so the end is noticed on the last frame too.
                    Poll::Ready(None) | Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        if let Some((authority, sender)) = conn.take() {
                            upstream::checkin(authority, sender);
                        }
                    }
                    // A broken body: the connection is not reusable.
                    Poll::Ready(Some(Err(_))) => drop(conn.take()),
                    _ => {}
                }
                polled
            }
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(b) => b.is_end_stream(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(b) => b.size_hint(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
