//! Passive health across instances: a proxy that sees a member failing
//! ejects it locally at once and reports it; the checker re-probes, and
//! only a confirmed failure reaches the other proxies.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{DEADLINE, Running, backends, healthy_checker, http_targets, wait_routes};
use tether_checker::CheckerConfig;
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_proxy::config::{HealthSource, ProxyConfig};
use tether_testkit::{FakeBackend, eventually};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// How long "nothing happens" is watched for: the checker publishes a
/// change within milliseconds of a probe result.
const QUIET: Duration = Duration::from_secs(2);

/// A proxy fed by the checker at `checker_url`, with short timeouts so a
/// hung member fails fast.
async fn start_proxy(checker_url: &str) -> Running {
    let uri = checker_url.parse().expect("uri");
    let mut config = ProxyConfig::with_defaults(HealthSource::Checkers(vec![uri]));
    config.response_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    Running::start(config).await
}

/// A real checker running in-process until dropped.
struct Checker {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Checker {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A real checker whose interval is so long that only a report can make
/// it notice anything within a test.
async fn start_checker(backends: &[FakeBackend]) -> Checker {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = CheckerConfig::new(addr, http_targets(backends, Duration::from_secs(60), 2));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tether_checker::run_on(listener, config, async move {
        let _ = stopped.await;
    }));
    Checker { addr, _stop: stop }
}

/// The checker's state of `name` (a `pb::HealthState`), asked over gRPC.
async fn checker_state(client: &mut HealthServiceClient<Channel>, name: &str) -> Option<i32> {
    let reply = client
        .get(pb::GetRequest {
            name: name.to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    reply.target.map(|t| t.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failures_eject_locally_and_are_reported() {
    let b = backends(3).await;
    let checker = healthy_checker(&b).await;
    let proxy = start_proxy(&checker.url()).await;
    wait_routes(&proxy, &["app-1", "app-2", "app-3"]).await;

    // app-2 hangs: every request to it ends in a 504 after 300 ms.
    b[1].set_latency(Duration::from_secs(30));
    let mut timeouts = 0;
    for _ in 0..30 {
        let r = proxy.get().await;
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
    let a = start_proxy(&checker.url()).await;
    let quiet = start_proxy(&checker.url()).await;
    wait_routes(&a, &["app-1", "app-2", "app-3"]).await;
    wait_routes(&quiet, &["app-1", "app-2", "app-3"]).await;

    // app-3 dies between probes; only proxy `a` gets traffic. Its connect
    // failures are retried elsewhere, so its clients see no error either.
    let mut b = b;
    let dead = b.remove(2);
    dead.stop().await;
    let t0 = Instant::now();
    for _ in 0..12 {
        assert_eq!(a.get().await.status, 200);
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
    let a = start_proxy(&checker.url()).await;
    wait_routes(&a, &["app-1", "app-2"]).await;
    // Both members have their first probe result (the proxy routes to
    // them): from here on only a report makes the checker probe.
    let hits = b[1].health_hits();
    let mut client = HealthServiceClient::connect(checker.url())
        .await
        .expect("connect");
    assert_eq!(
        checker_state(&mut client, "app-2").await,
        Some(pb::HealthState::Healthy as i32)
    );
    // Every other proxy learns health only from this stream, so what it
    // carries is what "globally" means here.
    let mut others = client
        .watch(pb::WatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(DEADLINE, others.message())
        .await
        .expect("the snapshot within the deadline")
        .expect("watch message")
        .expect("a snapshot");

    // app-2 hangs on real requests but passes its health check, as when a
    // client keeps hitting a URL that fails: `a` ejects it locally...
    b[1].set_latency(Duration::from_secs(30));
    let mut timeouts = 0;
    for _ in 0..20 {
        if a.get().await.status == 504 {
            timeouts += 1;
        }
    }
    assert_eq!(timeouts, 3);
    // ...and reports it; the checker re-probes at once (its interval is a
    // minute, so any new health hit is the report's doing)...
    eventually("the report's re-probe reached app-2", DEADLINE, || {
        std::future::ready((b[1].health_hits() > hits).then_some(()))
    })
    .await;
    // ...which passes, so the checker publishes nothing to the others.
    let silent = tokio::time::timeout(QUIET, others.message()).await;
    assert!(
        silent.is_err(),
        "the checker published after an unconfirmed report: {silent:?}"
    );
    let now = checker_state(&mut client, "app-2").await;
    assert_eq!(now, Some(pb::HealthState::Healthy as i32));
}
