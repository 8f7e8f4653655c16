//! Malformed and hostile HTTP/1.1 input against an in-process proxy, as raw
//! bytes on a TCP socket. Each row of a table follows section 3 ("Bad-input
//! catalogue") of shared/research/reliability.md: the exact bytes sent, the
//! status expected back, whether the proxy must close the connection, and
//! for rows that are forwarded, what the backend must have received. Every
//! refused row must leave the backend untouched.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Running, checker_config, healthy_checker, now_ms};
use tether_core::HealthState;
use tether_testkit::{FakeBackend, FakeChecker, RecordedRequest, eventually, get, status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// Longest wait for the proxy to come up.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait for one response.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait for the proxy to close a connection it must close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
/// The proxy's header read timeout in these tests (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// The proxy's body limit in these tests.
const MAX_BODY: u64 = 1024;
/// The only pool member.
const BACKEND: &str = "app-1";
/// A valid request sent on a connection that must still be usable.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n";

// === the proxy under test ===

/// A proxy with one healthy backend, fed by a fake checker.
struct Harness {
    proxy: Running,
    backend: FakeBackend,
    _checker: FakeChecker,
}

impl Harness {
    async fn start() -> Harness {
        let backend = FakeBackend::start(BACKEND).await;
        let checker = healthy_checker(std::slice::from_ref(&backend)).await;
        let mut config = checker_config(&checker);
        config.header_read_timeout = HEADER_READ_TIMEOUT;
        config.drain_timeout = Duration::from_secs(1);
        config.limits.max_body_bytes = Some(MAX_BODY);
        let proxy = Running::start(config).await;
        let addr = proxy.addr;
        eventually("the proxy forwards a plain GET", START_DEADLINE, || async {
            let reply = get(addr, "/ready", &[]).await.ok()?;
            (reply.status == 200).then_some(())
        })
        .await;
        Harness {
            proxy,
            backend,
            _checker: checker,
        }
    }

    async fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.proxy.addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn stop(self) {
        self.proxy.stop().await;
    }
}

// === a raw HTTP/1.1 client ===

/// One response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw connection to the proxy plus whatever was read past the last
/// response (pipelining).
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Writes `bytes` while reading the final response, skipping interim
    /// `1xx` ones. The write may fail (the proxy can answer and close
    /// before it read everything); the response is what counts.
    async fn exchange(&mut self, bytes: &[u8]) -> Result<Resp, String> {
        let mut resp = self.exchange_any(bytes).await?;
        while (100..200).contains(&resp.status) {
            resp = self.response().await?;
        }
        Ok(resp)
    }

    /// Like `exchange`, but returns the first response, interim or not.
    async fn exchange_any(&mut self, bytes: &[u8]) -> Result<Resp, String> {
        let deadline = Instant::now() + IO_DEADLINE;
        let (mut r, mut w) = self.stream.split();
        let write = async {
            let _ = timeout_at(deadline, w.write_all(bytes)).await;
        };
        let read = read_response(&mut r, &mut self.buf, deadline);
        let ((), resp) = tokio::join!(write, read);
        resp
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + IO_DEADLINE;
        match timeout_at(deadline, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err("write timed out".into()),
        }
    }

    /// The next response, from what was already read or from the socket.
    async fn response(&mut self) -> Result<Resp, String> {
        let deadline = Instant::now() + IO_DEADLINE;
        read_response(&mut self.stream, &mut self.buf, deadline).await
    }

    /// Ok when the proxy closes the connection (EOF or reset) within the
    /// deadline without sending anything more.
    async fn closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "unexpected bytes after the response: {:?}",
                String::from_utf8_lossy(&self.buf)
            ));
        }
        let deadline = Instant::now() + CLOSE_DEADLINE;
        let mut chunk = [0u8; 1024];
        match timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
            Ok(Ok(n)) => Err(format!(
                "expected close, got more bytes: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            )),
            Err(_) => Err(format!("connection still open after {CLOSE_DEADLINE:?}")),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; an error on EOF, reset or deadline.
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match timeout_at(deadline, r.read(&mut chunk)).await {
        Ok(Ok(0)) => Err(format!(
            "connection closed before a complete response (have {:?})",
            String::from_utf8_lossy(buf)
        )),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("read failed: {e}")),
        Err(_) => Err(format!(
            "no complete response within {IO_DEADLINE:?} (have {:?})",
            String::from_utf8_lossy(buf)
        )),
    }
}

