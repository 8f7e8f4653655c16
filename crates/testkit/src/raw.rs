//! HTTP/1.1 over a bare TCP socket, for tests that must see the bytes on
//! the wire: interim `1xx` answers, what happens on the same connection
//! after an answer, a client that sends its body late.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response head and its body (empty for a `1xx` or `101`).
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::headers::find(&self.headers, name)
    }
}

/// A client connection that writes what it is given and parses what comes
/// back. Every read waits at most `timeout` (then `TimedOut`).
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    /// Received and not yet consumed.
    buf: Vec<u8>,
    timeout: Duration,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<RawConn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(RawConn {
            stream,
            buf: Vec::new(),
            timeout,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response head (an interim `1xx` included), without its body.
    pub async fn read_head(&mut self) -> io::Result<RawResponse> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        parse_head(&head)
    }

    /// Reads one final response: skips nothing, so call
    /// [`read_head`](RawConn::read_head) first for an expected `1xx`. The
    /// body is framed by `content-length` or `chunked`; without either the
    /// response has no body here (this helper is for keep-alive answers).
    pub async fn read_response(&mut self) -> io::Result<RawResponse> {
        let mut res = self.read_head().await?;
        if res.status < 200 || res.status == 204 || res.status == 304 {
            return Ok(res);
        }
        let chunked = res
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            res.body = self.read_chunked().await?;
        } else if let Some(len) = res.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
            res.body = self.read_exact_buf(len).await?;
        }
        Ok(res)
    }

    /// Waits for the peer to close: `Ok(())` on EOF (or a reset), an error
    /// if bytes arrive instead or nothing happens within the timeout.
    pub async fn expect_closed(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Err(invalid(format!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            )));
        }
        match self.fill().await {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
            Ok(()) => Err(invalid(format!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ))),
        }
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact_buf(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err(invalid("chunk not followed by CRLF".into()));
            }
        }
    }

    async fn read_line(&mut self) -> io::Result<String> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let line: Vec<u8> = self.buf.drain(..end + 2).collect();
        Ok(String::from_utf8_lossy(&line[..end]).into_owned())
    }

    async fn read_exact_buf(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < len {
            self.fill().await?;
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// Reads more bytes into the buffer; EOF is `UnexpectedEof`.
    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing read within {:?}", self.timeout),
                )
            })??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn parse_head(head: &[u8]) -> io::Result<RawResponse> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!(
            "not an HTTP/1 status line: {status_line:?}"
        )));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
            None => Err(invalid(format!("bad header line {l:?}"))),
        })
        .collect::<io::Result<_>>()?;
    Ok(RawResponse {
        status,
        reason,
        headers,
        body: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_head;

    #[test]
    fn parses_a_head() {
        let r = parse_head(b"HTTP/1.1 100 Continue\r\n\r\n").expect("head");
        assert_eq!((r.status, r.reason.as_str()), (100, "Continue"));
        let r =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\n").expect("head");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("3"));
        assert_eq!(r.header("x-a"), Some("b"));
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }
}
