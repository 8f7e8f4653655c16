//! Passive health, the checker's side: the `Report` RPC over real sockets.
//! A report makes the checker re-probe a target at once; only the probes'
//! results change its state, and reports are rate-limited per target.
//!
//! Every target here has a long interval, so anything that happens within
//! a second or two was caused by a report, not by the schedule.

mod common;

use std::time::Duration;

use common::{DEADLINE, Server, WatchRx, next_update, open_watch};
use tether_core::{HealthState, ProbeKind, Target, UpdateKind};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeBackend, eventually};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

/// Far longer than any test here: scheduled probes play no part.
const LONG_INTERVAL: Duration = Duration::from_secs(30);
/// Refused connects fail at once; the bound only guards a starved machine.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_secs(1);

// === helpers ===

fn target(name: &str, url: String, kind: ProbeKind) -> Target {
    common::target(name, url, kind, LONG_INTERVAL, TIMEOUT, 3)
}

async fn report(
    client: &mut HealthServiceClient<Channel>,
    name: &str,
    reason: &str,
) -> Result<bool, tonic::Status> {
    let request = pb::ReportRequest {
        name: name.to_owned(),
        reason: reason.to_owned(),
        reporter: "127.0.0.1:8080".to_owned(),
    };
    Ok(client.report(request).await?.into_inner().accepted)
}

async fn get(client: &mut HealthServiceClient<Channel>, name: &str) -> pb::TargetHealth {
    client
        .get(pb::GetRequest {
            name: name.to_owned(),
        })
        .await
        .expect("get")
        .into_inner()
        .target
        .expect("a record")
}

fn state(t: &pb::TargetHealth) -> HealthState {
    match pb::HealthState::try_from(t.state) {
        Ok(pb::HealthState::Healthy) => HealthState::Healthy,
        Ok(pb::HealthState::Unhealthy) => HealthState::Unhealthy,
        _ => HealthState::Unknown,
    }
}

/// A Watch stream pumped into a channel.
struct Watch {
    rx: WatchRx,
    version: u64,
}

impl Watch {
    async fn open(client: &mut HealthServiceClient<Channel>) -> Watch {
        let mut rx = open_watch(client).await;
        let first = next_update("the first watch message", &mut rx).await;
        assert!(
            matches!(first.kind, UpdateKind::Snapshot { .. }),
            "the first message must be a snapshot: {first:?}"
        );
        Watch {
            rx,
            version: first.version,
        }
    }

    /// The next change, which must be one version after the last.
    async fn change(&mut self, what: &str) -> pb::TargetHealth {
        let update = next_update(what, &mut self.rx).await;
        assert_eq!(update.version, self.version + 1, "one version per change");
        self.version = update.version;
        match update.kind {
            UpdateKind::Change(status) => pb::TargetHealth::from(&status),
            UpdateKind::Snapshot { .. } | UpdateKind::Removed(_) | UpdateKind::Checker(_) => {
                panic!("expected a change, got {update:?}")
            }
        }
    }

    /// Panics if anything arrives within `quiet`: the one wait in these
    /// tests that is a duration by nature (proving an absence).
    async fn expect_nothing(&mut self, quiet: Duration) {
        match tokio::time::timeout(quiet, self.rx.recv()).await {
            Err(_) => {}
            Ok(Some(item)) => panic!("expected no watch message, got {item:?}"),
            Ok(None) => panic!("watch stream ended"),
        }
    }
}

/// A checker with one target `name` on `backend`, made healthy by a report
/// (a target still unknown gets its first probe at once: the 30 s interval
/// is never waited for). Returns a client and a Watch opened once healthy.
async fn healthy_checker(
    name: &str,
    backend: &FakeBackend,
    kind: ProbeKind,
) -> (Server, HealthServiceClient<Channel>, Watch) {
    let server = Server::start(vec![target(name, backend.url(), kind)]).await;
    let mut client = server.client().await;
    eventually(&format!("{name} to become healthy"), DEADLINE, || {
        let mut client = client.clone();
        async move {
            let t = get(&mut client, name).await;
            if state(&t) == HealthState::Healthy {
                return Some(());
            }
            // Unknown: ask for its first probe (refused while one runs).
            let _ = report(&mut client, name, "warm-up").await;
            None
        }
    })
    .await;
    let watch = Watch::open(&mut client).await;
    (server, client, watch)
}

// === (a) a confirmed report publishes at once ===

