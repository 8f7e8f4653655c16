//! Why an attempt at an upstream failed, and where: one typed error for
//! connecting (`super::Connector::connect`) and for the exchange
//! (`crate::http1::client`), read by the retry policy
//! (`crate::forward::retry`).
//!
//! Nothing here is formatted until an error is printed: the request path
//! builds no string, failed or not. `Display` is what the proxy's log lines
//! have always said; `source` gives the underlying I/O, TLS or parse error.

use std::io;
use std::time::Duration;

use crate::http1::BadHead;

/// An upstream attempt's failure: what went wrong ([`ErrorKind`]) and
/// whether it was on a pooled connection.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// On a connection taken from the pool (a connect failure never is).
    reused: bool,
}

/// What went wrong, in the order an attempt meets it. The first five
/// leave the request unsent, and so do the HTTP/2 target's refusals
/// ([`NoH2`](ErrorKind::NoH2), [`Refused`](ErrorKind::Refused)); the
/// others happen once it may have been (partly) written;
/// [`Timeout`](ErrorKind::Timeout) is neither's fault.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The member's host name did not resolve.
    #[error("resolve: {0}")]
    Dns(#[source] io::Error),
    /// No address took the TCP connection (refused, unreachable).
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// The connection (lookup, TCP and TLS) took longer than the connect
    /// timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake failed: rustls says why a certificate was refused
    /// ("invalid peer certificate: UnknownIssuer").
    #[error("TLS: {0}")]
    Tls(#[source] Box<Tls>),
    /// A `protocol = "h2"` target's TLS did not agree to ALPN `h2`.
    #[error("TLS: the target did not agree to HTTP/2 (ALPN h2)")]
    NoH2,
    /// An HTTP/2 target did not process the stream: it refused it
    /// (`REFUSED_STREAM`) or went away below it (GOAWAY's last stream id),
    /// and what was sent of it is kept to send again (`crate::http2`).
    #[error("HTTP/2 stream not processed ({0})")]
    Refused(h2::Reason),
    /// Writing the request failed before one byte of it went out.
    #[error("write: {0}")]
    NotSent(#[source] io::Error),
    /// Writing the request failed part way.
    #[error("write: {0}")]
    PartlySent(#[source] io::Error),
    /// Reading the answer failed (a reset) after the request was written.
    #[error("read: {0}")]
    ResetAfterSending(#[source] io::Error),
    /// The backend closed without a response.
    #[error("connection closed before a response")]
    ClosedBeforeResponse,
    /// The backend stopped taking the request body, then closed without a
    /// response.
    #[error("the backend stopped reading the request and closed")]
    StoppedReading,
    /// The response head broke HTTP/1.1's rules.
    #[error("{0}")]
    BadHead(#[source] BadHead),
    /// The response head went past the proxy's limit.
    #[error("response head too large")]
    HeadTooLarge,
    /// The HTTP/2 exchange failed once the request may have been
    /// processed (a reset stream, a lost connection).
    #[error("HTTP/2: {0}")]
    Http2(#[source] hyper::Error),
    /// No response head within the response timeout.
    #[error("no response head within {0:?}")]
    Timeout(Duration),
}

/// A failed TLS handshake: rustls's own error where it gave one, else the
/// socket's.
#[derive(Debug, thiserror::Error)]
pub enum Tls {
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    Io(io::Error),
}

// === impl Error ===

impl Error {
    pub fn new(kind: ErrorKind, reused: bool) -> Error {
        Error { kind, reused }
    }

    /// A failure to open a new connection.
    pub(crate) fn connect(kind: ErrorKind) -> Error {
        Error::new(kind, false)
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Whether it happened on a pooled connection.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether the request was certainly not sent: nothing of it reached
    /// the target.
    pub fn not_sent(&self) -> bool {
        self.kind.not_sent()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Error {
    /// The I/O, rustls or head-parsing error underneath, where there is one.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Tls(tls) => match &**tls {
                Tls::Rustls(e) => Some(e),
                Tls::Io(e) => Some(e),
            },
            kind => std::error::Error::source(kind),
        }
    }
}

// === impl ErrorKind ===

impl ErrorKind {
    /// A failed TLS handshake, keeping rustls's error when the I/O error
    /// carries one.
    pub(crate) fn tls(e: io::Error) -> ErrorKind {
        let tls = match e.downcast::<rustls::Error>() {
            Ok(rustls) => Tls::Rustls(rustls),
            Err(e) => Tls::Io(e),
        };
        ErrorKind::Tls(Box::new(tls))
    }

    /// Whether nothing of the request reached the target.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            ErrorKind::Dns(_)
                | ErrorKind::Connect(_)
                | ErrorKind::ConnectTimeout(_)
                | ErrorKind::Tls(_)
                | ErrorKind::NoH2
                | ErrorKind::Refused(_)
                | ErrorKind::NotSent(_)
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::error::Error as _;

    /// One of each kind, and the line the log prints for it.
    pub(crate) fn each_kind() -> Vec<(ErrorKind, &'static str)> {
        let io = |kind| io::Error::from(kind);
        vec![
            (
                ErrorKind::Dns(io::Error::other("SERVFAIL")),
                "resolve: SERVFAIL",
            ),
            (
                ErrorKind::Connect(io(io::ErrorKind::ConnectionRefused)),
                "connect: connection refused",
            ),
            (
                ErrorKind::ConnectTimeout(Duration::from_millis(500)),
                "connect timed out after 500ms",
            ),
            (
                ErrorKind::tls(io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                )),
                "TLS: invalid peer certificate: UnknownIssuer",
            ),
            (
                ErrorKind::NoH2,
                "TLS: the target did not agree to HTTP/2 (ALPN h2)",
            ),
            (
                ErrorKind::Refused(h2::Reason::REFUSED_STREAM),
                "HTTP/2 stream not processed (refused stream before processing any application logic)",
            ),
            (
                ErrorKind::NotSent(io(io::ErrorKind::BrokenPipe)),
                "write: broken pipe",
            ),
            (
                ErrorKind::PartlySent(io(io::ErrorKind::ConnectionReset)),
                "write: connection reset",
            ),
            (
                ErrorKind::ResetAfterSending(io(io::ErrorKind::ConnectionReset)),
                "read: connection reset",
            ),
            (
                ErrorKind::ClosedBeforeResponse,
                "connection closed before a response",
            ),
            (
                ErrorKind::StoppedReading,
                "the backend stopped reading the request and closed",
            ),
            (
                ErrorKind::BadHead(BadHead("no status")),
                "invalid response head: no status",
            ),
            (ErrorKind::HeadTooLarge, "response head too large"),
            (
                ErrorKind::Timeout(Duration::from_secs(5)),
                "no response head within 5s",
            ),
        ]
    }

    #[test]
    fn each_kind_says_what_the_log_always_said() {
        for (i, (kind, want)) in each_kind().into_iter().enumerate() {
            let reused = i % 2 == 1;
            let debug = format!("{kind:?}");
            let e = Error::new(kind, reused);
            assert_eq!(e.to_string(), want, "{debug}");
            assert_eq!(e.reused(), reused);
            // The source is the underlying error, where there is one.
            let has_source = matches!(
                e.kind(),
                ErrorKind::Dns(_)
                    | ErrorKind::Connect(_)
                    | ErrorKind::Tls(_)
                    | ErrorKind::NotSent(_)
                    | ErrorKind::PartlySent(_)
                    | ErrorKind::ResetAfterSending(_)
                    | ErrorKind::BadHead(_)
            );
            assert_eq!(e.source().is_some(), has_source, "{debug}");
        }
    }

    #[test]
    fn tls_keeps_the_rustls_error_as_its_source() {
        let e = Error::connect(ErrorKind::tls(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        let source = e.source().expect("a source");
        assert!(
            matches!(
                source.downcast_ref::<rustls::Error>(),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "{source:?}"
        );
        let plain = ErrorKind::tls(io::ErrorKind::UnexpectedEof.into());
        assert!(
            matches!(&plain, ErrorKind::Tls(t) if matches!(**t, Tls::Io(_))),
            "{plain:?}"
        );
        let bad = Error::new(ErrorKind::BadHead(BadHead("no status")), true);
        assert_eq!(
            bad.source().and_then(|s| s.downcast_ref::<BadHead>()),
            Some(&BadHead("no status"))
        );
    }
}
