//! The checker over real sockets: probes against fake backends, the hub's
//! rise/fall and versions, and the gRPC API (Watch, List, Get,
//! grpc.health.v1, shutdown) served by `run_on` on a loopback port.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{DEADLINE, Server, WatchRx, next_update, open_watch, recv};
use tether_checker::Checker;
use tether_checker::probe::Prober;
use tether_core::{
    HealthState, HealthUpdate, ProbeKind, ProbeOutcome, Target, TargetStatus, UpdateKind,
};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeBackend, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Probe interval of every target here.
const INTERVAL: Duration = Duration::from_millis(100);
/// Timeout of the probe tests, where the timeout itself is under test.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Timeout of the state tests: refused and 503 fail at once anyway, and a
/// longer bound keeps a starved scheduler from faking a failure.
const STATE_TIMEOUT: Duration = Duration::from_secs(1);

// === helpers ===

fn target(name: &str, url: String, kind: ProbeKind, timeout: Duration) -> Target {
    common::target(name, url, kind, INTERVAL, timeout, 2)
}

fn with_path(mut t: Target, path: &str) -> Target {
    path.clone_into(&mut t.probe.path);
    t
}

/// The url of a loopback port nothing listens on any more.
async fn refused_url() -> String {
    let backend = FakeBackend::start("gone").await;
    let url = backend.url();
    backend.stop().await;
    url
}

/// Accepts connections and holds them open without ever answering.
async fn silent_listener() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// Answers every connection with `HTTP/1.1 {status}` and reports the request
/// head it read.
async fn status_listener(status: u16) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let reply = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// Where a [`Tracker`] reads its updates from.
enum Source {
    Hub(broadcast::Receiver<Arc<HealthUpdate>>),
    /// A gRPC Watch stream, pumped into a channel by a task.
    Grpc(WatchRx),
}

impl Source {
    async fn next(&mut self, what: &str) -> HealthUpdate {
        match self {
            Source::Hub(rx) => {
                eventually(what, DEADLINE, || {
                    let got = match rx.try_recv() {
                        Ok(update) => Some((*update).clone()),
                        Err(broadcast::error::TryRecvError::Empty) => None,
                        Err(e) => panic!("hub subscription broke: {e}"),
                    };
                    std::future::ready(got)
                })
                .await
            }
            Source::Grpc(rx) => next_update(what, rx).await,
        }
    }
}

/// Applies a stream of updates and checks the version contract: the stream
/// opens with a snapshot and every change is exactly one version later.
struct Tracker {
    source: Source,
    snapshot_version: u64,
    version: u64,
    records: BTreeMap<String, TargetStatus>,
    /// Every change seen: (version, name, new state).
    changes: Vec<(u64, String, HealthState)>,
}

impl Tracker {
    async fn new(mut source: Source, first: Option<HealthUpdate>) -> Tracker {
        let first = match first {
            Some(u) => u,
            None => source.next("the first watch message").await,
        };
        let UpdateKind::Snapshot { targets, .. } = first.kind else {
            panic!("the first message must be a snapshot, got {first:?}");
        };
        Tracker {
            source,
            snapshot_version: first.version,
            version: first.version,
            records: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
            changes: Vec::new(),
        }
    }

    fn state(&self, name: &str) -> HealthState {
        self.records
            .get(name)
            .unwrap_or_else(|| panic!("no target {name:?} in the stream"))
            .state
    }

    /// Applies updates until `name` is in `state`; returns its record.
    async fn wait_for(&mut self, name: &str, state: HealthState) -> TargetStatus {
        let what = format!("{name} to become {state}");
        while self.state(name) != state {
            let update = self.source.next(&what).await;
            let UpdateKind::Change(status) = update.kind else {
                panic!("unexpected snapshot after the first message: {update:?}");
            };
            assert_eq!(
                update.version,
                self.version + 1,
                "versions grow by one per change: {status:?}"
            );
            self.version = update.version;
            let previous = self.records.insert(status.name.clone(), status.clone());
            let previous = previous.unwrap_or_else(|| panic!("change for unknown {status:?}"));
            assert_ne!(previous.state, status.state, "a change changes the state");
            self.changes
                .push((update.version, status.name.clone(), status.state));
        }
        self.records[name].clone()
    }
}

