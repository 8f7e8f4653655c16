//! The client role of the HTTP/1 codec: one HTTP/1.1 exchange on an
//! upstream connection (`crate::upstream` opens and pools them), driven by
//! the task of the request it serves: no connection task, no channel
//! between them.
//!
//! The request head is written in one piece, then the request body is sent
//! while the response is read (a backend may answer before it has read the
//! whole body, and a streaming backend answers as it reads), and once the
//! head is in, the response body carries on sending whatever of the
//! request body is left. The response head is parsed by `httparse`; the
//! body is framed by RFC 9112 section 6.3. A connection whose exchange
//! ended cleanly goes back to its thread's pool with nothing but its
//! socket.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::chunked::{Decoded, Decoder, LAST_CHUNK, SizeLine};
use super::head::{ResponseHead, Scanned, head_end, is_interim, parse_response, scan_response};
use super::raw::{RawFlags, RawHead};
use super::{Framing, Rewind, pool};
use crate::body::ProxyBody;
use crate::conn::Stream;
use crate::guard::{BodyError, BoxError, body_error};
use crate::upstream::{self, BadHead, Connection, Error, ErrorKind};

/// A response head larger than this is refused (`502`).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// For an HTTP/2 client, response bytes shorter than this are copied out of
/// the read buffer rather than shared with it: a piece that waits in
/// hyper's send queue would otherwise keep a whole buffer alive, and with
/// it thousands of streams' worth of buffers through a burst. An HTTP/1
/// client's answer is written at once, so it shares (two allocations and
/// copies fewer per request: about 650 instructions).
const COPY_BELOW: usize = pool::READ_SIZE / 2;

/// Why an exchange produced no response.
#[derive(Debug)]
pub enum Failed {
    /// Not one byte was written: the request is whole and can go
    /// elsewhere. (The error's kind is [`ErrorKind::NotSent`].)
    NotSent(Box<Request<ProxyBody>>, Error),
    /// The request was (perhaps partly) written, then the exchange failed.
    /// `head`: the request's head when it had no body, so that it can be
    /// sent again where that is safe, without a copy made up front.
    Sent {
        error: Error,
        head: Option<Box<http::request::Parts>>,
    },
    /// The request body broke the proxy's rules.
    Body(BodyError),
    /// No response head within the response timeout of the request's last
    /// progress (its head or body written, or its end). (The error's kind
    /// is [`ErrorKind::Timeout`].)
    Timeout(Error),
}

impl Failed {
    fn sent(kind: ErrorKind, reused: bool) -> Failed {
        Failed::Sent {
            error: Error::new(kind, reused),
            head: None,
        }
    }

    fn timeout(after: Duration, reused: bool) -> Failed {
        Failed::Timeout(Error::new(ErrorKind::Timeout(after), reused))
    }

    /// Gives a failed bodiless request its head back.
    fn with_head(self, kept: Option<http::request::Parts>) -> Failed {
        match self {
            Failed::Sent { error, .. } => Failed::Sent {
                error,
                head: kept.map(Box::new),
            },
            other => other,
        }
    }
}

