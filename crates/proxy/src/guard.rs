//! The rules every streamed body runs under, and the error it fails with:
//! a body that does not keep its [`Pace`] fails, and a request body past
//! `max_body_bytes` fails, so a slow or hostile peer can hold a connection
//! only so long and never make the proxy buffer.
//!
//! The pace is counted only while the proxy waits for the peer: a body
//! held back because the other side is not taking bytes (backpressure) is
//! not the peer's delay.
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
    /// No progress for the body timeout, or less than the pace asks for.
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
            BodyError::Stalled => "body too slow: below its pace within the body timeout",
            BodyError::TooLarge => "request body larger than max_body_bytes",
            BodyError::Malformed => "request body broken by the client",
        })
    }
}

impl std::error::Error for BodyError {}

/// Bytes of a request body read before a backend is chosen (HTTP/1 in
/// `http1::server`, HTTP/2 in `forward`). A body up to this size (nearly
/// every form and API call) reaches the backend whole, in one write,
/// however slowly the client sent it: a client trickling its body holds
/// its own connection and this much buffer, never a backend connection. A
/// larger body streams on from there.
pub const READ_AHEAD: usize = 16 * 1024;

/// How fast a body must come while the proxy waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// No rule (a gRPC stream may be quiet for as long as it likes).
    Unbounded,
    /// At least `quota` bytes in each `window` of waiting. A quota of one
    /// byte is the plain inactivity rule (`body_timeout`); a larger one is
    /// a minimum rate, so a body trickled a byte at a time cannot hold a
    /// connection (and the backend behind it) for ever.
    Within { window: Duration, quota: u64 },
}

impl Pace {
    /// `body_timeout` alone: any byte is progress.
    pub fn idle(window: Duration) -> Pace {
        Pace::Within { window, quota: 1 }
    }

    /// `body_timeout` with `min_rate` bytes a second averaged over each
    /// window (`0`: the inactivity rule alone).
    pub fn at_least(window: Duration, min_rate: u64) -> Pace {
        let quota = (window.as_millis() * u128::from(min_rate)).div_ceil(1000);
        Pace::Within {
            window,
            quota: u64::try_from(quota).unwrap_or(u64::MAX).max(1),
        }
    }
}

/// Where a body stands against its [`Pace`]: what the current window has
/// brought and how much waiting it has left. Kept small (times in
/// milliseconds, at most 49 days): every streamed body holds one in its
/// request's future.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// `0`: no rule ([`Pace::Unbounded`]).
    quota: u64,
    got: u64,
    window_ms: u32,
    left_ms: u32,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Progress {
    pub fn new(pace: Pace) -> Progress {
        let (window_ms, quota) = match pace {
            Pace::Unbounded => (u32::MAX, 0),
            Pace::Within { window, quota } => (millis(window), quota),
        };
        Progress {
            quota,
            got: 0,
            window_ms,
            left_ms: window_ms,
        }
    }

    /// How much longer the proxy may wait for the current window's quota;
    /// `None`: for ever.
    pub fn left(&self) -> Option<Duration> {
        (self.quota > 0).then(|| Duration::from_millis(u64::from(self.left_ms)))
    }

    /// The proxy waited this long for bytes.
    pub fn waited(&mut self, d: Duration) {
        self.left_ms = self.left_ms.saturating_sub(millis(d));
    }

    /// `n` bytes came; a window whose quota is met starts a new one.
    pub fn arrived(&mut self, n: u64) {
        if self.quota == 0 {
            return;
        }
        self.got = self.got.saturating_add(n);
        if self.got >= self.quota {
            self.got = 0;
            self.left_ms = self.window_ms;
        }
    }

    /// Whether the current window's waiting ran out before its quota came.
    pub fn stalled(&self) -> bool {
        self.quota > 0 && self.left_ms == 0
    }
}

