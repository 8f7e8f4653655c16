//! One HTTP/1.1 `GET` of a daemon's admin endpoint (`/readyz`, `/healthz`),
//! for container health checks that may only use what the image holds.
//!
//! A plain TCP connection and a minimal request: the answer's status line is
//! all that is read. Parsing is pure and unit tested.

use std::time::Duration;

use anyhow::anyhow;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

use crate::client::UsageError;
use crate::render::sanitize;

/// What `tetherctl ready` asks when no URL is given: the proxy's readiness.
pub const DEFAULT_READY_URL: &str = "http://127.0.0.1:9901/readyz";

/// Connect, send and read the status line, all within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// A status line longer than this is not an admin server's.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// A whole answer (`/status.json` of a large pool) larger than this is not
/// an admin server's either.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What `tetherctl checkers` asks when no URL is given.
pub const DEFAULT_STATUS_URL: &str = "http://127.0.0.1:9901/status.json";

/// Where to send the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to (IPv6 hosts in brackets).
    pub addr: String,
    /// The `Host` header: the URL's authority.
    pub host_header: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Accepts `host:port[/path]` as shorthand for `http://host:port[/path]`;
/// the port defaults to 80 and the path to `/`.
pub fn parse_url(raw: &str) -> Result<Target, UsageError> {
    let raw = raw.trim();
    let bad = |why: &str| UsageError(format!("invalid admin URL {raw:?}: {why}"));
    if raw.is_empty() {
        return Err(UsageError("the admin URL is empty".into()));
    }
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(bad(&format!(
                "scheme {other:?} is not supported, use http://"
            )));
        }
        None => return Err(bad("no scheme")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not supported"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match authority.as_str().strip_prefix(host) {
        Some("") => 80,
        _ => authority
            .port_u16()
            .ok_or_else(|| bad("the port is not a number from 0 to 65535"))?,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    Ok(Target {
        addr: format!("{host}:{port}"),
        host_header: authority.as_str().to_owned(),
        path,
    })
}

/// The request, byte for byte.
pub fn request(target: &Target) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tetherctl/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header,
        env!("CARGO_PKG_VERSION")
    )
}

/// The status code and reason of `HTTP/1.x SSS Reason`.
pub fn parse_status_line(line: &str) -> Option<(u16, &str)> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = code.parse().ok()?;
    Some((code, reason.trim()))
}

/// Sends `GET` to `target` and returns the answer's status code and
/// reason, or why there was none, within [`TIMEOUT`].
pub async fn get_status(target: &Target) -> anyhow::Result<(u16, String)> {
    let url = format!("http://{}{}", target.host_header, target.path);
    tokio::time::timeout(TIMEOUT, exchange(target))
        .await
        .map_err(|_| anyhow!("{url} did not answer within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("{url}: {e}"))
}

/// Sends `GET` to `target` and returns the answer's status code and body,
/// within [`TIMEOUT`]. The admin server sends a `Content-Length` and
/// closes (the request says `Connection: close`), so the body is what
/// follows the head up to the end of the stream.
pub async fn get_body(target: &Target) -> anyhow::Result<(u16, String)> {
    let url = format!("http://{}{}", target.host_header, target.path);
    tokio::time::timeout(TIMEOUT, fetch(target))
        .await
        .map_err(|_| anyhow!("{url} did not answer within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("{url}: {e}"))
}

/// A connection to `target` with the request written on it.
async fn send_request(target: &Target) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| anyhow!("cannot connect: {e}"))?;
    stream
        .write_all(request(target).as_bytes())
        .await
        .map_err(|e| anyhow!("cannot send the request: {e}"))?;
    Ok(stream)
}

async fn fetch(target: &Target) -> anyhow::Result<(u16, String)> {
    let mut stream = send_request(target).await?;
    let mut answer = Vec::with_capacity(4096);
    (&mut stream)
        .take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| anyhow!("cannot read the answer: {e}"))?;
    if answer.len() > MAX_ANSWER {
        return Err(anyhow!("the answer is longer than {MAX_ANSWER} bytes"));
    }
    split_answer(&answer)
}

/// The status code and body of a whole HTTP/1 answer.
pub fn split_answer(answer: &[u8]) -> anyhow::Result<(u16, String)> {
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("the answer has no complete head"))?;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let (code, _) = parse_status_line(line)
        .ok_or_else(|| anyhow!("not an HTTP/1 answer: {}", sanitize(line)))?;
    if lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    }) {
        return Err(anyhow!("a chunked answer is not an admin server's"));
    }
    let body = String::from_utf8_lossy(&answer[head_end + 4..]).into_owned();
    Ok((code, body))
}