/// Reads one response (head and body) from `buf` plus `r`, leaving any
/// bytes after it in `buf`.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Resp, String> {
    let head_len = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(r, buf, deadline).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [v, code, ..] if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body;
    if (100..200).contains(&status) || status == 204 || status == 304 {
        body = Vec::new();
        buf.drain(..head_len);
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad length in {head:?}"))?;
        while buf.len() < head_len + len {
            fill(r, buf, deadline).await?;
        }
        body = buf[head_len..head_len + len].to_vec();
        buf.drain(..head_len + len);
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut pos = head_len;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                fill(r, buf, deadline).await?;
            };
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            while buf.len() < line_end + 2 + size + 2 {
                fill(r, buf, deadline).await?;
            }
            out.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            pos = line_end + 2 + size + 2;
            if size == 0 {
                break;
            }
        }
        body = out;
        buf.drain(..pos);
    } else {
        // Delimited by close.
        loop {
            match fill(r, buf, deadline).await {
                Ok(()) => {}
                Err(e) if e.starts_with("connection closed") => break,
                Err(e) => return Err(e),
            }
        }
        body = buf[head_len..].to_vec();
        buf.clear();
    }
    Ok(Resp { status, head, body })
}

/// Error bodies are empty or a short fixed JSON error; no body ever
/// carries an internal address.
fn check_body(resp: &Resp) -> Result<(), String> {
    let text = resp.body_text();
    if text.contains("127.0.0.1") {
        return Err(format!("body leaks an address: {text:?}"));
    }
    if resp.status == 200 {
        if text != BACKEND {
            return Err(format!("200 body is not the backend's name: {text:?}"));
        }
    } else if !(text.is_empty()
        || (text.len() <= 120 && text.starts_with("{\"error\":\"") && text.ends_with("\"}")))
    {
        return Err(format!("error body is not short JSON: {text:?}"));
    }
    Ok(())
}

// === the table ===

/// What the backend must have received for a forwarded row.
type Upstream = fn(&RecordedRequest) -> bool;

/// What the backend may see of a row.
#[derive(Clone, Copy)]
enum Backend {
    /// Refused before any upstream contact: the backend gets nothing.
    Nothing,
    /// Forwarded: the backend gets exactly one request, satisfying this.
    Forwarded(Upstream),
    /// The body turns out broken only while it streams, after the head
    /// went upstream: the backend may see the request begin, but never
    /// whole (its body cut off, never ended by a clean last chunk).
    Aborted,
}

/// One catalogue row: send `bytes` on a fresh connection; expect `status`;
/// `close`: the proxy closes afterwards (else a second request on the same
/// connection must succeed); `backend`: what may reach the backend.
struct Row {
    id: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    close: bool,
    backend: Backend,
}

/// A row the proxy must refuse without contacting the backend.
fn refuse(
    id: &'static str,
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    status: u16,
    close: bool,
) -> Row {
    Row {
        id,
        name,
        bytes: bytes.into(),
        status,
        close,
        backend: Backend::Nothing,
    }
}

/// A row the proxy must forward (200 from the backend).
fn forward(
    id: &'static str,
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    close: bool,
    upstream: Upstream,
) -> Row {
    Row {
        id,
        name,
        bytes: bytes.into(),
        status: 200,
        close,
        backend: Backend::Forwarded(upstream),
    }
}

/// A chunked POST whose broken body must get 400 and a close.
fn broken_body(id: &'static str, name: &'static str, body: &[u8]) -> Row {
    Row {
        id,
        name,
        bytes: chunked(&format!("/r{id}"), body),
        status: 400,
        close: true,
        backend: Backend::Aborted,
    }
}

fn get_with(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
}

/// A chunked POST with this `Transfer-Encoding` line and a valid 5-byte body.
fn te(path: &str, line: &[u8]) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nHost: t\r\n").into_bytes();
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    out
}

