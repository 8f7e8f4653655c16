//! The rules hyper's HTTP/2 server does not have, per client connection.
//!
//! hyper sends an answer's body only while the client's flow-control
//! window is open, and does not poll the body at all while it is shut, so
//! a client that never opens its window (`SETTINGS_INITIAL_WINDOW_SIZE =
//! 0`, no WINDOW_UPDATE) would hold every stream and the backend
//! connection behind it for as long as it likes; `body_timeout` never runs
//! because nothing asks the body for data. Here:
//!
//! - a stream whose client has taken no bytes of its answer for
//!   `send_timeout` is reset (RST_STREAM CANCEL) and its backend connection
//!   closed; when no stream of the connection made progress for that long
//!   the connection gets a GOAWAY too;
//! - requests cancelled after they reached a backend, streams cut, and the
//!   GOAWAY the proxy sent are counted, and logged once per connection when
//!   its last stream is gone (never once per stream).
//!
//! How it hooks in: hyper hands each stream's task to the connection's
//! executor, [`Streams`]. The connection's task runs inside a task-local
//! [`Conn`], which `Streams` reads to wrap each stream task in [`Watched`];
//! that sets a task-local [`Stream`] the service reads to wrap the answer's
//! body ([`watched`]). The body says when it hands data to hyper (the
//! client must now take it) and when it is asked for more (the client took
//! it); `Watched` owns the one timer.
//!
//! Progress is counted per piece of body handed to hyper (at most one
//! upstream read, 16 KiB): a client reading at least that much per
//! `send_timeout` is never cut.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use hyper::body::{Body, Frame, SizeHint};
use log::info;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::body::ProxyBody;
use crate::cancel;
use crate::guard::BoxError;
use crate::stats::{Goaway, ProxyStats};

tokio::task_local! {
    static CONN: Arc<Conn>;
    static STREAM: Arc<Stream>;
}

/// No GOAWAY recorded yet (`Conn::goaway`).
const NO_GOAWAY: u8 = u8::MAX;

/// One HTTP/2 client connection's watch: its rules and its tally.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    send_timeout: Duration,
    start: Instant,
    /// Milliseconds after `start` when a client last took bytes of any
    /// answer on this connection.
    progress: AtomicU64,
    /// Requests cancelled after they reached a backend (`cancel` counts
    /// into it while a stream of this connection is polled).
    cancelled: Arc<AtomicU64>,
    cut: AtomicU64,
    /// The [`Goaway`] sent, as its index; [`NO_GOAWAY`] if none.
    goaway: AtomicU8,
    /// Wakes the connection's task to send a GOAWAY: every stream stalls.
    stalled: Notify,
    stats: Arc<ProxyStats>,
}

impl Conn {
    pub fn new(peer: SocketAddr, send_timeout: Duration, stats: Arc<ProxyStats>) -> Arc<Conn> {
        Arc::new(Conn {
            peer,
            send_timeout,
            start: Instant::now(),
            progress: AtomicU64::new(0),
            cancelled: Arc::new(AtomicU64::new(0)),
            cut: AtomicU64::new(0),
            goaway: AtomicU8::new(NO_GOAWAY),
            stalled: Notify::new(),
            stats,
        })
    }

    /// Runs the connection's future (hyper's, which spawns the streams)
    /// where [`Streams`] finds this watch.
    pub async fn scope<F: Future>(self: Arc<Self>, f: F) -> F::Output {
        CONN.scope(self, f).await
    }

    /// Completes when every stream has stalled for `send_timeout`: time
    /// for a GOAWAY.
    pub async fn stalled(&self) {
        self.stalled.notified().await;
    }

