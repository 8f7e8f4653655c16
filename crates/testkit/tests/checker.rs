//! FakeChecker through the generated gRPC client.

use std::time::Duration;

use tether_core::{HealthState, HealthUpdate, UpdateKind};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeChecker, eventually, status};
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(5);

async fn client(checker: &FakeChecker) -> HealthServiceClient<Channel> {
    HealthServiceClient::connect(checker.url())
        .await
        .expect("connect to fake checker")
}

fn names(targets: &[pb::TargetHealth]) -> Vec<&str> {
    targets.iter().map(|t| t.name.as_str()).collect()
}

#[tokio::test]
async fn watch_sends_snapshot_then_forwarded_updates() {
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        3,
        vec![
            status("a", "http://127.0.0.1:1", HealthState::Healthy),
            status("b", "http://127.0.0.1:2", HealthState::Unhealthy),
        ],
    );
    let mut client = client(&checker).await;
    let mut stream = client
        .watch(pb::WatchRequest {})
        .await
        .expect("watch")
        .into_inner();

    let first = stream.message().await.expect("first").expect("some");
    assert_eq!(first.version, 3);
    match first.update {
        Some(pb::watch_response::Update::Snapshot(s)) => assert_eq!(names(&s.targets), ["a", "b"]),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    assert_eq!(checker.watch_calls(), 1);
    assert_eq!(checker.open_streams(), 1);

    checker.send(HealthUpdate {
        version: 4,
        kind: UpdateKind::Change(status("a", "http://127.0.0.1:1", HealthState::Unhealthy)),
    });
    // A gap goes out as it is.
    checker.send(HealthUpdate {
        version: 9,
        kind: UpdateKind::Change(status("b", "http://127.0.0.1:2", HealthState::Healthy)),
    });
    let change = stream.message().await.expect("change").expect("some");
    assert_eq!(change.version, 4);
    match change.update {
        Some(pb::watch_response::Update::Change(t)) => {
            assert_eq!(t.name, "a");
            assert_eq!(t.state, i32::from(pb::HealthState::Unhealthy));
            assert_eq!(t.probe_kind, i32::from(pb::ProbeKind::Tcp));
        }
        other => panic!("expected a change, got {other:?}"),
    }
    let gap = stream.message().await.expect("gap").expect("some");
    assert_eq!(gap.version, 9);

    checker.break_streams();
    let err = stream
        .message()
        .await
        .expect_err("stream must end with an error");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(checker.open_streams(), 0);
    checker.stop().await;
}

#[tokio::test]
async fn closed_streams_are_forgotten() {
    let checker = FakeChecker::start().await;
    let mut client = client(&checker).await;
    let mut stream = client
        .watch(pb::WatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    stream.message().await.expect("snapshot");
    assert_eq!(checker.open_streams(), 1);
    drop(stream);
    eventually("the dropped stream is forgotten", DEADLINE, || async {
        (checker.open_streams() == 0).then_some(())
    })
    .await;
    checker.stop().await;
}

#[tokio::test]
async fn list_and_get() {
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        7,
        vec![status("a", "http://127.0.0.1:1", HealthState::Healthy)],
    );
    let mut client = client(&checker).await;

    let list = client
        .list(pb::ListRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.version, 7);
    assert_eq!(names(&list.targets), ["a"]);

    let got = client
        .get(pb::GetRequest { name: "a".into() })
        .await
        .expect("get a")
        .into_inner();
    assert_eq!(got.version, 7);
    assert_eq!(
        got.target.map(|t| t.url).as_deref(),
        Some("http://127.0.0.1:1")
    );

    let err = client
        .get(pb::GetRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("unknown name");
    assert_eq!(err.code(), Code::NotFound);
    checker.stop().await;
}

#[tokio::test]
async fn refused_watch_fails_the_call() {
    let checker = FakeChecker::start().await;
    checker.refuse_watch(Some(tonic::Status::unavailable("not now")));
    let mut client = client(&checker).await;
    let err = client
        .watch(pb::WatchRequest {})
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(checker.watch_calls(), 1);
    assert_eq!(checker.open_streams(), 0);
    checker.stop().await;
}

#[tokio::test]
async fn stop_ends_open_streams_and_refuses_connects() {
    let checker = FakeChecker::start().await;
    let addr = checker.addr();
    let mut client = client(&checker).await;
    let mut stream = client
        .watch(pb::WatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    stream.message().await.expect("snapshot");

    tokio::time::timeout(DEADLINE, checker.stop())
        .await
        .expect("stop must not hang on an open stream");
    assert!(
        stream.message().await.is_err(),
        "stream must end with an error"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // And a new checker can take the port.
    let again = FakeChecker::start_on(addr).await.expect("rebind");
    let mut client = HealthServiceClient::connect(again.url())
        .await
        .expect("connect");
    client.list(pb::ListRequest {}).await.expect("list");
    again.stop().await;
}
