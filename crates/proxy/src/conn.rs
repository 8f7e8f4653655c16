//! An accepted client connection: its byte stream (plain TCP, or TLS over
//! it) and what is known about it. `server.rs` makes these and hands them to
//! hyper; nothing after it needs to know how the bytes arrived, only what
//! [`ConnInfo`] says.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

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

/// A client connection's bytes.
#[derive(Debug)]
pub enum ClientIo {
    Plain(TcpStream),
    /// Boxed: a TLS session's state is large, and plain connections should
    /// not pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientIo {
    /// The facts of a TLS session, read once after the handshake.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            ClientIo::Plain(_) => None,
            ClientIo::Tls(tls) => {
                let (_, session) = tls.get_ref();
                Some(TlsInfo {
                    alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    sni: session.server_name().map(str::to_owned),
                })
            }
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(s) => s.is_write_vectored(),
            ClientIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