impl Connection {
    /// Sends `req` and reads the response head. The response body reads
    /// the rest from this connection and returns it to the pool at its end.
    /// `copy_out`: the answer may wait in a queue (an HTTP/2 client), so
    /// short pieces of it are copied rather than pin the read buffer (see
    /// [`COPY_BELOW`]).
    pub async fn exchange(
        mut self,
        req: Request<ProxyBody>,
        copy_out: bool,
        response_timeout: Duration,
    ) -> Result<Response<ResponseBody>, Failed> {
        // The answer's head is due `response_timeout` after the request
        // last moved: an upload that keeps going is never cut for being
        // long, a backend that stops reading it or never answers is.
        let timer = tokio::time::sleep(response_timeout);
        tokio::pin!(timer);
        let reused = self.reused;
        let (parts, body) = req.into_parts();
        let outgoing = outgoing(&parts, &body);
        let mut buf = pool::take();
        write_head(&mut buf, &parts, outgoing);
        let mut written = 0;
        let wrote = tokio::select! {
            biased;
            wrote = async {
                while written < buf.len() {
                    match self.io.write(&buf[written..]).await {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) => return Err(e),
                    }
                }
                self.io.flush().await
            } => wrote,
            () = &mut timer => return Err(Failed::timeout(response_timeout, reused)),
        };
        if let Err(e) = wrote {
            if written == 0 {
                let req = Request::from_parts(parts, body);
                let error = Error::new(ErrorKind::NotSent(e), reused);
                return Err(Failed::NotSent(Box::new(req), error));
            }
            let kept = body.is_end_stream().then_some(parts);
            return Err(Failed::sent(ErrorKind::PartlySent(e), reused).with_head(kept));
        }
        buf.clear();
        // The backend may take a while to answer; the buffer goes back to
        // the pool meanwhile and is taken again once bytes arrive.
        pool::give(buf);
        let mut buf = BytesMut::new();
        let head_request = parts.method == Method::HEAD;
        // A request without a body keeps its head until the answer's is
        // in; one with a body is never sent twice anyway.
        let (kept, mut send) = if body.is_end_stream() {
            (Some(parts), None)
        } else {
            pool::give_map(parts.headers);
            (None, Some(Sending::new(body, outgoing)))
        };
        let mut write_failed = false;
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + response_timeout);
        let built = poll_fn(|cx| {
            poll_head(
                &mut self.io,
                cx,
                &mut buf,
                &mut send,
                &mut write_failed,
                Due {
                    timer: timer.as_mut(),
                    timeout: response_timeout,
                    head_request,
                    copy_out,
                    reused,
                },
            )
        })
        .await;
        let (res, framing, keep_alive, raw) = match built {
            Ok(built) => {
                if let Some(parts) = kept {
                    pool::give_map(parts.headers);
                }
                match built {
                    Final::Map((res, framing, keep_alive)) => {
                        (res, framing, keep_alive, RawAt::default())
                    }
                    Final::Raw(status, framing, keep_alive, raw) => {
                        // Empty: the fields stay in the head, at the front
                        // of `buf`; the map is for the proxy's own (pooled,
                        // so adding them does not allocate).
                        let mut res = Response::new(());
                        *res.status_mut() = status;
                        *res.headers_mut() = pool::header_map(4);
                        (res, framing, keep_alive, raw)
                    }
                }
            }
            Err(f) => return Err(f.with_head(kept)),
        };
        let reusable = !write_failed;
        let live = Live {
            conn: self,
            buf,
            head: raw,
            framing,
            chunks: Decoder::default(),
            send: send.map(Box::new),
            reusable: reusable && keep_alive,
            copy_out,
        };
        Ok(res.map(|()| ResponseBody::new(live)))
    }
}

/// The request body's framing: its exact length when known, chunked
/// otherwise. An empty body says `content-length: 0` where the client said
/// so or the method expects a body.
fn outgoing(parts: &http::request::Parts, body: &ProxyBody) -> Framing {
    if body.is_end_stream() {
        let declared = parts.headers.contains_key(header::CONTENT_LENGTH)
            || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        return if declared {
            Framing::Length(0)
        } else {
            Framing::Empty
        };
    }
    match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    }
}