/// Opens a Watch stream and pumps it into a [`Tracker`].
async fn watch(client: &mut HealthServiceClient<Channel>) -> Tracker {
    Tracker::new(Source::Grpc(open_watch(client).await), None).await
}

async fn list_states(client: &mut HealthServiceClient<Channel>) -> (u64, Vec<TargetStatus>) {
    let resp = client
        .list(pb::ListRequest {})
        .await
        .expect("list")
        .into_inner();
    let targets = resp
        .targets
        .into_iter()
        .map(|t| TargetStatus::try_from(t).expect("valid record"))
        .collect();
    (resp.version, targets)
}

/// Polls List until every named target is in its state.
async fn wait_listed(client: &HealthServiceClient<Channel>, want: &[(&str, HealthState)]) {
    let what = format!("List to show {want:?}");
    eventually(&what, DEADLINE, || {
        let mut client = client.clone();
        async move {
            let (_, targets) = list_states(&mut client).await;
            want.iter()
                .all(|(name, state)| targets.iter().any(|t| t.name == *name && t.state == *state))
                .then_some(())
        }
    })
    .await;
}

async fn health_status(
    client: &HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let mut client = client.clone();
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    Ok(client.check(request).await?.into_inner().status())
}

/// Polls grpc.health.v1 Check until `service` reports `want`.
async fn wait_health(client: &HealthClient<Channel>, service: &str, want: ServingStatus) {
    let what = format!("grpc.health.v1 {service:?} to be {want:?}");
    eventually(&what, DEADLINE, || async move {
        (health_status(client, service).await.ok() == Some(want)).then_some(())
    })
    .await;
}

// === 1. tcp probe ===

#[tokio::test]
async fn tcp_probe_succeeds_when_up_and_fails_when_refused() {
    let backend = FakeBackend::start("app-1").await;
    let t = target("app-1", backend.url(), ProbeKind::Tcp, PROBE_TIMEOUT);
    let mut prober = Prober::new(&t);

    let up = prober.probe().await;
    assert_eq!(up.outcome, ProbeOutcome::Success, "{up:?}");
    assert_eq!(up.error, None);
    assert!(up.latency < PROBE_TIMEOUT, "{up:?}");
    assert_eq!(backend.health_hits(), 0, "a tcp probe sends no request");

    backend.stop().await;
    let down = prober.probe().await;
    assert!(down.outcome.is_failure(), "{down:?}");
    let err = down.error.expect("a failure says why");
    assert!(
        err.contains("connect"),
        "error {err:?} should mention connect"
    );
}

#[tokio::test]
async fn tcp_probe_only_needs_the_connect() {
    // A listener that never answers still accepts: that is all tcp checks.
    let (addr, _held) = silent_listener().await;
    let t = target(
        "quiet",
        format!("http://{addr}"),
        ProbeKind::Tcp,
        PROBE_TIMEOUT,
    );
    let r = Prober::new(&t).probe().await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
}

// === 2. http probe ===

#[tokio::test]
async fn http_probe_follows_the_health_status() {
    let backend = FakeBackend::start("app-1").await;
    let t = target("app-1", backend.url(), ProbeKind::Http, PROBE_TIMEOUT);
    let mut prober = Prober::new(&t);

    let ok = prober.probe().await;
    assert_eq!(ok.outcome, ProbeOutcome::Success, "{ok:?}");
    assert_eq!(ok.error, None);
    assert_eq!(backend.health_hits(), 1);

    backend.set_healthy(false);
    let failing = prober.probe().await;
    assert!(failing.outcome.is_failure(), "{failing:?}");
    assert_eq!(failing.error.as_deref(), Some("status 503"));
    assert_eq!(backend.health_hits(), 2);

    backend.set_healthy(true);
    assert_eq!(prober.probe().await.outcome, ProbeOutcome::Success);
    backend.stop().await;
}

#[tokio::test]
async fn http_probe_sends_get_path_with_the_target_host() {
    let backend = FakeBackend::start("app-1").await;
    let t = with_path(
        target("app-1", backend.url(), ProbeKind::Http, PROBE_TIMEOUT),
        "/ready?deep=1",
    );
    let r = Prober::new(&t).probe().await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].uri, "/ready?deep=1");
    assert_eq!(
        reqs[0].header("host"),
        Some(backend.addr().to_string().as_str())
    );
    backend.stop().await;
}

