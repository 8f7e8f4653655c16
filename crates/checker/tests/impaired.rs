//! The impaired checker through real sockets and a real `tether-checker`
//! process: when most members go silent at once the checker suspects
//! itself (Watch, `/readyz`, `grpc.health.v1` `""`, metrics, log,
//! `tetherctl health`) and publishes no verdict caused by silence; when
//! they answer again it leaves the state without a flap. Answers (HTTP
//! 503) are verdicts as ever, one member's or every member's.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DEADLINE, Server, WatchRx, next_update, open_watch, target};
use tether_core::{HealthState, HealthUpdate, ProbeKind, UpdateKind};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get, run_to_end};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const START: Duration = Duration::from_secs(20);
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(300);
/// Longer than any probe's timeout: a member that takes this long is
/// silent to the checker. (The fake backend's latency applies to any path
/// but its health path, so the first test probes `/probe`.)
const HANG: Duration = Duration::from_secs(30);

/// One `/metrics` sample's value.
async fn metric(admin: SocketAddr, sample: &str) -> Option<f64> {
    let m = get(admin, "/metrics", &[]).await.ok()?;
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

async fn readyz(admin: SocketAddr) -> Option<u16> {
    get(admin, "/readyz", &[]).await.ok().map(|r| r.status)
}

async fn grpc_self_status(grpc: SocketAddr) -> Option<ServingStatus> {
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let reply = HealthClient::new(channel).check(request).await.ok()?;
    Some(reply.into_inner().status())
}

/// Every update that arrived so far, without waiting.
fn drain(rx: &mut WatchRx) -> Vec<HealthUpdate> {
    let mut out = Vec::new();
    while let Ok(item) = rx.try_recv() {
        out.push(item.expect("watch stream failed"));
    }
    out
}

/// Members' changes among `updates`: there must be none.
fn member_changes(updates: &[HealthUpdate]) -> Vec<&HealthUpdate> {
    updates
        .iter()
        .filter(|u| !matches!(u.kind, UpdateKind::Checker(_)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_from_every_member_impairs_the_checker_and_costs_no_verdict() {
    let names = ["app-1", "app-2", "app-3", "app-4"];
    let mut backends = Vec::new();
    let mut toml = String::from(
        "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nkind = \"http\"\npath = \"/probe\"\ninterval = \"200ms\"\ntimeout = \"300ms\"\n\
         rise = 1\nfall = 2\n",
    );
    for name in names {
        let b = FakeBackend::start(name).await;
        toml.push_str(&format!(
            "[[targets]]\nurl = \"{}\"\nname = \"{name}\"\n",
            b.url()
        ));
        backends.push(b);
    }
    let config = TempConfig::new(&toml);
    let proc = Proc::spawn("tether-checker", &["--config", config.path_str()], &[]);
    let grpc = proc.wait_listening("grpc listening", START).await;
    let admin = proc.wait_listening("admin listening", START).await;
    eventually("/readyz 200 after the first round", DEADLINE, || async {
        (readyz(admin).await == Some(200)).then_some(())
    })
    .await;
    let mut client = HealthServiceClient::new(
        Endpoint::from_shared(format!("http://{grpc}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect"),
    );
    let mut watch = open_watch(&mut client).await;
    let first = next_update("the snapshot", &mut watch).await;
    let UpdateKind::Snapshot { targets, checker } = first.kind else {
        panic!("a watch starts with a snapshot: {first:?}");
    };
    assert!(!checker.is_impaired());
    assert!(
        targets.iter().all(|t| t.state == HealthState::Healthy),
        "{targets:?}"
    );
    assert_eq!(metric(admin, "tether_checker_impaired").await, Some(0.0));

    // The checker is cut off: every member goes silent at once.
    let cut = std::time::Instant::now();
    for b in &backends {
        b.set_latency(HANG);
    }
    let update = next_update("the checker's impairment", &mut watch).await;
    let took = cut.elapsed();
    let UpdateKind::Checker(state) = &update.kind else {
        panic!("expected the checker's own state before any verdict, got {update:?}");
    };
    let impaired = state.impaired.as_ref().expect("impaired");
    assert!(
        impaired.reason.contains("of 4 members silent"),
        "{impaired:?}"
    );
    // About one interval plus a timeout; generous for a shared machine.
    assert!(
        took < INTERVAL + TIMEOUT + Duration::from_secs(3),
        "{took:?}"
    );
    proc.wait_for_line("checker impaired", DEADLINE).await;
    eventually("/readyz 503 while impaired", DEADLINE, || async {
        (readyz(admin).await == Some(503)).then_some(())
    })
    .await;
    eventually("grpc health \"\" NOT_SERVING", DEADLINE, || async {
        (grpc_self_status(grpc).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    assert_eq!(metric(admin, "tether_checker_impaired").await, Some(1.0));
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let url = format!("http://{grpc}");
        run_to_end("tetherctl", &["--checker", &url, "health"], &[])
    })
    .await
    .expect("tetherctl ran");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.starts_with("checker impaired since")),
        "{out}"
    );

    // Well past `fall` silent probes of every member: still no verdict.
    for name in names {
        let sample = format!("tether_probes_total{{target=\"{name}\",result=\"failure\"}}");
        eventually("4 silent probes of every member", DEADLINE, || async {
            (metric(admin, &sample).await? >= 4.0).then_some(())
        })
        .await;
    }
    let list = client
        .list(pb::ListRequest {})
        .await
        .expect("list")
        .into_inner();
    assert!(list.checker.and_then(|c| c.impaired).is_some());
    assert!(
        list.targets
            .iter()
            .all(|t| t.state == pb::HealthState::Healthy as i32),
        "members keep their state: {:?}",
        list.targets
    );

    // The partition heals: the checker leaves the state, without a flap.
    for b in &backends {
        b.set_latency(Duration::ZERO);
    }
    let update = next_update("the checker's recovery", &mut watch).await;
    assert!(
        matches!(&update.kind, UpdateKind::Checker(s) if !s.is_impaired()),
        "{update:?}"
    );
    proc.wait_for_line("checker no longer impaired", DEADLINE)
        .await;
    eventually("/readyz 200 again", DEADLINE, || async {
        (readyz(admin).await == Some(200)).then_some(())
    })
    .await;
    eventually("grpc health \"\" SERVING again", DEADLINE, || async {
        (grpc_self_status(grpc).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    // Every member answered after the recovery; none changed.
    for name in names {
        let sample = format!("tether_probes_total{{target=\"{name}\",result=\"success\"}}");
        let before = metric(admin, &sample).await.unwrap_or(0.0);
        eventually("two fresh probes of every member", DEADLINE, || async {
            (metric(admin, &sample).await? >= before + 2.0).then_some(())
        })
        .await;
    }
    let after = drain(&mut watch);
    assert!(member_changes(&after).is_empty(), "a flap: {after:?}");
    assert_eq!(metric(admin, "tether_checker_impaired").await, Some(0.0));
    drop(proc);
    for b in backends {
        b.stop().await;
    }
}

/// A checker in-process with `n` HTTP members probed every 200 ms.
async fn pool(n: usize) -> (Server, Vec<FakeBackend>, WatchRx) {
    let mut backends = Vec::new();
    let mut targets = Vec::new();
    for i in 1..=n {
        let name = format!("app-{i}");
        let b = FakeBackend::start(&name).await;
        targets.push(target(
            &name,
            b.url(),
            ProbeKind::Http,
            INTERVAL,
            TIMEOUT,
            2,
        ));
        backends.push(b);
    }
    let server = Server::start(targets).await;
    let mut client = server.client().await;
    eventually("every member healthy", DEADLINE, || {
        let mut client = client.clone();
        async move {
            let list = client.list(pb::ListRequest {}).await.ok()?.into_inner();
            list.targets
                .iter()
                .all(|t| t.state == pb::HealthState::Healthy as i32)
                .then_some(())
        }
    })
    .await;
    let mut watch = open_watch(&mut client).await;
    next_update("the snapshot", &mut watch).await;
    (server, backends, watch)
}

#[tokio::test]
async fn one_member_answering_503_goes_unhealthy_as_ever() {
    let (server, backends, mut watch) = pool(3).await;
    backends[1].set_healthy(false);
    let update = next_update("app-2's verdict", &mut watch).await;
    match &update.kind {
        UpdateKind::Change(t) => {
            assert_eq!(
                (t.name.as_str(), t.state),
                ("app-2", HealthState::Unhealthy)
            );
        }
        other => panic!("expected app-2 unhealthy, got {other:?}"),
    }
    server.stop().await;
    for b in backends {
        b.stop().await;
    }
}

#[tokio::test]
async fn every_member_answering_503_goes_unhealthy_because_answers_are_not_silence() {
    let (server, backends, mut watch) = pool(3).await;
    for b in &backends {
        b.set_healthy(false);
    }
    let mut down = Vec::new();
    while down.len() < 3 {
        let update = next_update("every member's verdict", &mut watch).await;
        match update.kind {
            UpdateKind::Change(t) if t.state == HealthState::Unhealthy => down.push(t.name),
            other => panic!("expected only unhealthy verdicts, got {other:?}"),
        }
    }
    down.sort();
    assert_eq!(down, ["app-1", "app-2", "app-3"]);
    server.stop().await;
    for b in backends {
        b.stop().await;
    }
}
