//! What probes cost the network: HTTP probes of one target share a
//! kept-alive connection, TCP probes close without leaving TIME_WAIT, a
//! target given by host name is looked up once per configured refresh,
//! and Watch subscribers share one snapshot.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{DEADLINE, Server, next_update, open_watch};
use tether_checker::Checker;
use tether_checker::dns::{Lookup, Resolve};
use tether_checker::probe::Prober;
use tether_core::{PoolEntry, ProbeKind, ProbeOutcome, Target, UpdateKind};
use tether_testkit::{FakeBackend, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(2);

fn target(name: &str, url: String, kind: ProbeKind) -> Target {
    common::target(name, url, kind, INTERVAL, TIMEOUT, 1)
}

async fn assert_succeeds(prober: &mut Prober) {
    let r = prober.probe().await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
}

// === HTTP: one connection ===

#[tokio::test]
async fn http_probes_share_one_connection() {
    let backend = FakeBackend::start("app").await;
    let mut prober = Prober::new(&target("app", backend.url(), ProbeKind::Http));
    for _ in 0..5 {
        assert_succeeds(&mut prober).await;
    }
    assert_eq!(backend.health_hits(), 5);
    assert_eq!(backend.connections(), 1, "5 probes, one connection");
    backend.stop().await;
}

#[tokio::test]
async fn a_target_that_closes_its_connections_gets_new_ones() {
    let backend = FakeBackend::start("app").await;
    backend.set_close_after_each(true);
    let mut prober = Prober::new(&target("app", backend.url(), ProbeKind::Http));
    for _ in 0..3 {
        assert_succeeds(&mut prober).await;
    }
    assert_eq!(backend.connections(), 3, "Connection: close is honoured");
    backend.stop().await;
}

#[tokio::test]
async fn a_kept_connection_closed_under_the_probe_is_retried_on_a_new_one() {
    // The target drops a request on a reused connection unanswered, as when
    // its keep-alive timeout fires just as the probe arrives: that is not
    // the target failing, and must not count as a failed probe.
    let backend = FakeBackend::start("app").await;
    let mut prober = Prober::new(&target("app", backend.url(), ProbeKind::Http));
    assert_succeeds(&mut prober).await;
    backend.set_drop_reused_requests(true);
    assert_succeeds(&mut prober).await;
    assert_eq!(backend.dropped(), 1);
    assert_eq!(backend.connections(), 2);
    backend.stop().await;
}

#[tokio::test]
async fn a_kept_connection_the_target_closed_while_idle_is_replaced_at_once() {
    // A server that answers once per connection and closes it when told,
    // while it is idle, as a keep-alive timeout does: the prober finds it
    // closed at the next probe and must open a new one then, not wait for
    // its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(tokio::sync::Notify::new());
    let server = {
        let (closed, close) = (closed.clone(), close.clone());
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.expect("read");
                    assert!(n > 0, "the prober closed before its request");
                    got.extend_from_slice(&buf[..n]);
                }
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .expect("write");
                close.notified().await;
                drop(conn);
                closed.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let timeout = Duration::from_secs(5);
    let t = common::target(
        "app",
        format!("http://{addr}"),
        ProbeKind::Http,
        INTERVAL,
        timeout,
        1,
    );
    let mut prober = Prober::new(&t);
    for n in 1..=3 {
        let r = prober.probe().await;
        assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
        assert!(r.latency < timeout / 2, "probe {n} waited: {r:?}");
        close.notify_one();
        eventually("the server to close the connection", DEADLINE, || {
            std::future::ready((closed.load(Ordering::SeqCst) >= n).then_some(()))
        })
        .await;
    }
    server.abort();
}

#[tokio::test]
async fn a_failed_probe_drops_its_connection() {
    let backend = FakeBackend::start("app").await;
    let mut prober = Prober::new(&target("app", backend.url(), ProbeKind::Http));
    assert_succeeds(&mut prober).await;
    backend.set_healthy(false);
    let failed = prober.probe().await;
    assert_eq!(failed.error.as_deref(), Some("status 503"));
    assert_eq!(backend.connections(), 1);
    backend.set_healthy(true);
    assert_succeeds(&mut prober).await;
    assert_succeeds(&mut prober).await;
    assert_eq!(
        backend.connections(),
        2,
        "a new connection after the failure, then kept"
    );
    backend.stop().await;
}

// === TCP: no TIME_WAIT ===

/// Whether a socket from local port `local` to port `remote` is in
/// TIME_WAIT (state 06) in /proc/net/tcp or tcp6. Both ports, because the
/// host may hold TIME_WAIT sockets of other connections on the same
/// ephemeral port.
fn time_wait_between(local: u16, remote: u16) -> bool {
    let port = |addr: Option<&&str>| {
        addr.and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        let table = std::fs::read_to_string(path).unwrap_or_default();
        table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            port(cols.get(1)) == Some(local)
                && port(cols.get(2)) == Some(remote)
                && cols.get(3) == Some(&"06")
        })
    })
}

