//! The proxy's own HTTP/1.1 client against a backend that answers with
//! exact bytes: every way a response body can be framed, interim answers,
//! broken heads, connection reuse, and an answer that comes before the
//! request body is all sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tether_testkit::raw::RawConn;
use tether_testkit::{Proc, TempConfig, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);

/// What the scripted backend does after writing its answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    KeepAlive,
    Close,
    /// Stops writing, reads whatever still comes (a polite close).
    Drain,
}

/// The answer to a request line such as `GET /chunked`.
fn script(request_line: &str) -> (&'static [u8], Then) {
    let target = request_line
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    match target.as_str() {
        "GET /chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\ntrailer: t\r\n\r\n",
            Then::KeepAlive,
        ),
        "GET /close" => (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
            Then::Close,
        ),
        "GET /hints" => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Then::KeepAlive,
        ),
        "HEAD /head" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
            Then::KeepAlive,
        ),
        "GET /none" => (b"HTTP/1.1 204 No Content\r\n\r\n", Then::KeepAlive),
        "GET /conflict" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
            Then::Close,
        ),
        "GET /garbage" => (b"NOT HTTP AT ALL\r\n\r\n", Then::Close),
        "GET /fields" => (
            b"HTTP/1.1 200 OK\r\nServer: Scripted/1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
              Date: Sun, 06 Dec 2026 10:00:00 GMT\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\
              X-Target-Server: forged\r\nx-target-server-last-use: 1\r\nSet-Cookie: a=1\r\nTE: trailers\r\n\
              Trailer: x\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
            Then::KeepAlive,
        ),
        "GET /named" => (
            b"HTTP/1.1 200 OK\r\nconnection: x-secret\r\nx-secret: 1\r\nx-kept: 2\r\ncontent-length: 2\r\n\r\nok",
            Then::KeepAlive,
        ),
        "GET /short" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this",
            Then::Close,
        ),
        "POST /early" => (
            b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!",
            Then::Drain,
        ),
        _ => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain",
            Then::KeepAlive,
        ),
    }
}