#[tokio::test]
async fn http_probe_accepts_200_to_399_only() {
    for (status, healthy) in [
        (200, true),
        (204, true),
        (302, true),
        (399, true),
        (400, false),
        (404, false),
        (500, false),
    ] {
        let (addr, mut heads) = status_listener(status).await;
        let t = with_path(
            target(
                "odd",
                format!("http://{addr}"),
                ProbeKind::Http,
                PROBE_TIMEOUT,
            ),
            "/healthz",
        );
        let r = Prober::new(&t).probe().await;
        let head = recv("the probe's request head", &mut heads)
            .await
            .expect("a request");
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head:?}");
        if healthy {
            assert_eq!(r.outcome, ProbeOutcome::Success, "status {status}: {r:?}");
            assert_eq!(r.error, None);
        } else {
            assert!(r.outcome.is_failure(), "status {status}: {r:?}");
            assert_eq!(r.error, Some(format!("status {status}")));
        }
    }
}

#[tokio::test]
async fn http_probe_times_out_on_a_silent_target() {
    let (addr, _held) = silent_listener().await;
    let t = target(
        "silent",
        format!("http://{addr}"),
        ProbeKind::Http,
        PROBE_TIMEOUT,
    );
    // The probe gives up on its own (the target never answers); the outer
    // bound only keeps a broken timeout from hanging the test.
    let r = tokio::time::timeout(DEADLINE, Prober::new(&t).probe())
        .await
        .expect("the probe gave up by its own timeout");
    assert!(r.outcome.is_failure(), "{r:?}");
    assert!(r.latency >= PROBE_TIMEOUT / 2, "gave up too early: {r:?}");
    let err = r.error.expect("a failure says why");
    assert!(
        err.contains("timed out"),
        "error {err:?} should say timed out"
    );
}

#[tokio::test]
async fn http_probe_refused_mentions_connect() {
    let t = target("gone", refused_url().await, ProbeKind::Http, PROBE_TIMEOUT);
    let r = Prober::new(&t).probe().await;
    assert!(r.outcome.is_failure(), "{r:?}");
    let err = r.error.expect("a failure says why");
    assert!(
        err.contains("connect"),
        "error {err:?} should mention connect"
    );
}

// === 3. rise and fall through the hub ===

#[tokio::test]
async fn hub_applies_rise_and_fall_with_consecutive_versions() {
    let backend = FakeBackend::start("app-1").await;
    let checker = Checker::start(vec![target(
        "app-1",
        backend.url(),
        ProbeKind::Http,
        STATE_TIMEOUT,
    )]);
    let hub = checker.handle();
    let sub = hub.subscribe().await.expect("subscribe");
    let mut tracker = Tracker::new(
        Source::Hub(sub.changes),
        Some(std::sync::Arc::unwrap_or_clone(sub.snapshot)),
    )
    .await;

    // The first result sets the state directly.
    let up = tracker.wait_for("app-1", HealthState::Healthy).await;
    assert_eq!(up.url, backend.url());
    assert_eq!(up.probe_kind, ProbeKind::Http);
    assert_eq!(up.last_error, None);
    assert!(
        up.last_probe_ms.is_some() && up.last_latency.is_some(),
        "{up:?}"
    );
    assert!(up.last_change_ms.is_some(), "{up:?}");

    backend.set_healthy(false);
    let down = tracker.wait_for("app-1", HealthState::Unhealthy).await;
    // The change is published on the fall-th failure in a row.
    assert_eq!(down.consecutive_failures, 2, "{down:?}");
    assert_eq!(down.consecutive_successes, 0, "{down:?}");
    assert_eq!(down.last_error.as_deref(), Some("status 503"));
    assert!(down.last_change_ms >= up.last_change_ms, "{down:?}");

    backend.set_healthy(true);
    let back = tracker.wait_for("app-1", HealthState::Healthy).await;
    // ... and back on the rise-th success in a row.
    assert_eq!(back.consecutive_successes, 2, "{back:?}");
    assert_eq!(back.consecutive_failures, 0, "{back:?}");
    assert_eq!(back.last_error, None);

    // Unknown -> healthy -> unhealthy -> healthy, one version each; the
    // snapshot may already have seen the first probe.
    let base = tracker.snapshot_version;
    let mut states = vec![
        HealthState::Healthy,
        HealthState::Unhealthy,
        HealthState::Healthy,
    ];
    if base > 0 {
        states.remove(0);
    }
    let expected: Vec<_> = (base + 1..)
        .zip(states)
        .map(|(v, s)| (v, "app-1".to_owned(), s))
        .collect();
    assert_eq!(tracker.changes, expected);

    // Queries agree with the stream.
    let (version, listed) = hub.list().await.expect("list");
    assert_eq!(version, tracker.version);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, HealthState::Healthy);
    let (version, got) = hub.get("app-1").await.expect("get").expect("known");
    assert_eq!(version, tracker.version);
    assert_eq!(got.state, HealthState::Healthy);
    assert!(hub.get("nope").await.expect("get").is_none());
    backend.stop().await;
}