/// A chunked POST whose body (after the head) is `body`.
fn chunked(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A POST with this `Content-Length` line and no body.
fn cl(path: &str, value: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {value}\r\n\r\n").into_bytes()
}

fn sticky(path: &str, server: &str, last_use: &str) -> Vec<u8> {
    get_with(
        path,
        &format!("x-target-server: {server}\r\nx-target-server-last-use: {last_use}\r\n"),
    )
}

/// The main table. `decoy` is a listening address outside the pool that
/// requests try to steer the proxy to.
fn catalogue(decoy: SocketAddr) -> Vec<Row> {
    let now = now_ms().to_string();
    let future = (now_ms() + 3_600_000).to_string();
    let many_headers = |n: usize| {
        let extra: String = (1..n).map(|i| format!("X-H{i}: v\r\n")).collect();
        get_with("/r38", &extra)
    };
    vec![
        // --- message framing (1-9, 21) ---
        forward(
            "1",
            "Content-Length then chunked: length dropped, the chunked body read whole and sent with its own length, then close",
            b"POST /r01 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
            |r| {
                r.uri == "/r01"
                    && r.header("content-length") == Some("5")
                    && r.header("transfer-encoding").is_none()
                    && r.body_len == 5
            },
        ),
        forward(
            "1b",
            "chunked then Content-Length: same",
            b"POST /r01b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
            |r| {
                r.uri == "/r01b"
                    && r.header("content-length") == Some("5")
                    && r.header("transfer-encoding").is_none()
                    && r.body_len == 5
            },
        ),
        refuse(
            "2",
            "two Content-Length fields with different values",
            b"POST /r02 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
            400,
            true,
        ),
        forward(
            "3",
            "two Content-Length fields with the same value: merged",
            b"POST /r03 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            false,
            |r| {
                r.uri == "/r03"
                    && r.headers
                        .iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.as_str())
                        .eq(["5"])
                    && r.body_len == 5
            },
        ),
        refuse("3b", "Content-Length: 5, 5", cl("/r03b", "5, 5"), 400, true),
        refuse("4a", "Content-Length: +5", cl("/r04", "+5"), 400, true),
        refuse("4b", "Content-Length: -1", cl("/r04", "-1"), 400, true),
        refuse("4c", "Content-Length: 0x5", cl("/r04", "0x5"), 400, true),
        refuse("4d", "Content-Length:  5 5", cl("/r04", " 5 5"), 400, true),
        refuse("4e", "empty Content-Length", cl("/r04", ""), 400, true),
        refuse("4f", "Content-Length: 5a", cl("/r04", "5a"), 400, true),
        refuse(
            "5a",
            "Content-Length of 20 digits (overflow)",
            cl("/r05", "99999999999999999999"),
            400,
            true,
        ),
        refuse(
            "5b",
            "Content-Length above max_body_bytes, refused before the body",
            cl("/r05", &(MAX_BODY + 1).to_string()),
            413,
            true,
        ),
        forward(
            "5c",
            "Content-Length exactly max_body_bytes",
            [cl("/r05c", &MAX_BODY.to_string()), vec![b'x'; 1024]].concat(),
            false,
            |r| r.uri == "/r05c" && r.body_len == 1024,
        ),
        refuse(
            "6a",
            "Transfer-Encoding: gzip",
            te("/r06", b"Transfer-Encoding: gzip"),
            400,
            true,
        ),
        refuse(
            "6b",
            "Transfer-Encoding: chunked, gzip (chunked not last)",
            te("/r06", b"Transfer-Encoding: chunked, gzip"),
            400,
            true,
        ),
        refuse(
            "6c",
            "Transfer-Encoding: gzip, chunked (coding the proxy cannot carry)",
            te("/r06", b"Transfer-Encoding: gzip, chunked"),
            501,
            true,
        ),
        refuse(
            "7",
            "unknown coding only",
            te("/r07", b"Transfer-Encoding: foo"),
            400,
            true,
        ),
        refuse(
            "8a",
            "Transfer-Encoding: chunked, chunked",
            te("/r08", b"Transfer-Encoding: chunked, chunked"),
            400,
            true,
        ),
        refuse(
            "8b",
            "Transfer-Encoding on two lines",
            te(
                "/r08",
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            ),
            400,
            true,
        ),
        forward(
            "9a",
            "Transfer-Encoding: Chunked (case-insensitive)",
            te("/r09a", b"Transfer-Encoding: Chunked"),
            false,
            |r| r.uri == "/r09a" && r.body_len == 5,
        ),
        forward(
            "9b",
            "Transfer-Encoding: chunked + trailing OWS",
            te("/r09b", b"Transfer-Encoding: chunked \t"),
            false,
            |r| r.uri == "/r09b" && r.body_len == 5,
        ),
        forward(
            "9c",
            "Transfer-Encoding: HTAB chunked",
            te("/r09c", b"Transfer-Encoding:\tchunked"),
            false,
            |r| r.uri == "/r09c" && r.body_len == 5,
        ),
        refuse(
            "9d",
            "Transfer-Encoding: ,chunked",
            te("/r09", b"Transfer-Encoding: ,chunked"),
            400,
            true,
        ),
        refuse(
            "9e",
            "Transfer-Encoding: xchunked",
            te("/r09", b"Transfer-Encoding: xchunked"),
            400,
            true,
        ),
        refuse(
            "9f",
            "Transfer-Encoding: chunked + VT",
            te("/r09", b"Transfer-Encoding: chunked\x0b"),
            400,
            true,
        ),
        refuse(
            "9g",
            "Transfer-Encoding: NUL chunked",
            te("/r09", b"Transfer-Encoding: \x00chunked"),
            400,
            true,
        ),
        refuse(
            "9h",
            "Transfer-Encoding: chunked + 0xff",
            te("/r09", b"Transfer-Encoding: chunked\xff"),
            400,
            true,
        ),
        refuse(
            "9i",
            "Transfer-Encoding + 0xff in the name",
            te("/r09", b"Transfer-Encoding\xff: chunked"),
            400,
            true,
        ),
        refuse(
            "21",
            "HTTP/1.0 with Transfer-Encoding",
            b"POST /r21 HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
            true,
        ),
        // --- header syntax (10-14, 34, 35) ---
        refuse(
            "10",
            "whitespace between field name and colon",
            te("/r10", b"Transfer-Encoding : chunked"),
            400,
            true,
        ),
        refuse(
            "11",
            "whitespace-led line right after the request line",
            b"GET /r11 HTTP/1.1\r\n X-A: a\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "12",
            "obs-fold",
            b"GET /r12 HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
            400,
            true,
        ),
        forward(
            "13",
            "bare LF line endings: accepted, re-serialised",
            b"GET /r13 HTTP/1.1\nHost: t\nX-A: a\n\n",
            false,
            |r| r.uri == "/r13" && r.header("x-a") == Some("a"),
        ),
        refuse(
            "14a",
            "bare CR inside a header value",
            b"GET /r14 HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "14b",
            "bare CR as line terminator",
            b"GET /r14 HTTP/1.1\rHost: t\r\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "34a",
            "header name with SP",
            get_with("/r34", "X A: b\r\n"),
            400,
            true,
        ),
        refuse(
            "34b",
            "header name with @",
            get_with("/r34", "X@A: b\r\n"),
            400,
            true,
        ),
        refuse(
            "34c",
            "header name with (",
            get_with("/r34", "X(A: b\r\n"),
            400,
            true,
        ),
        refuse(
            "34d",
            "header name with NUL",
            get_with("/r34", "X\0A: b\r\n"),
            400,
            true,
        ),
        refuse(
            "34e",
            "header name with 0xff",
            b"GET /r34 HTTP/1.1\r\nHost: t\r\nX\xffA: b\r\n\r\n",
            400,
            true,
        ),
        refuse("34f", "empty header name", get_with("/r34", ": b\r\n"), 400, true),
        refuse(
            "35a",
            "LF inside a header value",
            get_with("/r35", "X-A: a\nb\r\n"),
            400,
            true,
        ),
        refuse(
            "35b",
            "NUL inside a header value",
            get_with("/r35", "X-A: a\0b\r\n"),
            400,
            true,
        ),
        // --- request line and target (24, 26-30) ---
        refuse(
            "24",
            "request target over max_uri_bytes",
            get_with(&format!("/r24/{}", "a".repeat(8200)), ""),
            414,
            false,
        ),
        forward(
            "24b",
            "request target of exactly max_uri_bytes",
            get_with(&format!("/r24b/{}", "a".repeat(8192 - 6)), ""),
            false,
            |r| r.uri.len() == 8192 && r.uri.starts_with("/r24b/"),
        ),
        refuse(
            "26a",
            "version HTTP/1.1x",
            b"GET /r26 HTTP/1.1x\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "26b",
            "version HTTP/11",
            b"GET /r26 HTTP/11\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "26c",
            "version http/1.1",
            b"GET /r26 http/1.1\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "26d",
            "no version (HTTP/0.9)",
            b"GET /r26\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "26e",
            "version HTTP/2.0 on an HTTP/1 connection",
            b"GET /r26 HTTP/2.0\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "27a",
            "double space in the request line",
            b"GET  /r27 HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "27b",
            "tab in the request line",
            b"GET\t/r27 HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "27c",
            "SP inside the target",
            b"GET /r27 x HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "27e",
            "raw UTF-8 bytes in the target",
            b"GET /r27\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            false,
        ),
        refuse(
            "27f",
            "invalid UTF-8 byte in the target",
            b"GET /r27\xff HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "27g",
            "control byte in the target",
            b"GET /r27\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "28a",
            "absolute-form whose authority differs from Host",
            b"GET http://a.example/r28 HTTP/1.1\r\nHost: b.example\r\n\r\n",
            400,
            true,
        ),
        forward(
            "28b",
            "absolute-form with the same authority as Host: routed to the pool",
            b"GET http://A.example/r28b HTTP/1.1\r\nHost: a.EXAMPLE:80\r\n\r\n",
            false,
            |r| r.uri == "/r28b",
        ),
        forward(
            "29a",
            "absolute-form naming an address outside the pool",
            format!("GET http://{decoy}/r29a HTTP/1.1\r\nHost: {decoy}\r\n\r\n"),
            false,
            |r| r.uri == "/r29a",
        ),
        forward(
            "29b",
            "absolute-form naming the metadata service",
            b"GET http://169.254.169.254/r29b HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            false,
            |r| r.uri == "/r29b",
        ),
        refuse(
            "30a",
            "authority-form on GET",
            b"GET t:80 HTTP/1.1\r\nHost: t:80\r\n\r\n",
            400,
            false,
        ),
        refuse(
            "30b",
            "asterisk-form on GET",
            b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            false,
        ),
        forward(
            "30c",
            "asterisk-form on OPTIONS",
            b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
            false,
            |r| r.method == "OPTIONS" && r.uri == "*",
        ),
        refuse(
            "30d",
            "CONNECT",
            format!("CONNECT {decoy} HTTP/1.1\r\nHost: {decoy}\r\n\r\n"),
            405,
            false,
        ),
        // --- Host (31-33) ---
        refuse(
            "31",
            "HTTP/1.1 without Host",
            b"GET /r31 HTTP/1.1\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32a",
            "two Host lines",
            b"GET /r32 HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32b",
            "two identical Host lines",
            b"GET /r32 HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32c",
            "Host with SP",
            b"GET /r32 HTTP/1.1\r\nHost: t u\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32d",
            "Host with @",
            b"GET /r32 HTTP/1.1\r\nHost: u@t\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32e",
            "Host with /",
            b"GET /r32 HTTP/1.1\r\nHost: t/x\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32f",
            "Host with backslash",
            b"GET /r32 HTTP/1.1\r\nHost: t\\x\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32g",
            "Host with NUL",
            b"GET /r32 HTTP/1.1\r\nHost: t\0x\r\n\r\n",
            400,
            true,
        ),
        refuse(
            "32h",
            "empty Host",
            b"GET /r32 HTTP/1.1\r\nHost: \r\n\r\n",
            400,
            true,
        ),
        forward(
            "33",
            "HTTP/1.0 without Host: forwarded with the target's Host",
            b"GET /r33 HTTP/1.0\r\n\r\n",
            true,
            |r| r.uri == "/r33" && r.header("host").is_some_and(|h| h.starts_with("127.0.0.1:")),
        ),
        // --- our own headers (37, 46, 48) ---
        refuse(
            "37a",
            "x_target_server (underscore twin)",
            get_with("/r37", "x_target_server: app-1\r\n"),
            400,
            false,
        ),
        refuse(
            "37b",
            "x_target_server_last_use (underscore twin)",
            get_with("/r37", "x_target_server_last_use: 1\r\n"),
            400,
            false,
        ),
        forward(
            "46a",
            "x-target-server: an address outside the pool",
            sticky("/r46a", &decoy.to_string(), &now),
            false,
            |r| r.uri == "/r46a",
        ),
        forward(
            "46b",
            "x-target-server: 169.254.169.254",
            sticky("/r46b", "169.254.169.254", &now),
            false,
            |r| r.uri == "/r46b",
        ),
        forward(
            "46c",
            "x-target-server: a url outside the pool",
            sticky("/r46c", &format!("http://{decoy}/"), &now),
            false,
            |r| r.uri == "/r46c",
        ),
        forward(
            "46d",
            "x-target-server: member@elsewhere",
            sticky("/r46d", &format!("{BACKEND}@{decoy}"), &now),
            false,
            |r| r.uri == "/r46d",
        ),
        forward(
            "46e",
            "x-target-server: upper case, trailing dot, padding, %00, list",
            get_with(
                "/r46e",
                &format!(
                    "x-target-server:  APP-1. {BACKEND}%00,{decoy} \r\nx-target-server-last-use: {now}\r\n"
                ),
            ),
            false,
            |r| r.uri == "/r46e",
        ),
        forward(
            "46f",
            "x-target-server: 10 KiB value",
            sticky("/r46f", &"a".repeat(10 * 1024), &now),
            false,
            |r| r.uri == "/r46f",
        ),
        forward(
            "46g",
            "x-target-server twice",
            get_with(
                "/r46g",
                &format!(
                    "x-target-server: {decoy}\r\nx-target-server: {BACKEND}\r\nx-target-server-last-use: {now}\r\n"
                ),
            ),
            false,
            |r| r.uri == "/r46g",
        ),
        forward(
            "48a",
            "last-use: non-digits",
            sticky("/r48a", BACKEND, "soon"),
            false,
            |r| r.uri == "/r48a",
        ),
        forward(
            "48b",
            "last-use: negative",
            sticky("/r48b", BACKEND, "-1"),
            false,
            |r| r.uri == "/r48b",
        ),
        forward(
            "48c",
            "last-use: 30 digits",
            sticky("/r48c", BACKEND, &"9".repeat(30)),
            false,
            |r| r.uri == "/r48c",
        ),
        forward(
            "48d",
            "last-use: an hour in the future",
            sticky("/r48d", BACKEND, &future),
            false,
            |r| r.uri == "/r48d",
        ),
        forward(
            "48e",
            "last-use twice",
            get_with(
                "/r48e",
                &format!(
                    "x-target-server: {BACKEND}\r\nx-target-server-last-use: {now}\r\nx-target-server-last-use: 1\r\n"
                ),
            ),
            false,
            |r| r.uri == "/r48e",
        ),
        // --- limits (38, 39) ---
        refuse("38", "101 header fields", many_headers(101), 431, true),
        forward(
            "38b",
            "95 header fields",
            many_headers(95),
            false,
            |r| r.uri == "/r38" && r.header("x-h94") == Some("v"),
        ),
        refuse(
            "39a",
            "header section over 32 KiB",
            get_with(
                "/r39",
                &(0..40)
                    .map(|i| format!("X-P{i}: {}\r\n", "p".repeat(900)))
                    .collect::<String>(),
            ),
            431,
            true,
        ),
        refuse(
            "39b",
            "one 40 KiB cookie",
            get_with(
                "/r39",
                &format!("Cookie: c={}\r\n", "c".repeat(40 * 1024)),
            ),
            431,
            true,
        ),
        // --- Expect (42, 43) ---
        forward(
            "42b",
            "Expect: 100-continue with the body sent at once",
            b"POST /r42b HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            false,
            |r| r.uri == "/r42b" && r.body_len == 5,
        ),
        refuse(
            "43a",
            "Expect: foo",
            get_with("/r43", "Expect: foo\r\n"),
            417,
            false,
        ),
        forward(
            "43b",
            "Expect: 100-Continue (any case)",
            get_with("/r43b", "Expect: 100-Continue\r\n"),
            false,
            |r| r.uri == "/r43b",
        ),
        forward(
            "43c",
            "Expect: 100-continue on HTTP/1.0 is ignored",
            b"GET /r43c HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
            true,
            |r| r.uri == "/r43c",
        ),
    ]
}

