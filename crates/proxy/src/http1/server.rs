//! The server role of the HTTP/1 codec: one loop per client connection
//! that reads a request head, hands the request to its [`Handler`] (the
//! proxy: `crate::server` passes it in, so this loop does not name
//! `forward`), writes the answer, and waits for the next, holding nothing
//! while it waits.
//!
//! Idle, a plain connection is its socket, a few words of state, a
//! readiness wait and an entry on its thread's timer wheel (`wheel`): the
//! read buffer comes from a per-thread pool when bytes arrive and goes
//! back once a request is done and nothing is left over, or, while a
//! partial head waits for the rest, once its bytes are copied out;
//! everything a request needs lives in one boxed future for that request
//! only. The listener (`crate::server`) sends HTTP/2 (ALPN, or the h2c
//! preface, which this loop recognises on a new connection) to hyper.
//!
//! The head is parsed by `httparse` and checked in `head` (then
//! `validate`), limits and the header read timeout (which also bounds the
//! keep-alive gap) apply. A request's body is read ahead up to
//! `READ_AHEAD` bytes before its handler sees it, so a body trickled in
//! holds no backend (`Expect: 100-continue` is answered when that reading
//! starts; a body still coming after it streams on and the handler's
//! reading of it is what moves it). Pipelined requests are answered in
//! order, a connection whose framing is in doubt is closed, and a drain
//! closes idle connections at once and the others after their current
//! answer.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version, header};
use log::{debug, info};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Framing;
use super::body::{self, Pumped, RequestBody};
use super::chunked::{self, Scan};
use super::head::{Head, Parsed, parse, unbox};
use super::write::{self, Asked, Written};
use super::{Rewind, pool};
use crate::body::{ClientBody, ProxyBody};
use crate::config::{Limits, Settings};

use crate::conn::Stream;
use crate::guard::{Progress, READ_AHEAD};
use crate::headers::Peer;
use crate::respond::rejection;
use crate::validate::Reject;
use crate::wheel::{self, Timer};

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What answers a connection's requests. One per connection, held for its
/// life: keep it a few words, since every idle connection holds one.
pub trait Handler: Send + Sync {
    /// The settings the connection was accepted under: the loop reads its
    /// timeouts and head limits.
    fn settings(&self) -> &Settings;

