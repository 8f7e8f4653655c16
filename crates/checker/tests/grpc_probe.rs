//! gRPC health probes against a real `grpc.health.v1` server (tonic-health
//! on a loopback port): SERVING is healthy, anything else is a failure
//! whose status the checker's API and `tetherctl health --json` show, and
//! probes of one target share one connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{DEADLINE, Server};
use tether_checker::probe::Prober;
use tether_core::{HealthState, ProbeKind, ProbeOutcome, Target, TargetStatus};
use tether_proto::pb;
use tether_testkit::{eventually, run_to_end};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(2);

fn target(name: &str, addr: SocketAddr, service: &str) -> Target {
    let mut t = common::target(
        name,
        format!("http://{addr}"),
        ProbeKind::Grpc,
        INTERVAL,
        TIMEOUT,
        1,
    );
    t.probe.path = service.to_owned();
    t
}

/// A tonic server with the standard health service on a loopback port.
struct GrpcBackend {
    addr: SocketAddr,
    reporter: HealthReporter,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcBackend {
    async fn start() -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let incoming = TcpListenerStream::new(listener).map(move |conn| {
            counter.fetch_add(1, Ordering::Relaxed);
            conn
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        GrpcBackend {
            addr,
            reporter,
            accepted,
            stop: Some(stop),
            task,
        }
    }

    async fn set(&self, service: &str, status: ServingStatus) {
        self.reporter.set_service_status(service, status).await;
    }

    /// Stops the server and closes its connections.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn get(server: &Server, name: &str) -> TargetStatus {
    let reply = server
        .client()
        .await
        .get(pb::GetRequest {
            name: name.to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    TargetStatus::try_from(reply.target.expect("a record")).expect("valid record")
}

/// Waits until the checker holds `name` in `state`, and returns its record.
async fn wait_state(server: &Server, name: &str, state: HealthState) -> TargetStatus {
    eventually(&format!("{name} {state:?}"), DEADLINE, || async {
        let status = get(server, name).await;
        (status.state == state).then_some(status)
    })
    .await
}

#[tokio::test]
async fn serving_is_healthy_and_not_serving_is_a_failure_with_its_status() {
    let backend = GrpcBackend::start().await;
    backend.set("app.v1.Api", ServingStatus::Serving).await;
    let server = Server::start(vec![
        target("api", backend.addr, "app.v1.Api"),
        target("whole", backend.addr, ""),
    ])
    .await;
    let up = wait_state(&server, "api", HealthState::Healthy).await;
    assert_eq!(up.probe_kind, ProbeKind::Grpc);
    assert_eq!(up.last_error, None);
    wait_state(&server, "whole", HealthState::Healthy).await;

    backend.set("app.v1.Api", ServingStatus::NotServing).await;
    let down = wait_state(&server, "api", HealthState::Unhealthy).await;
    assert_eq!(down.last_error.as_deref(), Some("status NOT_SERVING"));
    // The other service on the same server is still served.
    assert_eq!(get(&server, "whole").await.state, HealthState::Healthy);

    // tetherctl shows the same record, status included.
    let url = format!("http://{}", server.addr);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_to_end(
            "tetherctl",
            &["--checker", &url, "health", "api", "--json"],
            &[],
        )
    })
    .await
    .expect("tetherctl runner");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"probe_kind\": \"grpc\""), "{out}");
    assert!(
        out.contains("\"last_error\": \"status NOT_SERVING\""),
        "{out}"
    );

    backend.set("app.v1.Api", ServingStatus::Serving).await;
    let back = wait_state(&server, "api", HealthState::Healthy).await;
    assert_eq!(back.last_error, None);
    server.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_service_the_server_does_not_know_is_a_failure_with_the_grpc_status() {
    let backend = GrpcBackend::start().await;
    let server = Server::start(vec![target("nope", backend.addr, "no.such.Service")]).await;
    let down = wait_state(&server, "nope", HealthState::Unhealthy).await;
    let err = down.last_error.expect("a reason");
    assert!(err.starts_with("grpc-status 5 NOT_FOUND"), "{err}");
    server.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_server_that_goes_away_is_unhealthy() {
    let backend = GrpcBackend::start().await;
    let addr = backend.addr;
    let server = Server::start(vec![target("api", addr, "")]).await;
    wait_state(&server, "api", HealthState::Healthy).await;
    backend.stop().await;
    let down = wait_state(&server, "api", HealthState::Unhealthy).await;
    let err = down.last_error.expect("a reason");
    assert!(err.starts_with("connect: "), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn grpc_probes_share_one_connection() {
    let backend = GrpcBackend::start().await;
    let mut prober = Prober::new(&target("api", backend.addr, ""));
    for _ in 0..5 {
        let r = prober.probe().await;
        assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
    }
    assert_eq!(backend.accepted.load(Ordering::Relaxed), 1);
    backend.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    // Accepts and then says nothing: not even the HTTP/2 preface's answer.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut t = target("mute", addr, "");
    t.probe.timeout = Duration::from_millis(200);
    let r = Prober::new(&t).probe().await;
    assert_eq!(r.error.as_deref(), Some("timed out after 200ms"), "{r:?}");
    hold.abort();
}
