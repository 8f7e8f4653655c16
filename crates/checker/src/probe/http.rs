//! The HTTP probe: `GET {path}` with the target's Host, answered with a
//! status in 200-399; over TLS for an `https://` target, verified like the
//! proxy's own connections.
//!
//! Probes of one target share one kept-alive connection: a checker probing
//! 10,000 targets every second would otherwise open 10,000 connections a
//! second, each a TIME_WAIT socket and, behind Docker or Kubernetes, a
//! connection-tracking entry for two minutes. A new connection is opened
//! only when there is none: at the first probe, after a failed probe (which
//! drops its connection, so a target that hangs or answers badly is
//! judged afresh), or when the target closed the idle connection. A kept
//! connection that turns out closed before it answered is retried once on
//! a new one, so a server's keep-alive timeout is never a failed probe.
//!
//! What is kept between probes is the socket (and a TLS session's state
//! for `https://`), nothing else: no client connection object, no buffer.
//! A probe writes its request, reads the answer's head into a buffer of
//! its own (see `head.rs`), reads the body to its end as the head frames
//! it (Content-Length, chunked, or to the close) so the connection can
//! carry the next probe, and lets the buffer go.

use std::net::SocketAddr;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::head::{self, Body, Head};
use super::{Addrs, ProbeError};

/// A response body longer than this is not read to its end; the probe
/// still counts, but the connection is closed rather than kept.
const MAX_KEPT_BODY: usize = 64 * 1024;
/// The first read's buffer: a probe's answer head is usually a few hundred
/// bytes.
const FIRST_READ: usize = 1024;
/// How much the buffer grows by when an answer needs more.
const READ_CHUNK: usize = 4096;

/// A connection kept between probes: its socket, nothing else.
pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Plain(_) => "Conn::Plain",
            Conn::Tls(_) => "Conn::Tls",
        })
    }
}

/// How one exchange went.
struct Exchanged {
    status: u16,
    /// The connection can carry the next probe.
    reusable: bool,
}

/// Why an exchange failed, and whether it failed before any answer.
struct Failed {
    before_response: bool,
    message: String,
}

/// One probe. `kept` is the target's connection, if it has one; on
/// success the connection to keep is put back there.
pub(super) async fn probe(
    kept: &mut Option<Conn>,
    addrs: &mut Addrs,
    authority: &str,
    path: &str,
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<(), ProbeError> {
    if let Some(mut conn) = kept.take() {
        match exchange(&mut conn, authority, path).await {
            Ok(done) => return finish(kept, conn, &done),
            // Closed by the target while idle: try a new connection.
            Err(e) if e.before_response => {}
            Err(e) => return Err(e.message.into()),
        }
    }
    // Looked up only for a new connection.
    let mut conn = connect(&addrs.get().await?, tls).await?;
    match exchange(&mut conn, authority, path).await {
        Ok(done) => finish(kept, conn, &done),
        Err(e) => Err(e.message.into()),
    }
}

fn finish(kept: &mut Option<Conn>, conn: Conn, done: &Exchanged) -> Result<(), ProbeError> {
    if !(200..400).contains(&done.status) {
        return Err(format!("status {}", done.status).into());
    }
    if done.reusable {
        *kept = Some(conn);
    }
    Ok(())
}

async fn connect(
    addrs: &[SocketAddr],
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<Conn, ProbeError> {
    let stream = TcpStream::connect(addrs)
        .await
        .map_err(|e| ProbeError::connect(&e))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Conn::Plain(stream)),
        Some((connector, name)) => {
            // rustls says why a certificate was refused
            // ("invalid peer certificate: UnknownIssuer").
            // Boxed: the handshake's state is large and only TLS needs it.
            let stream = Box::pin(connector.connect(name, stream))
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok(Conn::Tls(Box::new(stream)))
        }
    }
}

async fn exchange(conn: &mut Conn, authority: &str, path: &str) -> Result<Exchanged, Failed> {
    match conn {
        Conn::Plain(io) => {
            send(io, authority, path).await?;
            // Nothing is allocated for the answer until it is there: a
            // thousand probes waiting on slow targets hold their sockets
            // and their futures, not a buffer each.
            io.readable().await.map_err(|e| early("answer", &e))?;
            answer(io).await
        }
        Conn::Tls(io) => {
            send(io.as_mut(), authority, path).await?;
            answer(io.as_mut()).await
        }
    }
}

fn early(what: &str, e: &std::io::Error) -> Failed {
    Failed {
        before_response: true,
        message: format!("{what}: {e}"),
    }
}