    /// Answers one request. Never fails: every problem is a response. The
    /// loop boxes the future with the rest of the request's state, so it
    /// costs an idle connection nothing.
    fn handle(
        &self,
        req: Request<ClientBody>,
        peer: &Peer,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

/// What a connection needs from the server.
#[derive(Debug)]
pub struct Conn<H> {
    pub handler: H,
    pub peer: Peer,
    /// Becomes `true` when the drain starts.
    pub stop: watch::Receiver<bool>,
}

/// How the loop let go of the connection.
#[derive(Debug)]
pub enum Ended<H> {
    Closed,
    /// The client speaks HTTP/2: the connection, with what was read, and
    /// what the loop was given to serve it.
    H2(Rewind, Conn<H>),
}

/// The waiting end of an upgrade (WebSocket): the connection once the
/// `101` is written, with any bytes the client sent behind its request.
/// Shared and taken once: request extensions must be `Clone`.
#[derive(Clone, Debug)]
pub struct Upgrade(Arc<Mutex<Option<oneshot::Receiver<Rewind>>>>);

impl Upgrade {
    /// The connection, once the loop has written the `101`; `None` if the
    /// connection went away first (or it was already taken).
    pub async fn connection(self) -> Option<Rewind> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

/// After one exchange.
enum Outcome {
    KeepAlive,
    Close,
    Upgrade(oneshot::Sender<Rewind>),
    /// An answer still coming from its backend, to be written by the loop
    /// from a box of its own (see [`write_streamed`]).
    Streamed(Box<Streamed>),
}

/// An answer that still streams from its backend.
struct Streamed {
    res: Response<ProxyBody>,
    asked: Asked,
}

/// What waiting for a head produced.
enum Next {
    Head(Box<Head>),
    H2,
    Close,
}

/// Serves HTTP/1 requests on `io` until the client or the proxy closes it.
#[allow(clippy::manual_async_fn)] // on purpose: see the block's comment
pub fn serve<H: Handler>(mut conn: Conn<H>, mut io: Stream) -> impl Future<Output = Ended<H>> {
    // An `async` block that uses `conn` and `io` where it captured them: an
    // `async fn` would move its arguments into locals and keep both.
    async move {
        let mut buf: Option<BytesMut> = None;
        let mut first = true;
        loop {
            let head = match read_head(&conn, &mut io, &mut buf, first).await {
                Ok(Next::Head(mut head)) => {
                    // The body is read ahead here, boxed and only when it is
                    // not all in yet: its state would otherwise live in every
                    // idle connection's future.
                    if needs_read_ahead(&head, buf.as_ref())
                        && !Box::pin(read_ahead(&mut conn, &mut io, &mut buf, &mut head)).await
                    {
                        return Ended::Closed;
                    }
                    head
                }
                Ok(Next::H2) => {
                    let read = buf.take().map(BytesMut::freeze).unwrap_or_default();
                    return Ended::H2(Rewind::new(read, io), conn);
                }
                Ok(Next::Close) => return Ended::Closed,
                Err(reject) => {
                    debug!(target: "proxy", "refused a request head from {}: {}", conn.peer.addr, reject.message);
                    // A head that was whole and framed (a bad target) leaves the
                    // connection usable; anything else closes it.
                    let asked = Asked {
                        head: false,
                        http10: false,
                        keep_alive: !reject.close && !*conn.stop.borrow(),
                    };
                    let res = rejection(reject);
                    // Boxed, like a request: rare, and large.
                    let written = Box::pin(write::response(
                        &mut io,
                        res,
                        asked,
                        conn.handler.settings().send_timeout,
                    ))
                    .await;
                    match written {
                        Ok(Written::KeepAlive) => {
                            first = false;
                            continue;
                        }
                        _ => {
                            let _ = io.shutdown().await;
                            return Ended::Closed;
                        }
                    }
                }
            };
            first = false;
            // Boxed: the request's state exists only while there is a request.
            let mut outcome = Box::pin(exchange(&conn, &mut io, &mut buf, head)).await;
            if let Outcome::Streamed(answer) = outcome {
                outcome = Box::pin(write_streamed(&conn, &mut io, answer)).await;
            }
            match outcome {
                Outcome::KeepAlive => {}
                Outcome::Close => {
                    let _ = io.shutdown().await;
                    return Ended::Closed;
                }
                Outcome::Upgrade(to) => {
                    let read = buf.take().map(BytesMut::freeze).unwrap_or_default();
                    let _ = to.send(Rewind::new(read, io));
                    return Ended::Closed;
                }
                // Written above.
                Outcome::Streamed(_) => {}
            }
            if let Some(b) = buf.take_if(|b| b.is_empty()) {
                pool::give(b);
            }
        }
    }
}

/// Reads until a whole head is in `buf`, the client leaves, the header
/// read timeout passes, or the drain finds the connection idle.
///
/// One `poll_fn` over borrowed state, no futures inside it: what it holds
/// between polls is what a waiting connection costs. Its deadline is an
/// entry on this thread's timer wheel, armed at the first wait: the
/// timeout counts from when the head (or, kept alive, the next one) is
/// first waited for.
fn read_head<'a, H: Handler>(
    conn: &'a Conn<H>,
    io: &'a mut Stream,
    buf: &'a mut Option<BytesMut>,
    first: bool,
) -> impl Future<Output = Result<Next, Reject>> + use<'a, H> {
    // A closure that owns its state, not an `async fn` around one: the
    // latter would hold the arguments twice.
    let mut timer = None;
    std::future::poll_fn(move |cx| poll_head(cx, conn, io, buf, first, &mut timer))
}

fn poll_head<H: Handler>(
    cx: &mut Context<'_>,
    conn: &Conn<H>,
    io: &mut Stream,
    buf: &mut Option<BytesMut>,
    first: bool,
    timer: &mut Option<Timer>,
) -> Poll<Result<Next, Reject>> {
    let settings = conn.handler.settings();
    let (max_bytes, max_headers) = (
        settings.limits.max_header_bytes,
        settings.limits.max_headers,
    );
    loop {
        if let Some(b) = buf.as_mut().filter(|b| !b.is_empty()) {
            let h2 = first && b.len() <= H2_PREFACE.len() && H2_PREFACE.starts_with(b)
                || first && b.starts_with(H2_PREFACE);
            if h2 {
                if b.len() >= H2_PREFACE.len() {
                    return Poll::Ready(Ok(Next::H2));
                }
            } else if let Parsed::Head(h) = parse(b, max_bytes, max_headers)? {
                return Poll::Ready(Ok(Next::Head(h)));
            }
        }
        // A connection's first request is read even once the drain has
        // started: the client connected to a listener that accepted it
        // (in a binary upgrade, the moment before the new process took
        // over), and closing it unread would fail that request.
        let idle = !first && buf.as_ref().is_none_or(BytesMut::is_empty);
        if idle && draining(&conn.stop) {
            return Poll::Ready(Ok(Next::Close));
        }
        match poll_read(cx, io, buf) {
            Poll::Ready(true) => continue,
            Poll::Ready(false) => return Poll::Ready(Ok(Next::Close)),
            Poll::Pending => {}
        }
        // A partial head waits in bytes sized to it (slowloris clients hold
        // what they sent, not a read buffer); an empty buffer goes back.
        shrink(buf);
        let state = match timer {
            Some(t) => t.update(idle, cx.waker()),
            None => {
                let deadline = Instant::now() + settings.header_read_timeout;
                let (t, state) = Timer::arm(deadline, idle, cx.waker());
                *timer = Some(t);
                state
            }
        };
        // The drain is read after arming: a drain that starts after this
        // read wakes the entry (see `wheel`).
        if state == wheel::State::Due || idle && draining(&conn.stop) {
            return Poll::Ready(Ok(Next::Close));
        }
        return Poll::Pending;
    }
}

/// Whether the drain has started, or the server that would say so is
/// gone: one atomic load while neither.
fn draining(stop: &watch::Receiver<bool>) -> bool {
    stop.has_changed()
        .map_or(true, |changed| changed && *stop.borrow())
}

/// One read into `buf`: `Ready(true)` when bytes came, `Ready(false)` when
/// the connection should close (the client left, or an error).
fn poll_read(cx: &mut Context<'_>, io: &mut Stream, buf: &mut Option<BytesMut>) -> Poll<bool> {
    match io {
        Stream::Plain(stream) => loop {
            // Readiness, then a buffer: a connection with nothing to read
            // holds none.
            if std::task::ready!(stream.poll_read_ready(cx)).is_err() {
                return Poll::Ready(false);
            }
            match stream.try_read_buf(lend(buf)) {
                Ok(n) => return Poll::Ready(n > 0),
                // Readiness was stale and is cleared: wait again.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(false),
            }
        },
        // TLS may hold decrypted bytes the socket no longer signals, so
        // the read itself is the wait (a read future holds nothing
        // between polls: one per poll).
        Stream::Tls(tls) => {
            let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(tls, lend(buf))).poll(cx);
            match read {
                Poll::Ready(Ok(n)) => Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

/// The buffer to read into: a pooled one (with what a waiting head had
/// moved into bytes of its own size, see [`shrink`]) with room for a read.
fn lend(buf: &mut Option<BytesMut>) -> &mut BytesMut {
    let b = buf.get_or_insert_with(pool::take);
    if b.capacity() < pool::READ_SIZE {
        let mut lent = pool::take();
        lent.extend_from_slice(b);
        *b = lent;
    }
    pool::room(b);
    b
}

/// One read into `buf`; `false` when the connection should close (the
/// client left, the deadline passed, or the drain started while idle).
async fn read_more<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Stream,
    buf: &mut Option<BytesMut>,
    deadline: Instant,
    idle: bool,
) -> bool {
    match io {
        Stream::Plain(stream) => {
            if idle && let Some(b) = buf.take() {
                pool::give(b);
            }
            // Readiness is polled, not awaited through `readable()`: the
            // socket keeps the waker, so the wait costs the connection's
            // future nothing.
            match wait(conn, deadline, idle, |cx| stream.poll_read_ready(cx)).await {
                Some(Ok(())) => {}
                Some(Err(_)) | None => return false,
            }
            let b = buf.get_or_insert_with(pool::take);
            pool::room(b);
            match stream.try_read_buf(b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        }
        // TLS may hold decrypted bytes the socket no longer signals, so
        // the read itself is the wait (the session's buffers outweigh
        // this one anyway).
        Stream::Tls(tls) => {
            let b = buf.get_or_insert_with(pool::take);
            pool::room(b);
            let read = wait(conn, deadline, idle, |cx| {
                // A read future holds nothing between polls: one per poll.
                std::pin::pin!(tokio::io::AsyncReadExt::read_buf(tls, b)).poll(cx)
            });
            matches!(read.await, Some(Ok(n)) if n > 0)
        }
    }
}

/// Polls `ready` until it is ready (`Some`), the deadline passes or, for
/// an idle connection, the drain starts (`None`).
async fn wait<H, T>(
    conn: &mut Conn<H>,
    deadline: Instant,
    idle: bool,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    let sleep = tokio::time::sleep_until(deadline);
    let stop = conn.stop.changed();
    tokio::pin!(sleep, stop);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = ready(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() || idle && stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Why a body was not read ahead to its end or [`READ_AHEAD`].
#[derive(Debug)]
enum Cut {
    /// The client left.
    Gone,
    /// Slower than the request body's pace (`body_timeout`,
    /// `min_body_rate`): `408`.
    Stalled,
    /// A chunked framing broken in its first bytes: `400`.
    Broken,
}

/// Whether `head`'s body is to be read ahead: it has one, and what is in
/// `buf` may not be all of it (or, chunked, has not been looked at).
fn needs_read_ahead(head: &Head, buf: Option<&BytesMut>) -> bool {
    match head.framing {
        Framing::Length(n) => buf.is_none_or(|b| (b.len() as u64) < n),
        Framing::Chunked => true,
        Framing::Empty | Framing::Close | Framing::Upgrade => false,
    }
}

/// [`fill_ahead`], and the answer to a body it cut: `false` when the
/// connection is to close (the client left, or was answered `408` or
/// `400`).
async fn read_ahead<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Stream,
    buf: &mut Option<BytesMut>,
    head: &mut Head,
) -> bool {
    let reject = match fill_ahead(conn, io, buf, head).await {
        Ok(()) => return true,
        Err(Cut::Gone) => return false,
        Err(Cut::Stalled) => Reject {
            status: StatusCode::REQUEST_TIMEOUT,
            message: "Request body timeout",
            close: true,
        },
        Err(Cut::Broken) => Reject {
            status: StatusCode::BAD_REQUEST,
            message: "Invalid request body",
            close: true,
        },
    };
    debug!(target: "proxy", "refused a request body from {}: {}", conn.peer.addr, reject.message);
    let asked = Asked {
        head: false,
        http10: head.parts.version == Version::HTTP_10,
        keep_alive: false,
    };
    let send = conn.handler.settings().send_timeout;
    let _ = write::response(io, rejection(reject), asked, send).await;
    let _ = io.shutdown().await;
    false
}

/// Reads `head`'s body into `buf` until it is whole or [`READ_AHEAD`]
/// bytes of it are in, under the request body's pace. A body longer than
/// `max_body_bytes` is not read: its handler refuses it unread.
///
/// What it did is written into `head`, so the rest of the exchange needs
/// nothing more: `100 Continue` sent clears `expect_continue`, and a
/// chunked body read whole is decoded in `buf` and framed by its length.
async fn fill_ahead<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Stream,
    buf: &mut Option<BytesMut>,
    head: &mut Head,
) -> Result<(), Cut> {
    let settings = conn.handler.settings();
    let mut progress = Progress::new(settings.request_pace);
    let limits = settings.limits;
    let max_body = limits.max_body_bytes;
    // The head's own bytes: what it was parsed from, less what followed it
    // (copied into `buf`).
    let mut head_len = Some(head.storage.len() - buf.as_ref().map_or(0, BytesMut::len));
    loop {
        let have = buf.as_deref().unwrap_or_default();
        match head.framing {
            Framing::Length(n) => {
                let want = n.min(READ_AHEAD as u64) as usize;
                if have.len() >= want || max_body.is_some_and(|max| n > max) {
                    return Ok(());
                }
            }
            Framing::Chunked => match chunked::scan(have) {
                Scan::Whole { data, framed } => {
                    if let Some(b) = buf.as_mut() {
                        unchunk(b, &data, framed);
                    }
                    head.framing = Framing::Length(data.len() as u64);
                    return Ok(());
                }
                Scan::Broken => return Err(Cut::Broken),
                Scan::Partial if have.len() >= READ_AHEAD => return Ok(()),
                Scan::Partial => {}
            },
            Framing::Empty | Framing::Close | Framing::Upgrade => return Ok(()),
        }
        let had = have.len();
        if head.expect_continue {
            // The proxy takes the body itself now, so it says go on.
            io.write_all(CONTINUE).await.map_err(|_| Cut::Gone)?;
            head.expect_continue = false;
        }
        // The body makes the request wait: what it holds meanwhile is
        // sized to what arrived, not to the reads it came in.
        if let Some(len) = head_len.take() {
            compact_head(head, len, &limits);
        }
        shrink(buf);
        let waited = Instant::now();
        let left = progress.left().unwrap_or(FOR_EVER);
        let read = read_more(conn, io, buf, waited + left, false).await;
        progress.waited(waited.elapsed());
        if !read {
            return Err(if progress.stalled() {
                Cut::Stalled
            } else {
                Cut::Gone
            });
        }
        let now = buf.as_ref().map_or(0, BytesMut::len);
        progress.arrived(now.saturating_sub(had) as u64);
    }
}

/// Gives a head whose body is slow to come bytes of its own, sized to it,
/// so the request does not hold the read buffer the head arrived in (that
/// goes back to the pool). The head is parsed again from the copy, since
/// its parts are slices of the bytes they were parsed from: a cost only
/// requests that wait for their body pay.
fn compact_head(head: &mut Head, len: usize, limits: &Limits) {
    let Some(bytes) = head.storage.get(..len) else {
        return;
    };
    let mut copy = BytesMut::from(bytes);
    let Ok(Parsed::Head(fresh)) = parse(&mut copy, limits.max_header_bytes, limits.max_headers)
    else {
        // It parsed once; it parses again. Keep it as it is if not.
        return;
    };
    let Head { parts, storage, .. } = unbox(fresh);
    let mut old = std::mem::replace(&mut head.parts, parts);
    let old_storage = std::mem::replace(&mut head.storage, storage);
    pool::give_map(std::mem::take(&mut old.headers));
    // Every slice of the old bytes gone, they can go back to the pool.
    drop(old);
    pool::recycle(old_storage);
}

/// Below this much spare room a buffer is not worth a copy.
const SPARE: usize = 1024;

/// What has arrived of a body, in a buffer sized to it while the request
/// waits for more; the read buffer goes back to the pool.
fn shrink(buf: &mut Option<BytesMut>) {
    let Some(b) = buf.as_mut() else {
        return;
    };
    if b.capacity() <= b.len() + SPARE {
        return;
    }
    let mut read = if b.is_empty() {
        buf.take().unwrap_or_default()
    } else {
        std::mem::replace(b, BytesMut::from(&b[..]))
    };
    read.clear();
    pool::give(read);
}

/// Puts a whole chunked body's `data` in place of the `framed` bytes at
/// the front of `b`, before what follows them.
fn unchunk(b: &mut BytesMut, data: &[u8], framed: usize) {
    let rest = b.split_off(framed);
    b.clear();
    b.extend_from_slice(data);
    b.extend_from_slice(&rest);
}

/// A wait with no end, as a deadline tokio can hold.
const FOR_EVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The size of the future the loop boxes for one request on `conn`: what
/// every request allocates and moves, for the guard in `crate::server`.
#[cfg(test)]
pub(crate) fn request_future_size<H: Handler>(conn: &Conn<H>, io: &mut Stream) -> usize {
    let mut raw = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..]);
    let Ok(Parsed::Head(head)) = parse(&mut raw, 8192, 64) else {
        unreachable!("a plain head parses");
    };
    let mut buf = None;
    std::mem::size_of_val(&exchange(conn, io, &mut buf, head))
}

/// A request made ready for its handler.
struct Ready {
    req: Request<ClientBody>,
    /// The body's feed and its first want, when it streams.
    feed: Option<(body::Feed, oneshot::Receiver<()>)>,
    /// The waiting end of an upgrade the client asked for.
    upgrade: Option<oneshot::Sender<Rewind>>,
    asked_head: bool,
    http10: bool,
    keep_alive: bool,
    expect_continue: bool,
    /// The buffer the head was read into (see [`done_with_head`]).
    storage: Option<Bytes>,
}

/// Turns a parsed head into the handler's request. A plain function, not
/// part of `exchange`: the head's parts are borrowed while they are
/// prepared, and a borrowed local of an `async fn` keeps its room in the
/// future for as long as it is in scope, moved or not.
fn prepare(buf: &mut Option<BytesMut>, head: Box<Head>) -> Ready {
    let Head {
        mut parts,
        framing,
        keep_alive,
        expect_continue,
        storage,
    } = unbox(head);
    let asked_head = parts.method == Method::HEAD;
    let http10 = parts.version == Version::HTTP_10;
    let upgrade = parts.headers.contains_key(header::UPGRADE).then(|| {
        let (to, from) = oneshot::channel();
        parts
            .extensions
            .insert(Upgrade(Arc::new(Mutex::new(Some(from)))));
        to
    });
    let buffered = buf.as_ref().map_or(0, |b| b.len() as u64);
    let (body, feed) = match framing {
        // A request head never says `Close` or `Upgrade`.
        Framing::Empty | Framing::Close | Framing::Upgrade => (RequestBody::Empty, None),
        // A body that came whole (a chunked one decoded by the read-ahead
        // goes on as its data: the writer upstream frames what it sends).
        Framing::Length(0) => (RequestBody::Empty, None),
        Framing::Length(n) if n <= buffered => {
            let b = buf.as_mut().map(|b| b.split_to(n as usize).freeze());
            (RequestBody::Buffered(b), None)
        }
        Framing::Length(_) | Framing::Chunked => {
            let (body, feed, wanted) = body::streamed(framing);
            (body, Some((feed, wanted)))
        }
    };
    Ready {
        req: Request::from_parts(parts, ClientBody::H1(body)),
        feed,
        upgrade,
        asked_head,
        http10,
        keep_alive,
        expect_continue,
        storage: Some(storage),
    }
}

/// One request and its answer.
async fn exchange<H: Handler>(
    conn: &Conn<H>,
    io: &mut Stream,
    buf: &mut Option<BytesMut>,
    head: Box<Head>,
) -> Outcome {
    let Ready {
        req,
        feed,
        upgrade,
        asked_head,
        http10,
        keep_alive,
        expect_continue,
        mut storage,
    } = prepare(buf, head);
    let send = conn.handler.settings().send_timeout;
    let asked = |pumped: bool| Asked {
        head: asked_head,
        http10,
        keep_alive: keep_alive && pumped && !*conn.stop.borrow(),
    };

    let written = match feed {
        None => {
            let res = conn.handler.handle(req, &conn.peer).await;
            done_with_head(buf, &mut storage);
            if let Some(to) = upgrade
                && switched(&res, &to)
            {
                return match write::response(io, res, asked(true), send).await {
                    Ok(_) => Outcome::Upgrade(to),
                    Err(_) => Outcome::Close,
                };
            }
            if !res.body().is_in_hand() {
                // Written from a box of its own, once this one (the
                // request's state, several KiB) is freed: a client that
                // reads slowly holds only what the writing needs.
                return Outcome::Streamed(Box::new(Streamed {
                    res,
                    asked: asked(true),
                }));
            }
            let from_backend = from_backend(&res);
            let written = write::response(io, res, asked(true), send).await;
            note_cut(conn, from_backend, &written);
            written
        }
        Some((feed, wanted)) => {
            let (mut reader, mut writer) = tokio::io::split(&mut *io);
            let pump = body::pump(&mut reader, buf, feed);
            tokio::pin!(pump);
            let mut pumped = None;
            // Each phase is an `async` block awaited once: a value held
            // across several awaits gets room of its own in this (boxed)
            // future, one held across a single await shares it with the
            // other phases'. So the handler's future and the writer's take
            // the same bytes, not the sum.
            //
            // Until the answer's head: feed the body, and say `100
            // Continue` when it is first wanted.
            let res = async {
                let handle = conn.handler.handle(req, &conn.peer);
                tokio::pin!(handle);
                let mut wanted = expect_continue.then_some(wanted);
                loop {
                    tokio::select! {
                        biased;
                        res = &mut handle => break Some(res),
                        p = &mut pump, if pumped.is_none() => pumped = Some(p),
                        first = async { wanted.as_mut().expect("guarded").await }, if wanted.is_some() => {
                            wanted = None;
                            if first.is_ok() && writer.write_all(CONTINUE).await.is_err() {
                                break None;
                            }
                        }
                    }
                }
            }
            .await;
            let Some(res) = res else {
                return Outcome::Close;
            };
            // The answer goes out while the rest of the body still comes
            // in: a backend may answer as it reads.
            let from_backend = from_backend(&res);
            let written = async {
                let write = write::response(&mut writer, res, asked(true), send);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        biased;
                        written = &mut write => break written,
                        p = &mut pump, if pumped.is_none() => pumped = Some(p),
                    }
                }
            }
            .await;
            note_cut(conn, from_backend, &written);
            if pumped != Some(Pumped::Complete) {
                // The body was not read to its end: the next bytes on the
                // connection are not a request head.
                return Outcome::Close;
            }
            written
        }
    };
    // A body that streamed kept the head's buffer to the end (the pump
    // reads into the memory the head came in).
    if let Some(head) = storage {
        pool::recycle(head);
    }
    match written {
        Ok(Written::KeepAlive) => Outcome::KeepAlive,
        Ok(Written::Close) | Err(_) => Outcome::Close,
    }
}