#[tokio::test]
async fn hub_first_failure_sets_unhealthy_directly() {
    let checker = Checker::start(vec![target(
        "gone",
        refused_url().await,
        ProbeKind::Tcp,
        STATE_TIMEOUT,
    )]);
    let sub = checker.handle().subscribe().await.expect("subscribe");
    let mut tracker = Tracker::new(
        Source::Hub(sub.changes),
        Some(std::sync::Arc::unwrap_or_clone(sub.snapshot)),
    )
    .await;
    let down = tracker.wait_for("gone", HealthState::Unhealthy).await;
    if tracker.snapshot_version == 0 {
        assert_eq!(
            tracker.changes,
            [(1, "gone".to_owned(), HealthState::Unhealthy)]
        );
    }
    assert!(down.consecutive_failures >= 1, "{down:?}");
    let err = down.last_error.expect("the reason is kept");
    assert!(err.contains("connect"), "{err:?}");
}

// === 4. gRPC Watch ===

#[tokio::test]
async fn grpc_watch_streams_snapshot_then_ordered_changes_to_every_subscriber() {
    let a = FakeBackend::start("a").await;
    let b = FakeBackend::start("b").await;
    let b_addr = b.addr();
    let server = Server::start(vec![
        target("a", a.url(), ProbeKind::Http, STATE_TIMEOUT),
        target("b", b.url(), ProbeKind::Tcp, STATE_TIMEOUT),
    ])
    .await;
    let mut client = server.client().await;
    wait_listed(
        &client,
        &[("a", HealthState::Healthy), ("b", HealthState::Healthy)],
    )
    .await;

    let mut first = watch(&mut client).await;
    let mut second = watch(&mut server.client().await).await;
    assert_eq!(first.state("a"), HealthState::Healthy);
    assert_eq!(first.records["b"].url, format!("http://{b_addr}"));
    assert_eq!(first.records.len(), 2);

    a.set_healthy(false);
    let a_down = first.wait_for("a", HealthState::Unhealthy).await;
    assert_eq!(a_down.last_error.as_deref(), Some("status 503"));
    a.set_healthy(true);
    first.wait_for("a", HealthState::Healthy).await;
    b.stop().await;
    let b_down = first.wait_for("b", HealthState::Unhealthy).await;
    assert!(
        b_down
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connect"),
        "{b_down:?}"
    );

    let base = first.snapshot_version;
    assert_eq!(
        first.changes,
        [
            (base + 1, "a".to_owned(), HealthState::Unhealthy),
            (base + 2, "a".to_owned(), HealthState::Healthy),
            (base + 3, "b".to_owned(), HealthState::Unhealthy),
        ]
    );

    // The second subscriber saw the same changes, in the same order.
    second.wait_for("b", HealthState::Unhealthy).await;
    let from = first.snapshot_version.max(second.snapshot_version);
    let after = |t: &Tracker| -> Vec<_> {
        t.changes
            .iter()
            .filter(|(v, ..)| *v > from)
            .cloned()
            .collect()
    };
    assert_eq!(after(&first), after(&second));
    assert_eq!(second.version, first.version);

    // b comes back on its old port.
    let b = FakeBackend::start_on("b", b_addr).await.expect("restart b");
    first.wait_for("b", HealthState::Healthy).await;
    assert_eq!(first.version, base + 4);

    server.stop().await;
    a.stop().await;
    b.stop().await;
}

