//! Passive health across instances: a proxy that sees a member failing
//! ejects it locally at once and reports it; the checker re-probes, and
//! only a confirmed failure reaches the other proxies.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use tether_checker::CheckerConfig;
use tether_checker::config::LogConfig;
use tether_core::{HealthState, ProbeKind, ProbeSpec, Target};
use tether_proxy::config::{HealthSource, ProxyConfig};
use tether_testkit::{FakeBackend, FakeChecker, Reply, eventually, get, status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(10);

/// Something running in-process until dropped.
struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_proxy(source: HealthSource) -> Running {
    let mut config = ProxyConfig::with_defaults(source);
    config.response_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tether_proxy::run_on(listener, config, async move {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

/// A real checker whose interval is so long that only a report can make
/// it notice anything within a test.
async fn start_checker(backends: &[FakeBackend]) -> Running {
    let spec = ProbeSpec {
        kind: ProbeKind::Http,
        path: "/health".to_owned(),
        interval: Duration::from_secs(60),
        timeout: Duration::from_millis(500),
        rise: NonZeroU32::new(1).expect("1"),
        fall: NonZeroU32::new(2).expect("2"),
    };
    let targets = backends
        .iter()
        .map(|b| Target {
            name: b.name().to_owned(),
            url: b.url(),
            probe: spec.clone(),
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = CheckerConfig {
        grpc_listen: addr,
        targets,
        log: LogConfig::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tether_checker::run_on(listener, config, async move {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

async fn call(proxy: &Running) -> Reply {
    get(proxy.addr, "/", &[]).await.expect("proxy answers")
}

/// Waits until `n` requests in a row through `proxy` are all 200 and
/// spread over exactly `expected`.
async fn wait_routes(proxy: &Running, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually("the proxy routes to the expected set", DEADLINE, || async {
        let mut seen = Vec::new();
        for _ in 0..expected.len() * 3 {
            let r = call(proxy).await;
            if r.status != 200 {
                return None;
            }
            seen.push(r.body);
        }
        seen.sort();
        seen.dedup();
        (seen == want).then_some(())
    })
    .await;
}

async fn backends(n: usize) -> Vec<FakeBackend> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(FakeBackend::start(&format!("app-{i}")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failures_eject_locally_and_are_reported() {
    let b = backends(3).await;
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        1,
        b.iter()
            .map(|x| status(x.name(), &x.url(), HealthState::Healthy))
            .collect(),
    );
    let proxy = start_proxy(HealthSource::Checkers(vec![
        checker.url().parse().expect("uri"),
    ]))
    .await;
    wait_routes(&proxy, &["app-1", "app-2", "app-3"]).await;

    // app-2 hangs: every request to it ends in a 504 after 300 ms.
    b[1].set_latency(Duration::from_secs(30));
    let mut timeouts = 0;
    for _ in 0..30 {
        let r = call(&proxy).await;
        if r.status == 504 {
            timeouts += 1;
            assert!(!r.body.contains("127.0.0.1"), "{}", r.body);
        } else {
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(timeouts, 3, "ejected after exactly three failures");
    eventually("the ejection was reported", DEADLINE, || async {
        checker
            .reports()
            .iter()
            .any(|(name, _)| name == "app-2")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_failure_reaches_a_proxy_that_never_saw_it() {
    let b = backends(3).await;
    let checker = start_checker(&b).await;
    let uri: http::Uri = format!("http://{}", checker.addr).parse().expect("uri");
    let a = start_proxy(HealthSource::Checkers(vec![uri.clone()])).await;
    let quiet = start_proxy(HealthSource::Checkers(vec![uri])).await;
    wait_routes(&a, &["app-1", "app-2", "app-3"]).await;
    wait_routes(&quiet, &["app-1", "app-2", "app-3"]).await;

    // app-3 dies between probes; only proxy `a` gets traffic. Its connect
    // failures are retried elsewhere, so its clients see no error either.
    let mut b = b;
    let dead = b.remove(2);
    dead.stop().await;
    let t0 = Instant::now();
    for _ in 0..12 {
        assert_eq!(call(&a).await.status, 200);
    }
    // The checker's interval is a minute: `quiet` can only learn through
    // the report `a` sent.
    wait_routes(&quiet, &["app-1", "app-2"]).await;
    eprintln!(
        "passive: dead member left the quiet proxy's table after {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_report_changes_nothing_globally() {
    let b = backends(2).await;
    let checker = start_checker(&b).await;
    let uri: http::Uri = format!("http://{}", checker.addr).parse().expect("uri");
    let a = start_proxy(HealthSource::Checkers(vec![uri.clone()])).await;
    let quiet = start_proxy(HealthSource::Checkers(vec![uri])).await;
    wait_routes(&a, &["app-1", "app-2"]).await;
    wait_routes(&quiet, &["app-1", "app-2"]).await;

    // app-2 hangs on real requests but passes its health check, as when a
    // client keeps hitting a URL that fails: `a` ejects it locally...
    b[1].set_latency(Duration::from_secs(30));
    let mut timeouts = 0;
    for _ in 0..20 {
        if call(&a).await.status == 504 {
            timeouts += 1;
        }
    }
    assert_eq!(timeouts, 3);
    // ...but the checker's re-probe passes, so the other proxy keeps it.
    // (Its requests to app-2 would hang, so ask the checker instead.)
    let mut client = tether_proto::pb::health_service_client::HealthServiceClient::connect(
        format!("http://{}", checker.addr),
    )
    .await
    .expect("connect");
    let before = client
        .get(tether_proto::pb::GetRequest {
            name: "app-2".into(),
        })
        .await
        .expect("get")
        .into_inner();
    b[1].set_latency(Duration::ZERO);
    let after = client
        .get(tether_proto::pb::GetRequest {
            name: "app-2".into(),
        })
        .await
        .expect("get")
        .into_inner();
    let state = |r: &tether_proto::pb::GetResponse| r.target.as_ref().map(|t| t.state);
    assert_eq!(
        state(&before),
        Some(tether_proto::pb::HealthState::Healthy as i32)
    );
    assert_eq!(state(&after), state(&before));
    assert!(
        b[1].health_hits() >= 2,
        "the report made the checker probe again"
    );
    wait_routes(&quiet, &["app-1", "app-2"]).await;
}