/// The request's head is done with once its answer is in: the buffer it
/// was read into goes back to the pool now, not after a slow client has
/// read all of the answer. The connection's buffer, empty, shares that
/// memory, so it goes too (one is taken again when the next bytes come).
fn done_with_head(buf: &mut Option<BytesMut>, storage: &mut Option<Bytes>) {
    let Some(head) = storage.take() else {
        return;
    };
    if buf.as_ref().is_some_and(BytesMut::is_empty) {
        *buf = None;
    }
    pool::recycle(head);
}

/// Writes an answer that streams from its backend (see
/// [`Outcome::Streamed`]).
async fn write_streamed<H: Handler>(
    conn: &Conn<H>,
    io: &mut Stream,
    answer: Box<Streamed>,
) -> Outcome {
    let Streamed { res, asked } = *answer;
    let from_backend = from_backend(&res);
    let written = write::response(io, res, asked, conn.handler.settings().send_timeout).await;
    note_cut(conn, from_backend, &written);
    match written {
        Ok(Written::KeepAlive) => Outcome::KeepAlive,
        Ok(Written::Close) | Err(_) => Outcome::Close,
    }
}

/// Whether `res` is a backend's answer (rather than the proxy's own).
fn from_backend(res: &Response<ProxyBody>) -> bool {
    matches!(res.body(), ProxyBody::Upstream { .. })
}