async fn send<T>(io: &mut T, authority: &str, path: &str) -> Result<(), Failed>
where
    T: AsyncWrite + Unpin,
{
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: tether-checker\r\n\r\n");
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| early("request", &e))?;
    io.flush().await.map_err(|e| early("request", &e))
}

async fn answer<T>(io: &mut T) -> Result<Exchanged, Failed>
where
    T: AsyncRead + Unpin,
{
    // The head: everything up to the blank line, 1xx interim answers
    // skipped. Anything that goes wrong before a whole head arrived may be
    // a kept connection the target had already closed.
    let mut buf = Vec::new();
    let head = loop {
        match head::parse(&buf) {
            Ok(Some(head)) if head.interim => {
                buf.drain(..head.len);
            }
            Ok(Some(head)) => break head,
            Ok(None) => {
                if buf.len() >= head::MAX_HEAD {
                    return Err(Failed {
                        before_response: false,
                        message: format!("answer head longer than {} bytes", head::MAX_HEAD),
                    });
                }
                if read_some(io, &mut buf)
                    .await
                    .map_err(|e| early("answer", &e))?
                    == 0
                {
                    return Err(Failed {
                        before_response: true,
                        message: "connection closed before an answer".to_owned(),
                    });
                }
            }
            Err(why) => {
                return Err(Failed {
                    before_response: true,
                    message: format!("answer: {why}"),
                });
            }
        }
    };
    buf.drain(..head.len);
    let Head {
        status, keep_alive, ..
    } = head;
    let body = read_body(io, buf, head.body)
        .await
        .map_err(|message| Failed {
            before_response: false,
            message,
        })?;
    Ok(Exchanged {
        status,
        reusable: keep_alive && body == BodyEnd::Complete,
    })
}

/// How a body's reading ended.
#[derive(Debug, PartialEq, Eq)]
enum BodyEnd {
    /// At its framed end: the connection can carry another exchange.
    Complete,
    /// Longer than [`MAX_KEPT_BODY`], or delimited by the close.
    Abandoned,
}

/// Reads the body framed by `body` to its end (`buf` holds what arrived
/// after the head).
async fn read_body<T>(io: &mut T, mut buf: Vec<u8>, body: Body) -> Result<BodyEnd, String>
where
    T: AsyncRead + Unpin,
{
    let body_error = |e: std::io::Error| format!("body: {e}");
    match body {
        Body::None => Ok(BodyEnd::Complete),
        Body::Length(n) => {
            if n > MAX_KEPT_BODY as u64 {
                return Ok(BodyEnd::Abandoned);
            }
            // `n` is at most MAX_KEPT_BODY.
            let n = n as usize;
            while buf.len() < n {
                if read_some(io, &mut buf).await.map_err(body_error)? == 0 {
                    return Err("body: connection closed before the body's end".to_owned());
                }
            }
            Ok(BodyEnd::Complete)
        }
        Body::Chunked => {
            let mut chunks = head::Chunked::default();
            let mut read = 0usize;
            loop {
                match chunks.feed(&buf).map_err(|why| format!("body: {why}"))? {
                    head::Fed::Done => return Ok(BodyEnd::Complete),
                    head::Fed::More(used) => {
                        buf.drain(..used);
                        read += used;
                    }
                }
                if read > MAX_KEPT_BODY {
                    return Ok(BodyEnd::Abandoned);
                }
                if read_some(io, &mut buf).await.map_err(body_error)? == 0 {
                    return Err("body: connection closed before the body's end".to_owned());
                }
            }
        }
        Body::UntilClose => {
            let mut read = buf.len();
            while read <= MAX_KEPT_BODY {
                buf.clear();
                match read_some(io, &mut buf).await.map_err(body_error)? {
                    0 => break,
                    n => read += n,
                }
            }
            Ok(BodyEnd::Abandoned)
        }
    }
}

/// Appends what one read gives to `buf`, which grows by at most
/// [`READ_CHUNK`] (and is never zeroed first); 0 at the end of the stream.
async fn read_some<T>(io: &mut T, buf: &mut Vec<u8>) -> std::io::Result<usize>
where
    T: AsyncRead + Unpin,
{
    if buf.capacity() == buf.len() {
        // A probe's answer usually fits the first read.
        buf.reserve(if buf.is_empty() {
            FIRST_READ
        } else {
            READ_CHUNK
        });
    }
    io.read_buf(buf).await
}
