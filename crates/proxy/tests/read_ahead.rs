//! A request body (HTTP/1 or HTTP/2) is read ahead, up to 16 KiB, before a
//! backend is chosen, under the request body's pace (`body_timeout`,
//! `min_body_rate`): a client trickling its body holds its own connection
//! for one `body_timeout` and never a backend's.

mod common;

use std::time::Duration;

use common::{DEADLINE, Running, backends, checker_config, healthy_checker, wait_routes};
use tether_testkit::{FakeBackend, eventually};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const BODY_TIMEOUT: Duration = Duration::from_secs(1);
/// The proxy's read-ahead (`http1::server::READ_AHEAD`).
const READ_AHEAD: usize = 16 * 1024;

async fn proxy() -> (Vec<FakeBackend>, tether_testkit::FakeChecker, Running) {
    let b = backends(1).await;
    let checker = healthy_checker(&b).await;
    let mut config = checker_config(&checker);
    config.body_timeout = BODY_TIMEOUT;
    let proxy = Running::start(config).await;
    wait_routes(&proxy, &["app-1"]).await;
    (b, checker, proxy)
}

/// Sends `pieces` of `body` on `client`, one every `every` (pacing, not
/// synchronisation: the proxy's answer is what the tests wait for), and
/// stops early if the proxy closes the connection.
async fn trickle(
    client: &mut (impl AsyncWrite + Unpin),
    body: &[u8],
    piece: usize,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    for p in body.chunks(piece) {
        tick.tick().await;
        if client.write_all(p).await.is_err() {
            return;
        }
    }
}