/// The request line and fields. The client's own framing fields are
/// replaced by the ones that describe what is sent.
fn write_head(out: &mut BytesMut, parts: &http::request::Parts, outgoing: Framing) {
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match outgoing {
        // A request is never delimited by closing, nor switched before
        // it is sent: `outgoing` says neither.
        Framing::Empty | Framing::Close | Framing::Upgrade => {}
        Framing::Length(n) => {
            out.put_slice(b"content-length: ");
            put_decimal(out, n);
            out.put_slice(b"\r\n");
        }
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Why sending the request body stopped.
enum SendError {
    /// The client's body broke a rule.
    Body(BodyError),
    /// The backend stopped taking bytes.
    Io,
}

/// The request body on its way upstream.
struct Sending {
    body: ProxyBody,
    chunked: bool,
    /// Bytes taken from the body (and framed) but not yet written.
    out: Bytes,
    /// The body has ended; `out` holds the last framing, if any.
    ended: bool,
    /// Written since the last flush (TLS keeps bytes until flushed).
    unflushed: bool,
    /// Bytes went out since the exchange last looked (`progressed`).
    moved: bool,
}

impl Sending {
    fn new(body: ProxyBody, outgoing: Framing) -> Sending {
        Sending {
            body,
            chunked: outgoing == Framing::Chunked,
            out: Bytes::new(),
            ended: false,
            unflushed: false,
            moved: false,
        }
    }

    /// Whether bytes went out since the last call.
    fn progressed(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    /// Moves the body along until it is all written (`Ready(Ok)`), the
    /// body or the socket makes it wait, or it fails.
    fn poll(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        loop {
            while !self.out.is_empty() {
                match ready!(Pin::new(&mut *io).poll_write(cx, &self.out)) {
                    Ok(0) | Err(_) => return Poll::Ready(Err(SendError::Io)),
                    Ok(n) => {
                        self.out.advance(n);
                        self.unflushed = true;
                        self.moved = true;
                    }
                }
            }
            if self.unflushed {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(|_| SendError::Io)?;
                self.unflushed = false;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not passed on.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.out = if self.chunked { chunk(&data) } else { data };
                    }
                }
                Some(Err(e)) => {
                    let why = body_error(e.as_ref()).unwrap_or(BodyError::Malformed);
                    return Poll::Ready(Err(SendError::Body(why)));
                }
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.out = Bytes::from_static(LAST_CHUNK);
                    }
                }
            }
        }
    }
}

