//! The tether-echo binary, run as a process.

use std::time::Duration;

use http::Method;
use tether_testkit::{FakeBackend, HEALTH_PATH, Proc, get, http::request, run_to_end};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echo_serves_its_name_and_stops_on_sigterm() {
    let mut echo = Proc::spawn("tether-echo", &["--name", "app-1"], &[]);
    let line = echo.wait_for_line("listening on", DEADLINE).await;
    assert!(
        line.starts_with("tether-echo app-1 listening on 127.0.0.1:"),
        "{line}"
    );
    let addr = echo.wait_listening("tether-echo", DEADLINE).await;

    let reply = get(addr, "/", &[]).await.expect("get");
    assert_eq!(reply.body, "app-1");
    assert_eq!(reply.header("x-backend"), Some("app-1"));

    request(addr, Method::POST, "/_echo/fail", &[], "")
        .await
        .expect("fail");
    assert_eq!(
        get(addr, HEALTH_PATH, &[]).await.expect("health").status,
        503
    );

    echo.terminate();
    let status = echo.wait_exit(DEADLINE).await.expect("exits on SIGTERM");
    assert!(status.success(), "{status}; output:\n{}", echo.output());
}

#[tokio::test]
async fn echo_exits_2_when_the_port_is_taken() {
    let taken = FakeBackend::start("holder").await;
    let listen = taken.addr().to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_to_end("tether-echo", &["--listen", &listen, "--name", "x"], &[])
    })
    .await
    .expect("join");
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    taken.stop().await;
}