/// A backend that reads request heads (never bodies) and answers from
/// [`script`]. Counts the connections that carried a request (the TCP
/// health probe's carry none).
struct Scripted {
    addr: SocketAddr,
    used: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let used = Arc::new(AtomicUsize::new(0));
        let counted = used.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counted.clone()));
            }
        });
        Scripted { addr, used }
    }

    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, used: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if first {
            used.fetch_add(1, Ordering::SeqCst);
            first = false;
        }
        let head: Vec<u8> = buf.drain(..end).collect();
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or_default().to_owned();
        let (answer, then) = script(&line);
        if stream.write_all(answer).await.is_err() {
            return;
        }
        match then {
            Then::KeepAlive => {}
            Then::Close => return,
            Then::Drain => {
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 16 * 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

async fn proxy_for(backend: &Scripted) -> (Proc, SocketAddr, TempConfig) {
    let config = TempConfig::new(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nretries = 0\n[admin]\nlisten = \"\"\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [[targets]]\nurl = \"http://{}\"\nname = \"scripted\"\n",
        backend.addr
    ));
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = proc.wait_listening("http", START).await;
    eventually("the proxy serves", DEADLINE, || async {
        let mut c = RawConn::connect(addr, DEADLINE).await.ok()?;
        c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.ok()?;
        (c.read_response().await.ok()?.status == 200).then_some(())
    })
    .await;
    (proc, addr, config)
}

async fn ask(addr: SocketAddr, request: &str) -> tether_testkit::raw::RawResponse {
    let mut c = RawConn::connect(addr, DEADLINE).await.expect("connect");
    c.send(request.as_bytes()).await.expect("send");
    c.read_response().await.expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_reaches_the_client_intact() {
    let backend = Scripted::start().await;
    let (_proc, addr, _config) = proxy_for(&backend).await;

    let res = ask(addr, "GET /chunked HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"hello world");

    let res = ask(addr, "GET /close HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"until the end", "a body delimited by the close");

    let res = ask(addr, "GET /hints HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(
        (res.status, &res.body[..]),
        (200, &b"ok"[..]),
        "the 103 is passed over"
    );

    // HEAD: the length is the GET's, no body follows, and the client's
    // connection goes on.
    let mut c = RawConn::connect(addr, DEADLINE).await.expect("connect");
    c.send(b"HEAD /head HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("send");
    let res = c.read_head().await.expect("head");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("1234"));
    c.send(b"GET /none HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(c.read_response().await.expect("204").status, 204);
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("send");
    let res = c.read_response().await.expect("200");
    assert_eq!((res.status, &res.body[..]), (200, &b"plain"[..]));
}

/// The backend's fields reach the client as it sent them, less the
/// hop-by-hop ones (also those its `Connection` names), a length beside
/// `Transfer-Encoding` and its own sticky headers; the proxy's are added
/// once, and the connections on both sides go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_fields_pass_back_less_hop_by_hop_ones() {
    let backend = Scripted::start().await;
    let (_proc, addr, _config) = proxy_for(&backend).await;
    let mut c = RawConn::connect(addr, DEADLINE).await.expect("connect");
    for _ in 0..2 {
        c.send(b"GET /fields HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("send");
        let res = c.read_response().await.expect("response");
        assert_eq!((res.status, &res.body[..]), (200, &b"ok"[..]));
        let names: Vec<String> = res
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        for gone in [
            "keep-alive",
            "content-length",
            "te",
            "trailer",
            "proxy-authenticate",
            "upgrade",
        ] {
            assert!(!names.iter().any(|n| n == gone), "{gone} passed: {names:?}");
        }
        let all = |name: &str| -> Vec<&str> {
            res.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(all("server"), ["Scripted/1"]);
        assert_eq!(all("set-cookie"), ["a=1", "b=2"]);
        assert_eq!(all("date"), ["Sun, 06 Dec 2026 10:00:00 GMT"]);
        assert_eq!(all("x-empty"), [""]);
        assert_eq!(all("x-target-server"), ["scripted"]);
        let last_use = all("x-target-server-last-use");
        assert_eq!(last_use.len(), 1);
        assert!(
            last_use[0].parse::<u64>().is_ok_and(|ms| ms > 1),
            "{last_use:?}"
        );
        assert_eq!(
            all("transfer-encoding"),
            ["chunked"],
            "re-chunked for the client"
        );
    }
    c.send(b"GET /named HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("send");
    let res = c.read_response().await.expect("response");
    assert_eq!((res.status, &res.body[..]), (200, &b"ok"[..]));
    assert_eq!(res.header("x-secret"), None, "named by Connection");
    assert_eq!(res.header("x-kept"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_response_is_a_502_and_a_cut_body_is_not_passed_off_as_whole() {
    let backend = Scripted::start().await;
    let (_proc, addr, _config) = proxy_for(&backend).await;
    for path in ["/conflict", "/garbage"] {
        let res = ask(addr, &format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n")).await;
        assert_eq!(res.status, 502, "{path}");
    }
    // The head promised 100 bytes and 9 came: the client must not get a
    // complete-looking answer.
    let mut c = RawConn::connect(addr, DEADLINE).await.expect("connect");
    c.send(b"GET /short HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("send");
    let head = c.read_head().await.expect("head");
    assert_eq!(head.header("content-length"), Some("100"));
    // Cut, not left hanging: a wait that ran into the read timeout would
    // not tell a cut from a proxy that never finishes the answer.
    let cut = c
        .read_response()
        .await
        .expect_err("the answer cannot complete");
    assert_ne!(
        cut.kind(),
        std::io::ErrorKind::TimedOut,
        "the connection was not cut: {cut}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let backend = Scripted::start().await;
    let (_proc, addr, _config) = proxy_for(&backend).await;
    let before = backend.used();
    let mut c = RawConn::connect(addr, DEADLINE).await.expect("connect");
    for _ in 0..20 {
        c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("send");
        assert_eq!(c.read_response().await.expect("response").status, 200);
    }
    // The warm-up's connection may be the one reused; at most one new.
    assert!(
        backend.used() - before <= 1,
        "{} upstream connections for 20 requests",
        backend.used() - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_whole_body_reaches_the_client() {
    let backend = Scripted::start().await;
    let (_proc, addr, _config) = proxy_for(&backend).await;
    let mut c = RawConn::connect(addr, DEADLINE).await.expect("connect");
    // Half of the body now; the rest would never come.
    c.send(b"POST /early HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\n")
        .await
        .expect("send");
    c.send(&[b'x'; 50_000]).await.expect("half the body");
    let res = c.read_response().await.expect("the backend's answer");
    assert_eq!((res.status, &res.body[..]), (413, &b"big!"[..]));
}
