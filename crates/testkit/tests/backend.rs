//! FakeBackend over real sockets.

use std::time::{Duration, Instant};

use http::Method;
use tether_testkit::{FakeBackend, HEALTH_PATH, eventually, get, http::request};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn answers_with_its_name_and_records_requests() {
    let backend = FakeBackend::start("app-1").await;
    assert_eq!(backend.url(), format!("http://{}", backend.addr()));

    let reply = get(backend.addr(), "/some/path?q=1", &[("x-test", "yes")])
        .await
        .expect("get");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "app-1");
    assert_eq!(reply.header("X-Backend"), Some("app-1"));

    let reply = request(
        backend.addr(),
        Method::POST,
        "/upload",
        &[],
        vec![7u8; 1000],
    )
    .await
    .expect("post");
    assert_eq!(reply.body, "app-1");

    assert_eq!(backend.hits(), 2);
    let reqs = backend.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].uri, "/some/path?q=1");
    assert_eq!(reqs[0].header("x-test"), Some("yes"));
    assert_eq!(reqs[0].body_len, 0);
    assert_eq!(reqs[1].method, "POST");
    assert_eq!(reqs[1].body_len, 1000);
    backend.stop().await;
}

#[tokio::test]
async fn health_toggles_and_is_not_a_hit() {
    let backend = FakeBackend::start("app-1").await;
    let health = |b: &FakeBackend| {
        let addr = b.addr();
        async move {
            let r = get(addr, HEALTH_PATH, &[]).await.expect("health");
            (r.status, r.body)
        }
    };
    assert_eq!(health(&backend).await, (200, "ok".to_owned()));
    backend.set_healthy(false);
    assert_eq!(health(&backend).await, (503, "failing".to_owned()));
    backend.set_healthy(true);
    assert_eq!(health(&backend).await, (200, "ok".to_owned()));

    // The demo's control paths.
    let r = request(backend.addr(), Method::POST, "/_echo/fail", &[], "")
        .await
        .expect("fail");
    assert_eq!(r.status, 200);
    assert_eq!(health(&backend).await.0, 503);
    request(backend.addr(), Method::POST, "/_echo/recover", &[], "")
        .await
        .expect("recover");
    assert_eq!(health(&backend).await.0, 200);

    assert_eq!(backend.health_hits(), 5);
    assert_eq!(backend.hits(), 0);
    backend.stop().await;
}

#[tokio::test]
async fn latency_delays_answers() {
    let backend = FakeBackend::start("slow").await;
    backend.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    get(backend.addr(), "/", &[]).await.expect("get");
    assert!(started.elapsed() >= Duration::from_millis(150));
    // Health answers are never delayed.
    backend.set_latency(Duration::from_secs(600));
    tokio::time::timeout(
        Duration::from_secs(10),
        get(backend.addr(), HEALTH_PATH, &[]),
    )
    .await
    .expect("health is not delayed")
    .expect("health");
    backend.stop().await;
}

#[tokio::test]
async fn stop_refuses_connects_and_closes_open_ones() {
    let backend = FakeBackend::start("app-1").await;
    let addr = backend.addr();
    let mut open = TcpStream::connect(addr).await.expect("connect");
    // Make sure the connection was accepted and is being served.
    eventually(
        "backend accepted the connection",
        Duration::from_secs(5),
        || async { get(addr, HEALTH_PATH, &[]).await.ok() },
    )
    .await;

    backend.stop().await;

    assert!(
        get(addr, "/", &[]).await.is_err(),
        "connect after stop must fail"
    );
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
        .await
        .expect("open connection must be closed by stop");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "expected EOF or reset, got {n:?}"
    );
}

#[tokio::test]
async fn start_on_restarts_on_the_same_port() {
    let first = FakeBackend::start("first").await;
    let addr = first.addr();
    get(addr, "/", &[]).await.expect("get first");
    first.stop().await;

    let second = FakeBackend::start_on("second", addr).await.expect("rebind");
    assert_eq!(second.addr(), addr);
    let reply = get(addr, "/", &[]).await.expect("get second");
    assert_eq!(reply.body, "second");
    second.stop().await;
}

#[tokio::test]
async fn reset_mode_resets_new_connections() {
    let backend = FakeBackend::start("flaky").await;
    backend.set_reset_connections(true);
    assert!(get(backend.addr(), "/", &[]).await.is_err());
    assert_eq!(backend.resets(), 1);
    assert_eq!(backend.hits(), 0);
    backend.set_reset_connections(false);
    assert_eq!(
        get(backend.addr(), "/", &[]).await.expect("get").body,
        "flaky"
    );
    backend.stop().await;
}