/// Pace and size rules for one streamed body.
#[derive(Debug)]
pub struct Guard {
    progress: Progress,
    /// `max_body_bytes`; `u64::MAX`: none.
    limit: u64,
    seen: u64,
    /// Made on the first wait, so bodies that never wait cost no timer.
    /// Armed (`waiting`) from the start of a wait for the peer until bytes
    /// come: its deadline is where the window's waiting runs out.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl Guard {
    pub fn new(pace: Pace, limit: Option<u64>) -> Guard {
        Guard {
            progress: Progress::new(pace),
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            timer: None,
            waiting: false,
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
                    let n = data.len() as u64;
                    self.seen = self.seen.saturating_add(n);
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge.into())));
                    }
                    if std::mem::take(&mut self.waiting)
                        && let Some(timer) = &self.timer
                    {
                        // What the wait left of the window.
                        let left = timer.deadline().saturating_duration_since(Instant::now());
                        let had = self.progress.left().unwrap_or(Duration::MAX);
                        self.progress.waited(had.saturating_sub(left));
                    }
                    self.progress.arrived(n);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(left) = self.progress.left() else {
                    return Poll::Pending;
                };
                if !self.waiting {
                    // A new wait: the timer runs for what the window has
                    // left, from now.
                    self.waiting = true;
                    let due = Instant::now()
                        .checked_add(left)
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
                    match &mut self.timer {
                        Some(timer) => timer.as_mut().reset(due),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                }
                let Some(timer) = self.timer.as_mut() else {
                    return Poll::Pending;
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use tokio::sync::mpsc;

    type Frames = StreamBody<Rx>;

    /// A body fed by hand, one frame at a time.
    #[derive(Debug)]
    struct Rx(mpsc::Receiver<Bytes>);

    impl futures_util::Stream for Rx {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn fed() -> (mpsc::Sender<Bytes>, Frames) {
        let (tx, rx) = mpsc::channel(16);
        (tx, StreamBody::new(Rx(rx)))
    }

    /// Polls `body` through `guard` until it yields or fails.
    async fn next(guard: &mut Guard, body: &mut Frames) -> Result<Option<usize>, BodyError> {
        std::future::poll_fn(|cx| guard.poll(Pin::new(&mut *body), cx))
            .await
            .map(|r| {
                r.map(|f| f.into_data().map_or(0, |d| d.len()))
                    .map_err(|e| body_error(e.as_ref()).expect("a body error"))
            })
            .transpose()
    }

    #[test]
    fn a_rate_becomes_a_quota_per_window() {
        let w = Duration::from_secs(30);
        assert_eq!(Pace::at_least(w, 0), Pace::idle(w));
        assert_eq!(
            Pace::at_least(w, 1024),
            Pace::Within {
                window: w,
                quota: 30 * 1024
            }
        );
        assert_eq!(
            Pace::at_least(Duration::from_millis(1), 1),
            Pace::idle(Duration::from_millis(1)),
            "rounded up to a byte"
        );
        assert_eq!(
            Pace::at_least(w, u64::MAX),
            Pace::Within {
                window: w,
                quota: u64::MAX
            }
        );
    }

    #[test]
    fn a_window_ends_only_when_its_quota_is_met() {
        let w = Duration::from_secs(10);
        let mut p = Progress::new(Pace::Within {
            window: w,
            quota: 100,
        });
        p.waited(Duration::from_secs(4));
        p.arrived(60);
        assert_eq!(
            p.left(),
            Some(Duration::from_secs(6)),
            "60 of 100: same window"
        );
        p.waited(Duration::from_secs(5));
        p.arrived(40);
        assert_eq!(p.left(), Some(w), "quota met: a new window");
        p.waited(Duration::from_secs(11));
        assert!(p.stalled());
        let mut u = Progress::new(Pace::Unbounded);
        u.waited(Duration::MAX);
        assert!(!u.stalled());
        assert_eq!(u.left(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_rate_is_cut_where_idleness_alone_is_not() {
        for (pace, cut) in [
            (Pace::idle(Duration::from_secs(3)), false),
            (Pace::at_least(Duration::from_secs(3), 100), true),
        ] {
            let (tx, mut body) = fed();
            let mut guard = Guard::new(pace, None);
            let feeder = tokio::spawn(async move {
                // A byte a second for 10 s.
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tx.send(Bytes::from_static(b"x")).await.is_err() {
                        return;
                    }
                }
            });
            let started = Instant::now();
            let mut got = 0;
            let ended = loop {
                match next(&mut guard, &mut body).await {
                    Ok(Some(n)) => got += n,
                    other => break other,
                }
            };
            feeder.abort();
            if cut {
                assert_eq!(ended, Err(BodyError::Stalled), "{pace:?}");
                assert_eq!(
                    started.elapsed(),
                    Duration::from_secs(3),
                    "cut when the window ran out"
                );
                assert_eq!(got, 2, "{pace:?}");
            } else {
                assert_eq!(ended, Ok(None), "{pace:?}: never idle for 3 s");
                assert_eq!(got, 10);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_body_is_not_asked_for_does_not_count() {
        let (tx, mut body) = fed();
        let mut guard = Guard::new(Pace::at_least(Duration::from_secs(2), 100), None);
        tx.send(Bytes::from(vec![b'x'; 150])).await.expect("send");
        assert_eq!(next(&mut guard, &mut body).await, Ok(Some(150)));
        // The other side takes nothing for a minute: nobody asks for the
        // body, so nothing is counted against it.
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(Bytes::from(vec![b'x'; 50])).await.expect("send");
        assert_eq!(next(&mut guard, &mut body).await, Ok(Some(50)));
        drop(tx);
        assert_eq!(next(&mut guard, &mut body).await, Ok(None));
    }
}