async fn exchange(target: &Target) -> anyhow::Result<(u16, String)> {
    let mut stream = send_request(target).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let line_end = loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if head.len() > MAX_STATUS_LINE {
            return Err(anyhow!(
                "the status line is longer than {MAX_STATUS_LINE} bytes"
            ));
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| anyhow!("cannot read the answer: {e}"))?;
        if n == 0 {
            return Err(anyhow!("the connection closed before a status line"));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let line = String::from_utf8_lossy(&head[..line_end]);
    let (code, reason) = parse_status_line(&line)
        .ok_or_else(|| anyhow!("not an HTTP/1 answer: {}", sanitize(&line)))?;
    Ok((code, sanitize(reason).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn target(addr: &str, host: &str, path: &str) -> Target {
        Target {
            addr: addr.into(),
            host_header: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url(DEFAULT_READY_URL).expect("ok"),
            target("127.0.0.1:9901", "127.0.0.1:9901", "/readyz")
        );
        assert_eq!(
            parse_url(" localhost:9902/healthz?x=1 ").expect("ok"),
            target("localhost:9902", "localhost:9902", "/healthz?x=1")
        );
        assert_eq!(
            parse_url("http://backend").expect("ok"),
            target("backend:80", "backend", "/")
        );
        assert_eq!(
            parse_url("http://[::1]:9901/readyz").expect("ok"),
            target("[::1]:9901", "[::1]:9901", "/readyz")
        );
        for bad in [
            "",
            "  ",
            "https://x:1/readyz",
            "ftp://x",
            "http://",
            "http:///readyz",
            "http://a b/",
            "http://u:p@x:1/",
            "http://x:99999/",
            "http://x:/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_bytes() {
        let t = parse_url("http://127.0.0.1:9901/readyz").expect("ok");
        let req = request(&t);
        assert!(req.starts_with("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n"));
        assert!(req.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn whole_answers() {
        let (code, body) =
            split_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("ok");
        assert_eq!((code, body.as_str()), (200, "{}"));
        assert!(split_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(
            split_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}").is_err()
        );
        assert!(split_answer(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some((200, "OK")));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some((503, "Service Unavailable"))
        );
        assert_eq!(parse_status_line("HTTP/1.1 204"), Some((204, "")));
        for bad in [
            "",
            "HTTP/2 200",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000",
            "HTTP/1.1 abc x",
        ] {
            assert_eq!(parse_status_line(bad), None, "{bad:?}");
        }
    }

    /// Serves one connection with `answer` and returns the request it got.
    async fn serve_once(answer: &'static [u8]) -> (Target, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.expect("read");
                assert_ne!(n, 0, "client closed before the end of its request");
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer).await.expect("write");
            String::from_utf8(got).expect("utf-8")
        });
        let t = parse_url(&format!("http://{addr}/readyz")).expect("ok");
        (t, server)
    }

    #[tokio::test]
    async fn reads_the_status_of_a_real_answer() {
        let (t, server) =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready")
                .await;
        let (code, reason) = get_status(&t).await.expect("answer");
        assert_eq!((code, reason.as_str()), (503, "Service Unavailable"));
        let got = server.await.expect("server");
        assert!(got.starts_with("GET /readyz HTTP/1.1\r\n"), "{got}");
    }

    #[tokio::test]
    async fn status_line_split_over_reads_and_garbage() {
        let (t, _server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\n").await;
        assert_eq!(get_status(&t).await.expect("answer").0, 200);
        let (t, _server) = serve_once(b"SSH-2.0-OpenSSH\r\n").await;
        let e = get_status(&t).await.expect_err("not http");
        assert!(e.to_string().contains("not an HTTP/1 answer"), "{e}");
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let t = parse_url(&format!("http://{addr}/readyz")).expect("ok");
        let e = get_status(&t).await.expect_err("refused");
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }
}
