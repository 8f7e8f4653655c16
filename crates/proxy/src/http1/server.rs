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
//! keep-alive gap) apply, `Expect: 100-continue` is answered when the body
//! is first wanted, pipelined requests are answered in order, a connection
//! whose framing is in doubt is closed, and a drain closes idle
//! connections at once and the others after their current answer.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode, Version, header};
use log::{debug, info};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Framing;
use super::body::{self, Pumped, RequestBody};
use super::head::{Head, Parsed, parse, unbox};
use super::write::{self, Asked, Written};
use super::{Rewind, chunked, pool};
use crate::body::{ClientBody, ProxyBody};
use crate::config::Settings;
use crate::conn::Stream;
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
}

/// What waiting for a head produced.
enum Next {
    Head(Box<Head>),
    H2,
    Close,
}

/// Serves HTTP/1 requests on `io` until the client or the proxy closes it.
#[allow(clippy::manual_async_fn)] // on purpose: see the block's comment
pub fn serve<H: Handler>(conn: Conn<H>, mut io: Stream) -> impl Future<Output = Ended<H>> {
    // An `async` block that uses `conn` and `io` where it captured them: an
    // `async fn` would move its arguments into locals and keep both.
    async move {
        let mut buf: Option<BytesMut> = None;
        let mut first = true;
        loop {
            let mut head = match read_head(&conn, &mut io, &mut buf, first).await {
                Ok(Next::Head(head)) => head,
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
            let storage = std::mem::take(&mut head.storage);
            // Boxed: the request's state exists only while there is a request.
            let outcome = Box::pin(exchange(&conn, &mut io, &mut buf, head)).await;
            pool::recycle(storage);
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
        park(buf);
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

/// The buffer to read into: a pooled one, holding what a parked head had
/// copied out, with room for a read.
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

/// Before a wait: an empty buffer goes back to the pool, and a partial
/// head that fills less than half of its buffer moves into one of its own
/// size, so that a head sent slowly (a slowloris client) holds what has
/// arrived, not a pooled buffer. Only heads that must wait pay the copy,
/// of at most half a buffer.
fn park(buf: &mut Option<BytesMut>) {
    let Some(b) = buf.as_mut() else {
        return;
    };
    if b.is_empty() {
        if let Some(b) = buf.take() {
            pool::give(b);
        }
    } else if b.len() <= b.capacity() / 2 {
        let mut lent = std::mem::replace(b, BytesMut::from(&b[..]));
        lent.clear();
        pool::give(lent);
    }
}

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
}

/// A chunked body broken from its first byte: answered `400` and the
/// connection closed.
struct Broken {
    http10: bool,
}

/// Turns a parsed head into the handler's request. A plain function, not
/// part of `exchange`: the head's parts are borrowed while they are
/// prepared, and a borrowed local of an `async fn` keeps its room in the
/// future for as long as it is in scope, moved or not.
fn prepare(buf: &mut Option<BytesMut>, head: Box<Head>) -> Result<Ready, Broken> {
    let Head {
        mut parts,
        framing,
        keep_alive,
        expect_continue,
        storage: _,
    } = unbox(head);
    let asked_head = parts.method == Method::HEAD;
    let http10 = parts.version == Version::HTTP_10;
    if framing == Framing::Chunked && buf.as_deref().is_some_and(chunked::broken_from_the_start) {
        return Err(Broken { http10 });
    }
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
        Framing::Length(n) if n <= buffered => {
            let b = buf.as_mut().map(|b| b.split_to(n as usize).freeze());
            (RequestBody::Buffered(b), None)
        }
        Framing::Length(_) | Framing::Chunked => {
            let (body, feed, wanted) = body::streamed(framing);
            (body, Some((feed, wanted)))
        }
    };
    Ok(Ready {
        req: Request::from_parts(parts, ClientBody::H1(body)),
        feed,
        upgrade,
        asked_head,
        http10,
        keep_alive,
        expect_continue,
    })
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
    } = match prepare(buf, head) {
        Ok(ready) => ready,
        Err(Broken { http10 }) => {
            let res = rejection(Reject {
                status: StatusCode::BAD_REQUEST,
                message: "Invalid request body",
                close: true,
            });
            let asked = Asked {
                head: false,
                http10,
                keep_alive: false,
            };
            let _ = write::response(io, res, asked, conn.handler.settings().send_timeout).await;
            return Outcome::Close;
        }
    };
    let send = conn.handler.settings().send_timeout;
    let asked = |pumped: bool| Asked {
        head: asked_head,
        http10,
        keep_alive: keep_alive && pumped && !*conn.stop.borrow(),
    };

    let written = match feed {
        None => {
            let res = conn.handler.handle(req, &conn.peer).await;
            if let Some(to) = upgrade
                && switched(&res, &to)
            {
                return match write::response(io, res, asked(true), send).await {
                    Ok(_) => Outcome::Upgrade(to),
                    Err(_) => Outcome::Close,
                };
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
    fn a_waiting_partial_head_holds_only_its_bytes() {
        let mut buf = Some(pool::take());
        buf.as_mut().expect("lent").extend_from_slice(b"GET / HT");
        park(&mut buf);
        let parked = buf.as_ref().expect("kept");
        assert_eq!(&parked[..], b"GET / HT");
        assert_eq!(parked.capacity(), 8, "exactly what arrived");
        let lent = lend(&mut buf);
        assert_eq!(&lent[..], b"GET / HT", "the bytes move back");
        assert!(lent.capacity() >= pool::READ_SIZE);
        buf.as_mut().expect("lent").clear();
        park(&mut buf);
        assert!(buf.is_none(), "an empty buffer goes back to the pool");
    }
}