/// Everything the proxy answers on `client` until it closes, as text.
async fn answer(client: &mut (impl AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, client.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer within {DEADLINE:?}");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_never_reaches_a_backend_and_is_cut_after_body_timeout() {
    let (b, _checker, proxy) = proxy().await;
    let (hits, conns) = (b[0].hits(), b[0].connections());
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client
        .write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .expect("head");
    let started = Instant::now();
    // Ten bytes a second against the default minimum of 1 KiB a second.
    let (mut rd, mut wr) = client.into_split();
    let (_, text) = tokio::join!(
        trickle(&mut wr, &[b'x'; 100], 1, Duration::from_millis(100)),
        answer(&mut rd)
    );
    let took = started.elapsed();
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "{}",
        text.lines().next().unwrap_or_default()
    );
    assert!(
        took >= BODY_TIMEOUT,
        "cut after {took:?}, before body_timeout"
    );
    assert!(took < BODY_TIMEOUT * 4, "cut only after {took:?}");
    assert_eq!(
        (b[0].hits(), b[0].connections()),
        (hits, conns),
        "the backend never saw the request"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_chunked_body_within_the_read_ahead_reaches_the_backend_whole_with_a_length() {
    let (b, _checker, proxy) = proxy().await;
    const LEN: usize = 12 * 1024;
    let mut wire = Vec::new();
    for piece in vec![b'y'; LEN].chunks(1024) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client
        .write_all(
            b"POST /form HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .expect("head");
    // ~10 KiB a second: slow, but above the minimum rate.
    trickle(&mut client, &wire, 1040, Duration::from_millis(100)).await;
    let text = answer(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let got = b[0].requests().pop().expect("the backend got it");
    assert_eq!(
        (got.uri.as_str(), got.body_len, got.complete),
        ("/form", LEN, true)
    );
    let len = LEN.to_string();
    assert_eq!(
        (
            got.header("content-length"),
            got.header("transfer-encoding")
        ),
        (Some(len.as_str()), None),
        "read whole before it went upstream, so sent with its length"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_read_ahead_streams_on_and_is_cut_when_it_falls_below_the_rate() {
    let (b, _checker, proxy) = proxy().await;
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client
        .write_all(b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .expect("head");
    // The read-ahead arrives at once, the rest at ten bytes a second.
    client
        .write_all(&[b'z'; READ_AHEAD + 1024])
        .await
        .expect("first part");
    let started = Instant::now();
    let (mut rd, mut wr) = client.into_split();
    let (_, text) = tokio::join!(
        trickle(&mut wr, &[b'z'; 100], 1, Duration::from_millis(100)),
        answer(&mut rd)
    );
    let took = started.elapsed();
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "{}",
        text.lines().next().unwrap_or_default()
    );
    assert!(took < BODY_TIMEOUT * 4, "cut only after {took:?}");
    // The backend records the request once its body ends, here broken
    // off when the proxy closed the connection.
    let got = eventually("the backend saw the body broken off", DEADLINE, || async {
        b[0].requests().into_iter().find(|r| r.uri == "/big")
    })
    .await;
    assert!(!got.complete, "{got:?}");
    assert!(got.body_len >= READ_AHEAD, "{got:?}");
    eventually("the backend connection is closed", DEADLINE, || async {
        (b[0].open_connections() == 0).then_some(())
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_bytes_is_refused_unread_without_a_100() {
    let b = backends(1).await;
    let checker = healthy_checker(&b).await;
    let mut config = checker_config(&checker);
    config.limits.max_body_bytes = Some(100);
    let proxy = Running::start(config).await;
    wait_routes(&proxy, &["app-1"]).await;
    let hits = b[0].hits();
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client
        .write_all(
            b"POST /big HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 1000\r\n\r\n",
        )
        .await
        .expect("head");
    let text = answer(&mut client).await;
    assert!(
        text.starts_with("HTTP/1.1 413 "),
        "the first thing said is the refusal: {text}"
    );
    assert!(!text.contains(" 100 "), "{text}");
    assert_eq!(b[0].hits(), hits);
    proxy.stop().await;
}

// === HTTP/2 clients ===

async fn h2_client(addr: std::net::SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    client.ready().await.expect("stream slot")
}

fn post(addr: std::net::SocketAddr, path: &str, length: Option<usize>) -> http::Request<()> {
    let mut req = http::Request::post(format!("http://{addr}{path}"));
    if let Some(n) = length {
        req = req.header("content-length", n);
    }
    req.body(()).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_within_the_read_ahead_goes_upstream_whole_with_a_length() {
    let (b, _checker, proxy) = proxy().await;
    let mut client = h2_client(proxy.addr).await;
    let (res, mut body) = client
        .send_request(post(proxy.addr, "/h2form", None), false)
        .expect("send");
    body.send_data(bytes::Bytes::from(vec![b'a'; 8192]), false)
        .expect("first piece");
    body.send_data(bytes::Bytes::from(vec![b'b'; 4096]), true)
        .expect("last piece");
    let res = tokio::time::timeout(DEADLINE, res)
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(res.status(), 200);
    let got = b[0].requests().pop().expect("the backend got it");
    assert_eq!(
        (got.uri.as_str(), got.body_len, got.complete),
        ("/h2form", 12288, true)
    );
    assert_eq!(
        got.header("content-length"),
        Some("12288"),
        "the client gave no length: read whole before it went upstream"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_http2_body_never_reaches_a_backend_and_is_cut_after_body_timeout() {
    let (b, _checker, proxy) = proxy().await;
    let (hits, conns) = (b[0].hits(), b[0].connections());
    let mut client = h2_client(proxy.addr).await;
    let (res, mut body) = client
        .send_request(post(proxy.addr, "/h2slow", Some(1_000_000)), false)
        .expect("send");
    let started = Instant::now();
    // Ten bytes a second against the default minimum of 1 KiB a second
    // (pacing, not synchronisation: the answer is what is waited for).
    let feeder = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..100 {
            tick.tick().await;
            if body
                .send_data(bytes::Bytes::from_static(b"x"), false)
                .is_err()
            {
                return;
            }
        }
    });
    let res = tokio::time::timeout(DEADLINE, res)
        .await
        .expect("an answer in time")
        .expect("an answer");
    let took = started.elapsed();
    feeder.abort();
    assert_eq!(res.status(), 408);
    assert!(
        took >= BODY_TIMEOUT,
        "cut after {took:?}, before body_timeout"
    );
    assert!(took < BODY_TIMEOUT * 4, "cut only after {took:?}");
    assert_eq!(
        (b[0].hits(), b[0].connections()),
        (hits, conns),
        "the backend never saw the request"
    );
    proxy.stop().await;
}