/// Logs a backend's answer the client did not take to its end: one line
/// per connection, since the connection closes.
fn note_cut<H: Handler>(conn: &Conn<H>, from_backend: bool, written: &std::io::Result<Written>) {
    let Err(e) = written else {
        return;
    };
    if !from_backend || write::is_upstream_error(e) {
        return;
    }
    let peer = conn.peer.addr;
    if e.kind() == std::io::ErrorKind::TimedOut {
        info!(
            target: "proxy",
            "client {peer} took no bytes of its answer for {:?}: closed it and its backend connection",
            conn.handler.settings().send_timeout
        );
    } else {
        info!(target: "proxy", "client {peer} went away before its answer was done: {e}");
    }
}

/// Whether `res` switches protocols for an upgrade the proxy took up.
fn switched(res: &Response<ProxyBody>, to: &oneshot::Sender<Rewind>) -> bool {
    res.status() == StatusCode::SWITCHING_PROTOCOLS && !to.is_closed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_head_is_the_same_head_in_bytes_of_its_own() {
        let limits = Limits::default();
        let wire =
            b"POST /up?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing: b\r\nContent-Length: 9\r\n\r\nabc";
        let mut read = pool::take();
        read.extend_from_slice(wire);
        let Ok(Parsed::Head(mut head)) = parse(&mut read, 8192, 64) else {
            panic!("a plain head parses");
        };
        assert_eq!(&read[..], b"abc", "what followed the head");
        let len = head.storage.len() - read.len();
        let before = (
            head.parts.method.clone(),
            head.parts.uri.clone(),
            head.parts.headers.clone(),
        );
        compact_head(&mut head, len, &limits);
        assert_eq!(
            (
                head.parts.method.clone(),
                head.parts.uri.clone(),
                head.parts.headers.clone()
            ),
            before
        );
        assert_eq!(&head.storage[..], &wire[..len], "only the head's bytes");
        assert_eq!(head.framing, Framing::Length(9));
    }

    #[test]
    fn a_waiting_body_keeps_a_buffer_sized_to_what_came() {
        let mut buf = Some(pool::take());
        buf.as_mut().expect("a buffer").extend_from_slice(b"xy");
        shrink(&mut buf);
        let b = buf.as_ref().expect("the bytes stay");
        assert_eq!(&b[..], b"xy");
        assert!(b.capacity() < SPARE, "{} bytes of room", b.capacity());
        let mut empty = Some(pool::take());
        shrink(&mut empty);
        assert!(empty.is_none(), "nothing came: no buffer");
    }

    #[test]
    fn a_waiting_partial_head_moves_back_into_a_read_buffer() {
        let mut buf = Some(pool::take());
        buf.as_mut().expect("lent").extend_from_slice(b"GET / HT");
        shrink(&mut buf);
        assert_eq!(buf.as_ref().expect("kept").capacity(), 8, "what arrived");
        let lent = lend(&mut buf);
        assert_eq!(&lent[..], b"GET / HT", "the bytes move back");
        assert!(lent.capacity() >= pool::READ_SIZE);
    }
}