#[tokio::test]
async fn confirmed_report_publishes_unhealthy_long_before_the_interval() {
    let backend = FakeBackend::start("app-1").await;
    let (server, mut client, mut watch) = healthy_checker("app-1", &backend, ProbeKind::Tcp).await;
    backend.stop().await;

    let started = Instant::now();
    let accepted = report(&mut client, "app-1", "connect refused")
        .await
        .expect("report");
    assert!(
        accepted,
        "a healthy target's first report schedules a burst"
    );
    let down = watch.change("app-1 to be published unhealthy").await;
    let took = started.elapsed();
    eprintln!("report -> unhealthy published in {took:?} (interval {LONG_INTERVAL:?})");

    assert_eq!(down.name, "app-1");
    assert_eq!(state(&down), HealthState::Unhealthy);
    // Decided by the state machine: fall (3) failed probes in a row.
    assert_eq!(down.consecutive_failures, 3, "{down:?}");
    assert!(down.last_error.contains("connect"), "{down:?}");
    assert!(
        took < Duration::from_secs(2),
        "confirming took {took:?}, expected about 100 ms"
    );

    // Already unhealthy: nothing to confirm, no burst.
    let again = report(&mut client, "app-1", "connect refused")
        .await
        .expect("report");
    assert!(!again, "an unhealthy target needs no burst");
    server.stop().await;
}

// === (b) an unconfirmed report changes nothing ===

#[tokio::test]
async fn unconfirmed_report_changes_nothing() {
    let backend = FakeBackend::start("app-1").await;
    let (server, mut client, mut watch) = healthy_checker("app-1", &backend, ProbeKind::Http).await;
    let before = get(&mut client, "app-1").await;
    let hits = backend.health_hits();

    let accepted = report(&mut client, "app-1", "502 from upstream")
        .await
        .expect("report");
    assert!(accepted, "the report schedules a re-probe");
    // The re-probe happened (and, succeeding, ended the burst at once) ...
    eventually("the re-probe to reach the backend", DEADLINE, || {
        std::future::ready((backend.health_hits() > hits).then_some(()))
    })
    .await;
    // ... and published nothing.
    watch.expect_nothing(QUIET).await;

    let after = get(&mut client, "app-1").await;
    assert_eq!(state(&after), HealthState::Healthy, "{after:?}");
    assert_eq!(after.consecutive_failures, 0, "{after:?}");
    assert!(
        after.consecutive_successes > before.consecutive_successes,
        "the re-probe was counted: {before:?} -> {after:?}"
    );
    assert_eq!(after.last_change_unix_ms, before.last_change_unix_ms);
    assert_eq!(
        backend.health_hits(),
        hits + 1,
        "a success ends the burst after one probe"
    );
    server.stop().await;
    backend.stop().await;
}

// === (c) rate limit ===

#[tokio::test]
async fn second_report_in_quick_succession_is_rate_limited() {
    let backend = FakeBackend::start("app-1").await;
    let (server, mut client, mut watch) = healthy_checker("app-1", &backend, ProbeKind::Http).await;
    let hits = backend.health_hits();

    assert!(
        report(&mut client, "app-1", "first")
            .await
            .expect("first report"),
        "the first report schedules a burst"
    );
    eventually("the re-probe to reach the backend", DEADLINE, || {
        std::future::ready((backend.health_hits() > hits).then_some(()))
    })
    .await;
    // The burst is over, but the window (the 30 s interval) is not.
    for n in 0..3 {
        let accepted = report(&mut client, "app-1", "again").await.expect("report");
        assert!(
            !accepted,
            "report {n} after the first should be rate-limited"
        );
    }
    watch.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(
        backend.health_hits(),
        hits + 1,
        "no probe for limited reports"
    );
    server.stop().await;
    backend.stop().await;
}

// === (d) unknown name ===

#[tokio::test]
async fn report_of_an_unknown_name_is_not_found() {
    let backend = FakeBackend::start("app-1").await;
    let server = Server::start(vec![target("app-1", backend.url(), ProbeKind::Tcp)]).await;
    let mut client = server.client().await;
    let status = report(&mut client, "nobody", "connect refused")
        .await
        .expect_err("unknown name");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("nobody"), "{status:?}");

    // Oversized fields are cut, not refused.
    let long = "x".repeat(10_000);
    let status = report(&mut client, &long, &long)
        .await
        .expect_err("unknown name");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().len() < 1_000, "{}", status.message().len());
    server.stop().await;
    backend.stop().await;
}
