//! The rules every streamed body runs under, and the error it fails with:
//! a body that makes no progress for the body timeout fails, and a request
//! body past `max_body_bytes` fails, so a slow or hostile peer can hold a
//! connection only so long and never make the proxy buffer.
//!
//! It sits below both codecs (`http1`, hyper's HTTP/2 via `h2`) and the
//! body type that wraps them (`body`), so each names these errors without
//! importing upward.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the proxy cut a body short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// No progress for the body timeout.
    Stalled,
    /// A request body grew past `max_body_bytes`.
    TooLarge,
    /// The client's request body broke off or broke its framing (a bad
    /// chunk, a short body): the client's fault, not the target's.
    Malformed,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::Stalled => "body made no progress within the body timeout",
            BodyError::TooLarge => "request body larger than max_body_bytes",
            BodyError::Malformed => "request body broken by the client",
        })
    }
}

impl std::error::Error for BodyError {}

/// Progress and size rules for one streamed body.
#[derive(Debug)]
pub struct Guard {
    idle: Duration,
    limit: Option<u64>,
    seen: u64,
    /// Made on the first wait, so bodies that never wait cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Guard {
    pub fn new(idle: Duration, limit: Option<u64>) -> Guard {
        Guard {
            idle,
            limit,
            seen: 0,
            timer: None,
        }
    }

    /// Polls `body` under the guard's rules.
    pub(crate) fn poll<B>(
        &mut self,
        body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen = self.seen.saturating_add(data.len() as u64);
                    if self.limit.is_some_and(|l| self.seen > l) {
                        return Poll::Ready(Some(Err(BodyError::TooLarge.into())));
                    }
                }
                if let Some(timer) = &mut self.timer {
                    timer.as_mut().reset(Instant::now() + self.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// The proxy's own body error somewhere in `e`'s source chain, if any.
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyError>() {
            return Some(*b);
        }
        cur = err.source();
    }
    None
}