/// One chunk: size line, data, CRLF. A copy, but only chunked request
/// bodies (rare, and streamed) pay it.
fn chunk(data: &[u8]) -> Bytes {
    let size = SizeLine::new(data.len());
    let mut out = BytesMut::with_capacity(size.as_bytes().len() + data.len() + 2);
    out.put_slice(size.as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// What the wait for a response head goes by: when it is due (restarted by
/// the request's progress), and what the request asked.
struct Due<'a> {
    timer: Pin<&'a mut Sleep>,
    timeout: Duration,
    head_request: bool,
    copy_out: bool,
    /// The connection came from the pool (for the error).
    reused: bool,
}

/// Sends what it can of the request body and reads until a final response
/// head is in, taken off the front of `buf`. Interim responses (`100`,
/// `103`) are passed over.
fn poll_head(
    io: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    send: &mut Option<Sending>,
    write_failed: &mut bool,
    due: Due<'_>,
) -> Poll<Result<Final, Failed>> {
    let Due {
        mut timer,
        timeout,
        head_request,
        copy_out,
        reused,
    } = due;
    if let Some(s) = send {
        let polled = s.poll(io, cx);
        if s.progressed() || polled.is_ready() {
            // The request moved (or is all out): the head's wait starts
            // again from now.
            timer.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        match polled {
            Poll::Ready(Ok(())) => *send = None,
            Poll::Ready(Err(SendError::Body(e))) => return Poll::Ready(Err(Failed::Body(e))),
            // The backend stopped reading; it may still answer (a `413`
            // before closing, say), so read on.
            Poll::Ready(Err(SendError::Io)) => {
                *send = None;
                *write_failed = true;
            }
            Poll::Pending => {}
        }
    }
    loop {
        if let Some(len) = head_end(buf) {
            let bad = |e| Failed::sent(ErrorKind::BadHead(e), reused);
            // A head too long for the room `Live` has for it goes by the
            // map, as does an HTTP/2 client's.
            if !copy_out && let Ok(len16) = u16::try_from(len) {
                match scan_response(&mut buf[..len], head_request).map_err(bad)? {
                    Scanned::Raw { status, .. } if is_interim(status) => {
                        buf.advance(len);
                        continue;
                    }
                    Scanned::Raw {
                        status,
                        framing,
                        reusable,
                        flags,
                        kept,
                    } => {
                        // The head stays at the front of `buf`, its fields
                        // moved together, until the client's writer takes
                        // it.
                        let raw = RawAt {
                            len: len16,
                            kept: u16::try_from(kept).unwrap_or(len16),
                            flags,
                        };
                        return Poll::Ready(Ok(Final::Raw(status, framing, reusable, raw)));
                    }
                    // Read again into the map: the scan moved nothing.
                    Scanned::Map(_) => {}
                }
            }
            // The fields may outlive the read buffer's turn (see
            // `COPY_BELOW`); a head is a few hundred bytes.
            let head = take_front(buf, len, copy_out);
            let built = parse_response(&head, head_request).map_err(bad)?;
            if is_interim(built.0.status()) {
                continue;
            }
            return Poll::Ready(Ok(Final::Map(built)));
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Poll::Ready(Err(Failed::sent(ErrorKind::HeadTooLarge, reused)));
        }
        let read = match read_some(io, cx, buf) {
            Poll::Ready(read) => read,
            Poll::Pending => {
                return match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Failed::timeout(timeout, reused))),
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        match read {
            Ok(0) if *write_failed => {
                return Poll::Ready(Err(Failed::sent(ErrorKind::StoppedReading, reused)));
            }
            Ok(0) => {
                return Poll::Ready(Err(Failed::sent(ErrorKind::ClosedBeforeResponse, reused)));
            }
            Ok(_) => {}
            Err(e) => {
                return Poll::Ready(Err(Failed::sent(ErrorKind::ResetAfterSending(e), reused)));
            }
        }
    }
}

/// A response head in the form its client takes: an HTTP/1 client's
/// fields go back as the backend sent them (`raw`: the head, of the given
/// length, is left at the front of the read buffer), an HTTP/2 client's
/// (`copy_out`) in the map hyper writes, as do the heads only the map
/// carries.
#[derive(Debug)]
enum Final {
    Map(ResponseHead),
    Raw(StatusCode, Framing, bool, RawAt),
}

/// Where a raw head is in the read buffer: its length at the front and
/// how much of that is the fields the client gets (see `raw::compact`).
/// Two `u16`s and a byte: `Live` has the room without growing.
#[derive(Clone, Copy, Debug, Default)]
struct RawAt {
    len: u16,
    kept: u16,
    flags: RawFlags,
}

/// Reads into `buf`, which holds a pooled buffer only while it has bytes
/// in it or a read is under way: an exchange waiting on its backend holds
/// none.
fn read_some(io: &mut Stream, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    if buf.capacity() == 0 {
        // No buffer is taken (and given back) while nothing has arrived.
        ready!(io.poll_read_ready(cx))?;
        *buf = pool::take();
    }
    pool::room(buf);
    let read = io.poll_read_buf(cx, buf);
    if read.is_pending() && buf.is_empty() {
        pool::give(std::mem::take(buf));
    }
    read
}

/// `n` bytes off the front of `buf`, copied when short and `copy_out` (see
/// `COPY_BELOW`).
fn take_front(buf: &mut BytesMut, n: usize, copy_out: bool) -> Bytes {
    if copy_out && n < COPY_BELOW {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// A final response head as an exchange reads it.
#[derive(Debug)]
pub struct HeadView {
    /// Bytes from the start of the buffer to the end of this head,
    /// interim heads included.
    pub len: usize,
    pub response: Response<()>,
    pub body: Framing,
    /// Whether the connection could carry another request afterwards.
    pub reusable: bool,
}

/// Reads the first final response head in `buf` by the rules of an
/// exchange (interim `1xx` heads passed over): `None` while it is not all
/// there. For the fuzz check; an exchange reads the same way as bytes come.
pub fn read_head(buf: &[u8], head_request: bool) -> Option<Result<HeadView, BadHead>> {
    let (_, len, (response, body, reusable)) =
        match read_final_with(buf, head_request, parse_response, |(res, ..)| res.status())? {
            Ok(read) => read,
            Err(e) => return Some(Err(e)),
        };
    Some(Ok(HeadView {
        len,
        response,
        body,
        reusable,
    }))
}

/// As [`read_head`], the way an HTTP/1 client's exchange reads it (the
/// fields left in the head's bytes where they can be): where the final
/// head starts and ends, what it says, and the head as the scan left it
/// (a client's fields at its front). For the fuzz check, which holds the
/// two readings to the same answer.
pub fn scan_head(buf: &[u8], head_request: bool) -> Option<Result<ScannedHead, BadHead>> {
    let scan = |head: &Bytes, head_request| {
        let mut head = head.to_vec();
        scan_response(&mut head, head_request).map(|s| (s, head))
    };
    let read = read_final_with(buf, head_request, scan, |(s, _)| s.status())?;
    Some(read.map(|(start, end, (scanned, head))| (start, end, scanned, head)))
}

/// See [`scan_head`].
pub type ScannedHead = (usize, usize, Scanned, Vec<u8>);

fn read_final_with<T>(
    buf: &[u8],
    head_request: bool,
    read: impl Fn(&Bytes, bool) -> Result<T, BadHead>,
    status: impl Fn(&T) -> StatusCode,
) -> Option<Result<(usize, usize, T), BadHead>> {
    let mut start = 0;
    loop {
        let len = head_end(&buf[start..])?;
        let head = Bytes::copy_from_slice(&buf[start..start + len]);
        start += len;
        return Some(match read(&head, head_request) {
            Ok(read) if is_interim(status(&read)) => continue,
            Ok(read) => Ok((start - len, start, read)),
            Err(e) => Err(e),
        });
    }
}

/// An exchange past its response head.
#[derive(Debug)]
struct Live {
    conn: Connection,
    /// Bytes read past the head; the head itself first while `head` is
    /// not 0.
    buf: BytesMut,
    /// A raw head (see `raw`) at the front of `buf` while its `len` is
    /// not 0: until the writer takes it (or it is dropped unwritten).
    head: RawAt,
    /// What is left of the body: a `Length` counts down.
    framing: Framing,
    /// Where a `Chunked` body's decoding is.
    chunks: Decoder,
    /// What is left of the request body (boxed: it holds a body of its
    /// own, and most requests have none left by now).
    send: Option<Box<Sending>>,
    reusable: bool,
    /// See [`Connection::exchange`].
    copy_out: bool,
}

impl Live {
    /// Lets go of a raw head still at the front of `buf`.
    fn drop_head(&mut self) {
        if self.head.len > 0 {
            self.buf.advance(usize::from(self.head.len));
            self.head = RawAt::default();
        }
    }
}

impl std::fmt::Debug for Sending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("chunked", &self.chunked)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// A response body read straight off its upstream connection.
#[derive(Debug)]
pub struct ResponseBody {
    /// `None` once the body is complete (its connection pooled or closed).
    live: Option<Live>,
}

/// The upstream end of a switched connection, with any bytes the backend
/// sent behind its `101`.
pub type Upgraded = Rewind<Stream>;

impl ResponseBody {
    fn new(live: Live) -> ResponseBody {
        let mut body = ResponseBody { live: Some(live) };
        // A raw head is in the buffer until the writer takes it: the
        // connection is let go then.
        if body
            .live
            .as_ref()
            .is_some_and(|l| matches!(l.framing, Framing::Empty) && l.head.len == 0)
        {
            body.finish();
        }
        body
    }

    /// Whether the rest of the body is already read: nothing more will
    /// come from the backend.
    pub fn is_in_hand(&self) -> bool {
        self.live.as_ref().is_none_or(|l| match l.framing {
            Framing::Empty => true,
            // A raw head still in the buffer is not body.
            Framing::Length(left) => (l.buf.len() - usize::from(l.head.len)) as u64 >= left,
            Framing::Chunked | Framing::Close | Framing::Upgrade => false,
        })
    }

    /// The response head as the backend sent it, for an HTTP/1 client's
    /// writer; `None` when its fields are in the response's map. Taken
    /// before the body is read.
    pub fn take_raw(&mut self) -> Option<RawHead> {
        let live = self.live.as_mut().filter(|l| l.head.len > 0)?;
        let mut head = live.buf.split_to(usize::from(live.head.len));
        head.truncate(usize::from(live.head.kept));
        let raw = RawHead::new(head.freeze(), live.head.flags);
        live.head = RawAt::default();
        if matches!(live.framing, Framing::Empty) {
            self.finish();
        }
        Some(raw)
    }

    /// The connection of a `101` response, for the tunnel.
    pub fn upgrade(&mut self) -> Option<Upgraded> {
        let mut live = self
            .live
            .take_if(|l| matches!(l.framing, Framing::Upgrade))?;
        live.drop_head();
        let prefix = live.buf.freeze();
        Some(Rewind::new(prefix, live.conn.io))
    }

    /// The body is complete: the connection goes back to the pool if the
    /// exchange left it clean, and is closed otherwise.
    fn finish(&mut self) {
        let Some(mut live) = self.live.take() else {
            return;
        };
        live.drop_head();
        let clean = live.reusable && live.send.is_none() && live.buf.is_empty();
        if clean {
            if live.buf.capacity() > 0 {
                pool::give(live.buf);
            }
            upstream::checkin(live.conn);
        }
    }

    /// The body cannot be completed: drop the connection.
    fn fail(&mut self, why: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.live = None;
        Poll::Ready(Some(Err(why.into())))
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body whose end is already in hand frees its connection even if
        // nobody polls that end.
        if self
            .live
            .as_ref()
            .is_some_and(|l| matches!(l.framing, Framing::Length(0) | Framing::Empty))
        {
            self.finish();
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
        let Some(live) = &mut this.live else {
            return Poll::Ready(None);
        };
        // Read without the writer having taken the head: the body starts
        // after it.
        live.drop_head();
        if let Some(send) = &mut live.send {
            match send.poll(&mut live.conn.io, cx) {
                Poll::Ready(Ok(())) => live.send = None,
                Poll::Ready(Err(SendError::Body(e))) => return this.fail(e),
                // The backend stopped reading; its answer may still be
                // whole.
                Poll::Ready(Err(SendError::Io)) => {
                    live.send = None;
                    live.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match &mut live.framing {
                Framing::Empty | Framing::Upgrade | Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !live.buf.is_empty() {
                        let n = usize::try_from(*left)
                            .map_or(live.buf.len(), |l| l.min(live.buf.len()));
                        *left -= n as u64;
                        let data = take_front(&mut live.buf, n, live.copy_out);
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked => match live.chunks.decode(&mut live.buf) {
                    Ok(Decoded::Data(data)) => {
                        let data = if live.copy_out && data.len() < COPY_BELOW {
                            Bytes::copy_from_slice(&data)
                        } else {
                            data
                        };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::NeedMore) => {}
                    Ok(Decoded::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Err(_) => return this.fail("invalid chunked response body"),
                },
                Framing::Close => {
                    if !live.buf.is_empty() {
                        let n = live.buf.len();
                        let data = take_front(&mut live.buf, n, live.copy_out);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(read_some(&mut live.conn.io, cx, &mut live.buf)) {
                Ok(0) if matches!(live.framing, Framing::Close) => {
                    this.live = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("upstream closed the connection mid-body"),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.live
            .as_ref()
            .is_none_or(|l| matches!(l.framing, Framing::Empty | Framing::Length(0)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.live.as_ref().map(|l| &l.framing) {
            None | Some(Framing::Empty | Framing::Upgrade) => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn interim_responses_are_passed_over_but_not_101_or_garbage() {
        let view = |raw: &[u8]| {
            read_head(raw, false)
                .expect("whole")
                .map(|v| v.response.status())
        };
        let hints = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(view(hints), Ok(StatusCode::OK));
        let switching = b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(view(switching), Ok(StatusCode::SWITCHING_PROTOCOLS));
        // Nine bytes and a `1` are not an interim answer.
        assert_eq!(
            view(b"GARBAGE! 100 x\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
            Err(BadHead("invalid HTTP version"))
        );
        assert!(read_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", false).is_none());
    }

    #[test]
    fn the_request_head_says_what_is_sent() {
        let req = Request::post("/up?x=1")
            .header("host", "a")
            .header("transfer-encoding", "chunked")
            .header("content-length", "99")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let mut out = BytesMut::new();
        write_head(&mut out, &parts, Framing::Length(12345));
        assert_eq!(
            &out[..],
            b"POST /up?x=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 12345\r\n\r\n"
        );
        out.clear();
        write_head(&mut out, &parts, Framing::Chunked);
        assert!(out.ends_with(b"host: a\r\ntransfer-encoding: chunked\r\n\r\n"));
        out.clear();
        put_decimal(&mut out, 0);
        put_decimal(&mut out, u64::MAX);
        assert_eq!(&out[..], b"018446744073709551615");
    }

    /// What the backend does after reading the request head.
    enum Backend {
        Close,
        Answer(&'static [u8]),
        Silent,
    }

    /// One GET exchange against a local backend that does `then`, on a
    /// new connection or (`reused`) one back from the pool.
    async fn failed_exchange(then: Backend, reused: bool) -> Failed {
        use tokio::io::AsyncReadExt;
        let wait = Duration::from_secs(5);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let authority: http::uri::Authority = listener
            .local_addr()
            .expect("addr")
            .to_string()
            .parse()
            .expect("authority");
        let backend = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if s.read(&mut byte).await.expect("read") == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            match then {
                Backend::Close => {}
                Backend::Answer(bytes) => {
                    let _ = s.write_all(bytes).await;
                    let _ = s.read(&mut [0u8; 1]).await;
                }
                Backend::Silent => {
                    let _ = s.read(&mut [0u8; 1]).await;
                }
            }
        });
        let connector = upstream::Connector::new(wait);
        let mut conn = connector
            .connect(&authority, None, &upstream::Trust::default(), wait, wait)
            .await
            .expect("connect");
        conn.reused = reused;
        let req = Request::get("/").body(ProxyBody::empty()).expect("request");
        let timeout = Duration::from_millis(200);
        let failed = conn
            .exchange(req, false, timeout)
            .await
            .expect_err("no response");
        backend.abort();
        failed
    }

    /// The error a sent request failed with.
    fn sent_error(failed: Failed) -> Error {
        match failed {
            Failed::Sent { error, head } => {
                assert!(head.is_some(), "a bodyless request keeps its head");
                error
            }
            other => panic!("not a failure after sending: {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_way_an_exchange_fails_has_its_kind() {
        let closed = sent_error(failed_exchange(Backend::Close, false).await);
        assert!(
            matches!(closed.kind(), ErrorKind::ClosedBeforeResponse),
            "{closed:?}"
        );
        assert!(!closed.reused());
        let closed = sent_error(failed_exchange(Backend::Close, true).await);
        assert!(closed.reused(), "the pooled connection is named");

        let bad = sent_error(failed_exchange(Backend::Answer(b"GARBAGE!\r\n\r\n"), false).await);
        assert!(
            matches!(bad.kind(), ErrorKind::BadHead(BadHead(_))),
            "{bad:?}"
        );

        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_RESPONSE_HEAD + 16, b'a');
        let huge: &'static [u8] = huge.leak();
        let large = sent_error(failed_exchange(Backend::Answer(huge), false).await);
        assert!(matches!(large.kind(), ErrorKind::HeadTooLarge), "{large:?}");

        match failed_exchange(Backend::Silent, true).await {
            Failed::Timeout(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Timeout(d) if *d == Duration::from_millis(200)),
                    "{e:?}"
                );
                assert!(e.reused());
            }
            other => panic!("not a timeout: {other:?}"),
        }
    }
}