#[tokio::test]
async fn a_tcp_probe_leaves_no_time_wait() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut prober = Prober::new(&target("app", format!("http://{addr}"), ProbeKind::Tcp));
    assert_succeeds(&mut prober).await;
    let (mut accepted, peer) = listener.accept().await.expect("accept");
    // The prober closed with a reset: the server side reads an error, not
    // the end of a stream it would then close (the FIN-first close that
    // leaves the prober's port in TIME_WAIT).
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, accepted.read(&mut buf))
        .await
        .expect("the probe's connection ends");
    assert!(read.is_err(), "expected a reset, got {read:?}");
    drop(accepted);
    assert!(
        !time_wait_between(peer.port(), addr.port()),
        "the probe's connection {peer} -> {addr} is in TIME_WAIT"
    );
}

// === host names: looked up once per refresh ===

/// Answers every name with one address and counts the lookups.
struct Counting {
    addr: SocketAddr,
    lookups: AtomicUsize,
}

impl Resolve for Counting {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> Lookup<'a> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(vec![self.addr]) })
    }
}

#[tokio::test]
async fn a_host_name_is_looked_up_once_per_refresh() {
    let backend = FakeBackend::start("app").await;
    let port = backend.addr().port();
    let url = format!("http://app.test:{port}");
    for kind in [ProbeKind::Tcp, ProbeKind::Http] {
        let resolver = Arc::new(Counting {
            addr: backend.addr(),
            lookups: AtomicUsize::new(0),
        });
        let mut prober = Prober::new(&target("app", url.clone(), kind))
            .with_resolver(resolver.clone(), Duration::from_secs(3600));
        for _ in 0..4 {
            assert_succeeds(&mut prober).await;
        }
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1, "{kind:?}");
    }
    // A TCP probe connects every time; with no refresh, it looks up every
    // time too.
    let resolver = Arc::new(Counting {
        addr: backend.addr(),
        lookups: AtomicUsize::new(0),
    });
    let mut prober = Prober::new(&target("app", url, ProbeKind::Tcp))
        .with_resolver(resolver.clone(), Duration::ZERO);
    for _ in 0..3 {
        assert_succeeds(&mut prober).await;
    }
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 3, "refresh 0");
    backend.stop().await;
}

/// A static target given by host name is looked up as often as `[health]
/// dns_refresh` says (`PoolEntry::host_refresh`), not every ten seconds
/// whatever the config.
#[tokio::test]
async fn a_static_host_name_follows_the_configured_refresh() {
    let backend = FakeBackend::start("app").await;
    let url = format!("http://app.test:{}", backend.addr().port());
    // 1 ms is older than the last answer at every probe (100 ms apart);
    // an hour is never.
    for (refresh, every_probe) in [
        (Duration::from_millis(1), true),
        (Duration::from_secs(3600), false),
    ] {
        let resolver = Arc::new(Counting {
            addr: backend.addr(),
            lookups: AtomicUsize::new(0),
        });
        let entry =
            PoolEntry::fixed(target("app", url.clone(), ProbeKind::Tcp)).with_host_refresh(refresh);
        let checker = Checker::start_with(vec![entry], resolver.clone());
        let hub = checker.handle();
        eventually("five probes", DEADLINE, || async {
            let m = hub.metrics().await.expect("metrics");
            (m.targets[0].probes_succeeded >= 5).then_some(())
        })
        .await;
        let lookups = resolver.lookups.load(Ordering::SeqCst);
        if every_probe {
            // Each probe looks up before it connects.
            assert!(lookups >= 5, "refresh {refresh:?}: {lookups} lookups");
        } else {
            assert_eq!(lookups, 1, "refresh {refresh:?}");
        }
    }
    backend.stop().await;
}

// === snapshots: one for all subscribers ===

#[tokio::test]
async fn subscribers_share_one_snapshot() {
    let backends = [FakeBackend::start("a").await, FakeBackend::start("b").await];
    let targets: Vec<Target> = backends
        .iter()
        .map(|b| target(b.name(), b.url(), ProbeKind::Http))
        .collect();
    let checker = Checker::start(targets.clone());
    let hub = checker.handle();
    hub.first_round().await.expect("first round");
    let one = hub.subscribe().await.expect("subscribe");
    let two = hub.subscribe().await.expect("subscribe");
    assert_eq!(one.snapshot, two.snapshot);
    assert!(
        Arc::ptr_eq(&one.snapshot, &two.snapshot) || one.snapshot.version != two.snapshot.version,
        "same version within a second: one shared copy"
    );
    drop(checker);

    // And over gRPC: two Watch streams open with the same content.
    let server = Server::start(targets).await;
    let mut client = server.client().await;
    let mut first = open_watch(&mut client).await;
    let snap = next_update("a first snapshot", &mut first).await;
    assert!(matches!(snap.kind, UpdateKind::Snapshot { ref targets, .. } if targets.len() == 2));
    let mut second = open_watch(&mut client).await;
    let other = next_update("a second snapshot", &mut second).await;
    if other.version == snap.version {
        // Within a second at one version: the same shared snapshot, probe
        // details and all.
        assert_eq!(snap, other);
    }
    server.stop().await;
    for b in backends {
        b.stop().await;
    }
}