/// Runs one row on a fresh connection; describes every mismatch.
async fn run_row(h: &Harness, row: &Row) -> Result<(), String> {
    let before = h.backend.hits();
    let mut c = h.connect().await;
    let resp = c.exchange(&row.bytes).await?;
    let mut errors = Vec::new();
    if resp.status != row.status {
        errors.push(format!(
            "status {} (expected {}); head {:?} body {:?}",
            resp.status,
            row.status,
            resp.head,
            resp.body_text()
        ));
    }
    if let Err(e) = check_body(&resp) {
        errors.push(e);
    }
    if row.close
        && let Err(e) = c.closed().await
    {
        errors.push(e);
    }
    // Once the answer (and for closing rows, the close) is in, whatever
    // was forwarded has been recorded: the backend records a request
    // before it answers.
    let got = h.backend.requests();
    let new = got.get(before..).unwrap_or_default();
    match row.backend {
        Backend::Nothing if !new.is_empty() => {
            errors.push(format!("refused, yet the backend received {new:?}"));
        }
        Backend::Aborted if new.iter().any(|r| r.complete) => {
            errors.push(format!(
                "a broken body reached the backend as a whole request: {new:?}"
            ));
        }
        Backend::Nothing | Backend::Aborted => {}
        Backend::Forwarded(check) => match new {
            [one] if check(one) => {}
            _ => errors.push(format!("backend received {new:?}")),
        },
    }
    if !row.close && errors.is_empty() {
        let forwarded = new.len();
        match c.exchange(NEXT).await {
            Ok(next) if next.status == 200 => {
                let after = h.backend.requests();
                match after.get(before + forwarded..).unwrap_or_default() {
                    [one] if one.uri == "/next" => {}
                    other => errors.push(format!("follow-up: backend received {other:?}")),
                }
            }
            Ok(next) => errors.push(format!(
                "keep-alive follow-up got {}: {:?}",
                next.status, next.head
            )),
            Err(e) => errors.push(format!("keep-alive follow-up: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Runs `rows` one after the other and fails with every mismatch at once.
async fn run_rows(h: &Harness, rows: &[Row]) {
    let mut failures = Vec::new();
    for row in rows {
        if let Err(e) = run_row(h, row).await {
            failures.push(format!("row {} ({}): {e}", row.id, row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// Panics if anything connected to `decoy` (asked of the kernel's accept
/// queue: every row was answered, so any connect has completed).
fn assert_untouched(decoy: TcpListener) {
    let decoy = decoy.into_std().expect("std listener");
    match decoy.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the proxy connected to an address outside the pool (from {peer})"),
        Err(e) => panic!("decoy accept: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_catalogue() {
    let h = Harness::start().await;
    let decoy = TcpListener::bind("127.0.0.1:0").await.expect("bind decoy");
    let rows = catalogue(decoy.local_addr().expect("decoy addr"));
    run_rows(&h, &rows).await;
    assert_untouched(decoy);
    h.stop().await;
}

// === rows that need more than one exchange ===

/// A pipelining case: name, bytes, the two statuses, the paths the backend
/// must receive in order.
type Pipelined = (
    &'static str,
    &'static [u8],
    [u16; 2],
    &'static [&'static str],
);

/// Row 22: two requests in one packet are both answered, in order, and the
/// second is never taken as the first one's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let h = Harness::start().await;
    let cases: [Pipelined; 3] = [
        (
            "two GETs",
            b"GET /r22a HTTP/1.1\r\nHost: t\r\n\r\nGET /r22b HTTP/1.1\r\nHost: t\r\n\r\n",
            [200, 200],
            &["/r22a", "/r22b"],
        ),
        (
            "POST with a body, then GET",
            b"POST /r22c HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /r22d HTTP/1.1\r\nHost: t\r\n\r\n",
            [200, 200],
            &["/r22c", "/r22d"],
        ),
        (
            "refused (keep-alive) request, then GET",
            b"GET * HTTP/1.1\r\nHost: t\r\n\r\nGET /r22e HTTP/1.1\r\nHost: t\r\n\r\n",
            [400, 200],
            &["/r22e"],
        ),
    ];
    for (name, bytes, statuses, paths) in cases {
        let before = h.backend.hits();
        let mut c = h.connect().await;
        let first = c
            .exchange(bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = c.response().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!([first.status, second.status], statuses, "{name}");
        check_body(&first).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_body(&second).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = h.backend.requests();
        let uris: Vec<&str> = got[before..].iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, paths, "{name}");
        if name.starts_with("POST") {
            assert_eq!(got[before].body_len, 5, "{name}");
            assert_eq!(got[before + 1].body_len, 0, "{name}");
        }
    }
    h.stop().await;
}

/// Row 23: a valid request pipelined behind an invalid one is not
/// processed: one error, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_behind_an_invalid_one_is_not_processed() {
    let h = Harness::start().await;
    let cases: [(&str, &[u8], u16, Option<&str>); 4] = [
        (
            "framing error (head parser)",
            b"POST /r23a HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\nGET /r23b HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            None,
        ),
        (
            "missing Host (validate)",
            b"GET /r23c HTTP/1.1\r\n\r\nGET /r23d HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            None,
        ),
        (
            "body over the limit (validate), body then smuggled GET",
            b"POST /r23e HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\nGET /r23f HTTP/1.1\r\nHost: t\r\n\r\n",
            413,
            None,
        ),
        (
            "Content-Length and chunked: answered, then closed",
            b"POST /r23g HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /r23h HTTP/1.1\r\nHost: t\r\n\r\n",
            200,
            Some("/r23g"),
        ),
    ];
    for (name, bytes, status, forwarded) in cases {
        let before = h.backend.hits();
        let mut c = h.connect().await;
        let resp = c
            .exchange(bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status, status, "{name}: {resp:?}");
        check_body(&resp).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.closed().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = h.backend.requests();
        let uris: Vec<&str> = got[before..].iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, forwarded.into_iter().collect::<Vec<_>>(), "{name}");
    }
    h.stop().await;
}

/// Row 42: `Expect: 100-continue`: the proxy answers `100 Continue` before
/// the client sends the body, then the final response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_gets_100_then_the_response() {
    let h = Harness::start().await;
    let before = h.backend.hits();
    let mut c = h.connect().await;
    let interim = c
        .exchange_any(
            b"POST /r42 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .expect("100 Continue");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello").await.expect("send body");
    let last = c.response().await.expect("final response");
    assert_eq!(last.status, 200, "{last:?}");
    check_body(&last).expect("body");
    let got = h.backend.requests();
    assert_eq!(got.len(), before + 1, "{:?}", &got[before..]);
    assert_eq!(
        (got[before].uri.as_str(), got[before].body_len),
        ("/r42", 5)
    );
    h.stop().await;
}

/// Slowloris: a head trickled one byte per 100 ms is cut off by the header
/// read timeout (1 s here), and nothing reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_off() {
    let h = Harness::start().await;
    let before = h.backend.hits();
    let head = format!(
        "GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(100)
    );
    let started = Instant::now();
    let mut stream = TcpStream::connect(h.proxy.addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let give_up = started + Duration::from_secs(10);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut sent = 0;
    let closed_after = loop {
        assert!(Instant::now() < give_up, "still open after 10 s");
        if sent < head.len() {
            if stream
                .write_all(&head.as_bytes()[sent..=sent])
                .await
                .is_err()
            {
                break started.elapsed();
            }
            sent += 1;
        }
        // The read doubles as the 100 ms pacing of the trickle.
        let pace = Instant::now() + Duration::from_millis(100);
        match timeout_at(pace, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    };
    assert!(
        sent < head.len(),
        "the whole head ({} bytes) went through",
        head.len()
    );
    // Cut off by the header read timeout: within the 10 s the loop allows,
    // before the whole head (14 s of trickle) went through.
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}, expected about {HEADER_READ_TIMEOUT:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "answer: {answer:?}"
    );
    assert_eq!(h.backend.hits(), before, "{:?}", h.backend.requests());
    h.stop().await;
}

// === rows the proxy answers wrongly today ===

/// Rows 15, 16, 18: broken chunked framing in the body. The proxy's
/// chunked decoder notices while the body streams (after the head was forwarded), fails the body
/// stream and closes the connection; the proxy answers 502 as if the
/// backend had failed.
fn body_framing_rows() -> Vec<Row> {
    vec![
        broken_body(
            "15",
            "bare LF as chunk line terminator",
            b"5\r\nhello\r\n0\n\r\n",
        ),
        broken_body(
            "15b",
            "bare LF after a chunk size",
            b"5\nhello\r\n0\r\n\r\n",
        ),
        broken_body("16a", "empty chunk size", b"\r\nhello\r\n0\r\n\r\n"),
        broken_body("16b", "chunk size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
        broken_body("16c", "chunk size +5", b"+5\r\nhello\r\n0\r\n\r\n"),
        broken_body("16d", "chunk size -1", b"-1\r\nhello\r\n0\r\n\r\n"),
        broken_body(
            "16e",
            "chunk size with leading SP",
            b" 5\r\nhello\r\n0\r\n\r\n",
        ),
        broken_body("16f", "chunk size g", b"g\r\nhello\r\n0\r\n\r\n"),
        broken_body(
            "16g",
            "chunk size of 17 hex digits",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        broken_body(
            "18a",
            "chunk data longer than its size",
            b"3\r\nhello\r\n0\r\n\r\n",
        ),
        broken_body("18b", "no CRLF after chunk data", b"5\r\nhello0\r\n\r\n"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_body_is_refused() {
    let h = Harness::start().await;
    run_rows(&h, &body_framing_rows()).await;
    h.stop().await;
}

// === what the HTTP/1 parser tolerates, pinned ===

/// An upstream that records the bytes of each request it gets (one per
/// connection) and answers `200 app-1` with `Connection: close`.
async fn recording_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !request_complete(&buf) {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(buf);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\napp-1",
                    )
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Whether `buf` holds a whole request: a head, then a chunked body up to
/// its last chunk, or `Content-Length` bytes, or nothing.
fn request_complete(buf: &[u8]) -> bool {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = &buf[head_end + 4..];
    if head.contains("\r\ntransfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let len = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    body.len() >= len
}

/// Sends `bytes` to the proxy on a fresh connection and returns the
/// response and the request the upstream received.
async fn through(
    proxy: SocketAddr,
    upstream: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    bytes: &[u8],
) -> (Resp, String) {
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let mut c = Client {
        stream,
        buf: Vec::new(),
    };
    let resp = c.exchange(bytes).await.expect("a response");
    let got = tokio::time::timeout(IO_DEADLINE, upstream.recv())
        .await
        .expect("the upstream got the request in time")
        .expect("upstream running");
    (resp, String::from_utf8(got).expect("ASCII request"))
}

/// Inputs the catalogue would rather refuse but the proxy's HTTP/1 parser
/// (`http1::head`, `http1::chunked`) accepts before `validate.rs` sees the
/// request. Neither is a smuggling risk, and this pins exactly what
/// happens to them today, byte for byte on the upstream wire, so a change
/// to the parser or an `http` upgrade that changes it fails here and gets
/// looked at:
/// - row 27d: `http` drops a `#fragment` while parsing the target; the
///   request goes upstream as `/r27d` and the fragment never leaves;
/// - row 16h: the chunked decoder accepts whitespace after a chunk size
///   (`5 `), as hyper did. A small body is read whole before a backend is
///   chosen and goes upstream decoded, with its length; one past the
///   read-ahead (16 KiB) streams and goes upstream re-chunked, without the
///   whitespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_the_parser_tolerates_are_normalised() {
    let (upstream_addr, mut upstream) = recording_upstream().await;
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        1,
        vec![status(
            BACKEND,
            &format!("http://{upstream_addr}"),
            HealthState::Healthy,
        )],
    );
    let proxy = Running::start(checker_config(&checker)).await;
    let addr = proxy.addr;
    eventually("the proxy has its table", START_DEADLINE, || async {
        let reply = get(addr, "/ready", &[]).await.ok()?;
        (reply.status == 200).then_some(())
    })
    .await;
    // The upstream recorded /ready before it answered.
    while upstream.try_recv().is_ok() {}

    let (resp, sent) = through(
        addr,
        &mut upstream,
        b"GET /r27d#frag HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        sent.starts_with("GET /r27d HTTP/1.1\r\n"),
        "fragment: upstream got {sent:?}"
    );
    assert!(
        !sent.contains('#') && !sent.contains("frag"),
        "the fragment went upstream: {sent:?}"
    );

    let (resp, sent) = through(
        addr,
        &mut upstream,
        &chunked("/r16h", b"5 \r\nhello\r\n0\r\n\r\n"),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let (head, body) = sent.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(
        head.starts_with("post /r16h http/1.1\r\n")
            && head.contains("\r\ncontent-length: 5")
            && !head.contains("transfer-encoding"),
        "chunk size BWS: upstream head {head:?}"
    );
    assert_eq!(body, "hello", "chunk size BWS: read whole, sent decoded");

    // 40 KiB in chunks of 10 KiB: more than is read ahead, so it streams.
    let piece = "x".repeat(10 * 1024);
    let wire: String = (0..4).map(|_| format!("2800 \r\n{piece}\r\n")).collect();
    let (resp, sent) = through(
        addr,
        &mut upstream,
        &chunked("/r16i", format!("{wire}0\r\n\r\n").as_bytes()),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let (head, body) = sent.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(
        head.starts_with("post /r16i http/1.1\r\n")
            && head.contains("\r\ntransfer-encoding: chunked")
            && !head.contains("content-length"),
        "chunk size BWS, streamed: upstream head {head:?}"
    );
    let (mut rest, mut data) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size, 16).expect("a bare hex size line");
        if n == 0 {
            assert_eq!(after, "\r\n", "the last chunk ends it");
            break;
        }
        data.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").expect("CRLF after data");
    }
    assert_eq!(
        data,
        piece.repeat(4),
        "chunk size BWS, streamed: re-chunked"
    );
    proxy.stop().await;
}