    /// Records and counts the GOAWAY the connection sent (the first only).
    pub fn sent_goaway(&self, reason: Goaway) {
        let recorded = self.goaway.compare_exchange(
            NO_GOAWAY,
            reason as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if recorded.is_ok() {
            self.stats.goaway(reason);
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    fn stream(self: &Arc<Self>) -> Arc<Stream> {
        Arc::new(Stream {
            conn: self.clone(),
            waiting: AtomicU64::new(0),
        })
    }

    /// A stream was cut: tell the connection if none has made progress
    /// for `send_timeout` either.
    fn cut(&self, now: Instant) {
        self.cut.fetch_add(1, Ordering::Relaxed);
        let last = self.at(self.progress.load(Ordering::Relaxed));
        if now.saturating_duration_since(last) >= self.send_timeout {
            self.stalled.notify_one();
        }
    }
}

impl Drop for Conn {
    /// The last stream is gone: one line for the whole connection.
    fn drop(&mut self) {
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        let cut = *self.cut.get_mut();
        let goaway = Goaway::ALL.get(usize::from(*self.goaway.get_mut()));
        if cancelled == 0 && cut == 0 && goaway.is_none_or(|g| *g == Goaway::Drain) {
            return;
        }
        let goaway = goaway.map_or("none", |g| g.as_str());
        info!(
            target: "proxy",
            "HTTP/2 client {}: {cancelled} requests cancelled after reaching a backend, {cut} streams cut after {:?} without progress, GOAWAY: {goaway}",
            self.peer, self.send_timeout
        );
    }
}

/// One stream's watch: since when its answer waits for the client.
#[derive(Debug)]
pub struct Stream {
    conn: Arc<Conn>,
    /// One more than the millisecond (after the connection's start) since
    /// which the client has had a piece of the answer to take; 0: none.
    waiting: AtomicU64,
}

impl Stream {
    fn wait(&self) {
        let now = self.conn.millis(Instant::now());
        self.waiting.store(now + 1, Ordering::Relaxed);
    }

    fn took(&self) {
        if self.waiting.swap(0, Ordering::Relaxed) != 0 {
            let now = self.conn.millis(Instant::now());
            self.conn.progress.store(now, Ordering::Relaxed);
        }
    }

    /// When the client has to have taken the pending piece.
    fn deadline(&self) -> Option<Instant> {
        match self.waiting.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.conn.at(since - 1) + self.conn.send_timeout),
        }
    }
}

/// hyper's executor for HTTP/2 streams: each under its connection's watch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Streams;

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match CONN.try_with(Arc::clone) {
            Ok(conn) => {
                tokio::spawn(Watched {
                    task: Task::Running { fut },
                    stream: conn.stream(),
                    timer: None,
                });
            }
            Err(_) => {
                tokio::spawn(fut);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, ended when its client takes no bytes of its answer
    /// for `send_timeout`. Dropping hyper's stream task resets the stream
    /// and drops the answer's body, which closes its backend connection.
    struct Watched<F> {
        #[pin]
        task: Task<F>,
        stream: Arc<Stream>,
        // Made on the first wait for the client.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

pin_project_lite::pin_project! {
    /// hyper's stream task, dropped as soon as it ends: inside the stream's
    /// scope, so what it drops (a request the client reset) is counted
    /// against this connection.
    #[project = TaskProj]
    enum Task<F> {
        Running { #[pin] fut: F },
        Done,
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let mut task = this.task;
        let tally = &this.stream.conn.cancelled;
        let ended = STREAM.sync_scope(this.stream.clone(), || {
            cancel::tallied(tally, || {
                let TaskProj::Running { fut } = task.as_mut().project() else {
                    return true;
                };
                if fut.poll(cx).is_pending() {
                    return false;
                }
                task.set(Task::Done);
                true
            })
        });
        if ended {
            return Poll::Ready(());
        }
        let Some(deadline) = this.stream.deadline() else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                this.stream.conn.cut(Instant::now());
                // Outside the stream's scope: counted as cut, not as a
                // cancellation by the client.
                task.set(Task::Done);
                Poll::Ready(())
            }
        }
    }
}

/// The stream's watch, for the service answering it (`None` outside an
/// HTTP/2 stream under [`Streams`]).
pub fn current() -> Option<Arc<Stream>> {
    STREAM.try_with(Arc::clone).ok()
}

/// `res` with its body under the stream's watch: from now on the client
/// has the answer to take.
pub fn watched(res: Response<ProxyBody>, stream: Option<Arc<Stream>>) -> Response<Watch> {
    if let Some(s) = &stream
        && !res.body().is_end_stream()
    {
        s.wait();
    }
    res.map(|body| Watch { body, stream })
}

/// An answer's body that tells its stream's watch when the client has a
/// piece to take and when it took it.
#[derive(Debug)]
pub struct Watch {
    body: ProxyBody,
    stream: Option<Arc<Stream>>,
}

impl Body for Watch {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = self.get_mut();
        // hyper asks for more only once the last piece fits the window.
        if let Some(s) = &this.stream {
            s.took();
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(s)) = (&polled, &this.stream)
            && frame.is_data()
        {
            s.wait();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The GOAWAY hyper's HTTP/2 connection sent when it ended with `e`, if
/// the client broke a rule (h2's own verdicts, not the client's GOAWAY).
pub fn goaway_of(e: &(dyn std::error::Error + 'static)) -> Option<Goaway> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if !(h2.is_go_away() && h2.is_library()) {
                return None;
            }
            return Some(match h2.reason()? {
                h2::Reason::ENHANCE_YOUR_CALM => Goaway::EnhanceYourCalm,
                h2::Reason::PROTOCOL_ERROR => Goaway::Protocol,
                h2::Reason::FLOW_CONTROL_ERROR => Goaway::FlowControl,
                h2::Reason::FRAME_SIZE_ERROR => Goaway::FrameSize,
                h2::Reason::COMPRESSION_ERROR => Goaway::Compression,
                _ => Goaway::Other,
            });
        }
        cur = err.source();
    }
    None
}
