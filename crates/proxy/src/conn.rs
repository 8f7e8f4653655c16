//! A connection's byte stream (plain TCP, or TLS over it), one type for
//! both directions, and what is known about an accepted client connection.
//! `server.rs` makes client streams and `upstream` backend ones; past them
//! nothing needs to know how the bytes arrive, only what [`ConnInfo`] says.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// What is known about a client connection once it is established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `None`: plain TCP.
    pub tls: Option<TlsInfo>,
}

/// The TLS session's negotiated facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// The ALPN protocol agreed on (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI), if any.
    pub sni: Option<String>,
}

/// A connection's bytes, either way: a client's accepted connection or
/// one the proxy opened to a backend. TLS is boxed: its session state is
/// large, and plain connections should not pay for it.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The facts of a client's TLS session, read once after the handshake.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let TlsStream::Server(tls) = &**tls else {
            return None;
        };
        let (_, session) = tls.get_ref();
        Some(TlsInfo {
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            sni: session.server_name().map(str::to_owned),
        })
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether an idle connection can take a request: the peer has neither
    /// closed it nor sent anything. Between exchanges a backend has nothing
    /// to say, so any byte (over TLS, a `close_notify`) means it is going
    /// away. One non-blocking read, and none while the reactor has seen
    /// nothing arrive.
    pub fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.tcp().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether a read may find bytes, without one: over TLS always (the
    /// session may hold decrypted bytes), so only the read tells.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    /// Reads what is there into `buf` (which has room): `Ok(0)` is the
    /// peer's end of stream.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        // The future reads on its first poll or registers for readiness
        // and reads nothing: polling it once is a poll of the read.
        std::pin::pin!(tokio::io::AsyncReadExt::read_buf(self, buf)).poll(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