// === 5. List and Get ===

#[tokio::test]
async fn grpc_list_and_get() {
    let a = FakeBackend::start("a").await;
    let gone = refused_url().await;
    let server = Server::start(vec![
        target("a", a.url(), ProbeKind::Http, STATE_TIMEOUT),
        target("gone", gone.clone(), ProbeKind::Tcp, STATE_TIMEOUT),
    ])
    .await;
    let mut client = server.client().await;
    wait_listed(
        &client,
        &[
            ("a", HealthState::Healthy),
            ("gone", HealthState::Unhealthy),
        ],
    )
    .await;

    let (version, listed) = list_states(&mut client).await;
    assert!(version >= 2, "two changes happened, got v{version}");
    let names: Vec<_> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "gone"], "every target, in pool order");
    assert_eq!(listed[0].url, a.url());
    assert_eq!(listed[0].probe_kind, ProbeKind::Http);
    assert_eq!(listed[1].url, gone);
    assert_eq!(listed[1].probe_kind, ProbeKind::Tcp);
    assert!(listed[1].last_error.is_some(), "{:?}", listed[1]);

    let got = client
        .get(pb::GetRequest { name: "a".into() })
        .await
        .expect("get a")
        .into_inner();
    assert_eq!(got.version, version, "nothing changed since List");
    let record = TargetStatus::try_from(got.target.expect("a record")).expect("valid");
    assert_eq!(record.name, "a");
    assert_eq!(record.url, a.url());
    assert_eq!(record.state, HealthState::Healthy);
    assert_eq!(record.probe_kind, ProbeKind::Http);
    assert!(record.last_probe_ms.is_some() && record.last_latency.is_some());
    assert!(record.last_change_ms.is_some());
    assert_eq!(record.consecutive_failures, 0);
    assert!(record.consecutive_successes >= 1);

    let status = client
        .get(pb::GetRequest {
            name: "nobody".into(),
        })
        .await
        .expect_err("unknown name");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains("nobody"), "{status:?}");

    server.stop().await;
    a.stop().await;
}

// === 6. grpc.health.v1 ===

#[tokio::test]
async fn grpc_health_v1_reports_checker_and_targets() {
    let a = FakeBackend::start("a").await;
    let server = Server::start(vec![target("a", a.url(), ProbeKind::Http, STATE_TIMEOUT)]).await;
    let health = HealthClient::new(server.channel().await);
    // Serving once the first probe round is done.
    wait_health(&health, "", ServingStatus::Serving).await;
    wait_health(&health, "a", ServingStatus::Serving).await;
    a.set_healthy(false);
    wait_health(&health, "a", ServingStatus::NotServing).await;
    a.set_healthy(true);
    wait_health(&health, "a", ServingStatus::Serving).await;
    assert_eq!(
        health_status(&health, "").await.expect("check \"\""),
        ServingStatus::Serving
    );

    let unknown = health_status(&health, "nobody")
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    server.stop().await;
    a.stop().await;
}

// === 7. shutdown ===

#[tokio::test]
async fn run_on_returns_promptly_with_a_watch_open() {
    let a = FakeBackend::start("a").await;
    let server = Server::start(vec![target("a", a.url(), ProbeKind::Http, STATE_TIMEOUT)]).await;
    let mut client = server.client().await;
    let mut stream = watch(&mut client).await;
    assert_eq!(stream.records.len(), 1);

    // `stop` waits (bounded by DEADLINE) for run_on to return Ok: an open
    // Watch stream must not hold the shutdown up.
    server.stop().await;

    // The open stream ends, with an error or cleanly, once the server is gone.
    let Source::Grpc(rx) = &mut stream.source else {
        unreachable!("a watch tracker reads gRPC");
    };
    while let Some(item) = recv("the watch stream to end", rx).await {
        if let Err(status) = item {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        }
    }
    a.stop().await;
}

/// grpcurl and other generic clients discover the API through reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_health_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let a = FakeBackend::start("a").await;
    let server = Server::start(vec![target("a", a.url(), ProbeKind::Tcp, STATE_TIMEOUT)]).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"tether.health.v1.HealthService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    server.stop().await;
    a.stop().await;
}
