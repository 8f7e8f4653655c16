//! The response timeout is the backend's time to answer once the request
//! stopped moving: an upload that keeps going for longer is not a slow
//! backend, and a backend that has the whole request and says nothing is.

mod common;

use std::time::Duration;

use common::{Running, backends, checker_config, healthy_checker, wait_routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

async fn proxy() -> (
    Vec<tether_testkit::FakeBackend>,
    tether_testkit::FakeChecker,
    Running,
) {
    let b = backends(1).await;
    let checker = healthy_checker(&b).await;
    let mut config = checker_config(&checker);
    config.response_timeout = RESPONSE_TIMEOUT;
    let proxy = Running::start(config).await;
    wait_routes(&proxy, &["app-1"]).await;
    (b, checker, proxy)
}

/// The status line of what `stream` answers, read to the end.
async fn status_of(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_response_timeout_is_not_cut() {
    let (b, _checker, proxy) = proxy().await;
    // 48 KiB: past the 16 KiB the proxy reads ahead before it picks a
    // backend, so two thirds of it stream while the backend waits.
    const PIECES: usize = 12;
    const PIECE: usize = 4096;
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                PIECES * PIECE
            )
            .as_bytes(),
        )
        .await
        .expect("head");
    // Pacing, not synchronisation: the part that streams lasts about three
    // times the response timeout, moving every 200 ms.
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(200));
    for _ in 0..PIECES {
        every.tick().await;
        client.write_all(&[b'x'; PIECE]).await.expect("piece");
    }
    assert!(started.elapsed() > RESPONSE_TIMEOUT * 2);
    assert_eq!(status_of(&mut client).await, "HTTP/1.1 200 OK");
    let got = b[0].requests().last().map(|r| (r.body_len, r.complete));
    assert_eq!(got, Some((PIECES * PIECE, true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_silent_after_the_whole_request_gets_a_504() {
    let (b, _checker, proxy) = proxy().await;
    b[0].set_latency(Duration::from_secs(30));
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    let sent = Instant::now();
    client
        .write_all(
            b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await
        .expect("request");
    assert_eq!(status_of(&mut client).await, "HTTP/1.1 504 Gateway Timeout");
    let took = sent.elapsed();
    assert!(
        took >= RESPONSE_TIMEOUT && took < RESPONSE_TIMEOUT + Duration::from_secs(5),
        "504 after {took:?}"
    );
}
