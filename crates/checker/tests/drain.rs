//! Draining, the checker's side: `ControlService.Drain` / `Enable` over real
//! sockets, what Watch, List and Get say about it, and `tetherctl drain` /
//! `enable` against a running checker.

mod common;

use std::time::Duration;

use common::{DEADLINE, Server, WatchRx, next_update, open_watch};
use tether_core::{HealthState, ProbeKind, Target, TargetStatus, UpdateKind};
use tether_proto::pb;
use tether_proto::pb::control_service_client::ControlServiceClient;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeBackend, eventually, run_to_end};
use tonic::Code;
use tonic::transport::Channel;

/// Short, so a health change shows up quickly.
const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long "nothing is published" is watched for.
const QUIET: Duration = Duration::from_millis(500);

fn target(name: &str, url: String) -> Target {
    common::target(name, url, ProbeKind::Http, INTERVAL, TIMEOUT, 1)
}

struct Clients {
    health: HealthServiceClient<Channel>,
    control: ControlServiceClient<Channel>,
}

impl Clients {
    async fn new(server: &Server) -> Clients {
        let channel = server.channel().await;
        Clients {
            health: HealthServiceClient::new(channel.clone()),
            control: ControlServiceClient::new(channel),
        }
    }

    async fn get(&mut self, name: &str) -> TargetStatus {
        let reply = self
            .health
            .get(pb::GetRequest {
                name: name.to_owned(),
            })
            .await
            .expect("get")
            .into_inner();
        TargetStatus::try_from(reply.target.expect("a record")).expect("valid record")
    }

    async fn all_healthy(&mut self, names: &[&str]) {
        for name in names {
            eventually(&format!("{name} healthy"), DEADLINE, || {
                let mut health = self.health.clone();
                let name = (*name).to_owned();
                async move {
                    let reply = health.get(pb::GetRequest { name }).await.ok()?;
                    let state = reply.into_inner().target?.state;
                    (state == pb::HealthState::Healthy as i32).then_some(())
                }
            })
            .await;
        }
    }

    async fn drain(&mut self, name: &str) -> Result<pb::DrainResponse, tonic::Status> {
        let request = pb::DrainRequest {
            name: name.to_owned(),
        };
        Ok(self.control.drain(request).await?.into_inner())
    }

    async fn enable(&mut self, name: &str) -> Result<pb::EnableResponse, tonic::Status> {
        let request = pb::EnableRequest {
            name: name.to_owned(),
        };
        Ok(self.control.enable(request).await?.into_inner())
    }
}

/// A Watch stream pumped into a channel, checking one version per change.
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
            "{first:?}"
        );
        Watch {
            rx,
            version: first.version,
        }
    }

    async fn change(&mut self, what: &str) -> TargetStatus {
        let update = next_update(what, &mut self.rx).await;
        assert_eq!(update.version, self.version + 1, "one version per change");
        self.version = update.version;
        match update.kind {
            UpdateKind::Change(status) => status,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    /// Panics if anything arrives within [`QUIET`]: proving an absence is
    /// a duration by nature.
    async fn expect_nothing(&mut self) {
        match tokio::time::timeout(QUIET, self.rx.recv()).await {
            Err(_) => {}
            Ok(item) => panic!("expected no watch message, got {item:?}"),
        }
    }
}

#[tokio::test]
async fn drain_and_enable_are_published_and_survive_health_changes() {
    let a = FakeBackend::start("app-1").await;
    let b = FakeBackend::start("app-2").await;
    let server = Server::start(vec![target("app-1", a.url()), target("app-2", b.url())]).await;
    let mut c = Clients::new(&server).await;
    c.all_healthy(&["app-1", "app-2"]).await;
    let mut watch = Watch::open(&mut c.health).await;

    // Drain: one change, the record with `draining`, health untouched.
    let drained = c.drain("app-2").await.expect("drain");
    assert!(drained.changed);
    assert_eq!(drained.version, watch.version + 1);
    assert!(drained.target.expect("record").draining);
    let change = watch.change("app-2 draining").await;
    assert_eq!(change.name, "app-2");
    assert!(change.draining);
    assert_eq!(change.state, HealthState::Healthy);
    assert!(c.get("app-2").await.draining);
    assert!(!c.get("app-1").await.draining);
    let list = c.health.list(pb::ListRequest {}).await.expect("list");
    let list = list.into_inner();
    assert_eq!(list.version, watch.version);
    let flags: Vec<_> = list
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.draining))
        .collect();
    assert_eq!(flags, [("app-1", false), ("app-2", true)]);

    // Again: nothing changes, nothing is published.
    let again = c.drain("app-2").await.expect("drain again");
    assert!(!again.changed);
    assert_eq!(again.version, watch.version);
    watch.expect_nothing().await;

    // The probes move the state; the flag stays.
    b.set_healthy(false);
    let down = watch.change("app-2 unhealthy").await;
    assert_eq!((down.state, down.draining), (HealthState::Unhealthy, true));
    b.set_healthy(true);
    let up = watch.change("app-2 healthy again").await;
    assert_eq!((up.state, up.draining), (HealthState::Healthy, true));

    // Enable: one change back; enabling again changes nothing.
    let enabled = c.enable("app-2").await.expect("enable");
    assert!(enabled.changed);
    let change = watch.change("app-2 enabled").await;
    assert!(!change.draining);
    assert_eq!(change.state, HealthState::Healthy);
    assert!(!c.enable("app-2").await.expect("enable again").changed);
    watch.expect_nothing().await;

    // An unknown name is NOT_FOUND, for both calls.
    let drain = c.drain("nope").await.map(|_| ()).map_err(|s| s.code());
    assert_eq!(drain, Err(Code::NotFound));
    let enable = c.enable("nope").await.map(|_| ()).map_err(|s| s.code());
    assert_eq!(enable, Err(Code::NotFound));
    server.stop().await;
}

// === tetherctl ===

/// Runs `tetherctl` to its end off the async workers: (exit code, stdout,
/// stderr).
async fn ctl(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end("tetherctl", &refs, &[])
    })
    .await
    .expect("tetherctl runner")
}

#[tokio::test]
async fn tetherctl_drains_and_enables_with_exit_codes() {
    let a = FakeBackend::start("app-1").await;
    let server = Server::start(vec![target("app-1", a.url())]).await;
    let mut c = Clients::new(&server).await;
    c.all_healthy(&["app-1"]).await;
    let url = format!("http://{}", server.addr);
    let url = url.as_str();

    let (code, out, err) = ctl(&["--checker", url, "drain", "app-1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("app-1 is draining (healthy), v"), "{out}");
    let (code, out, _) = ctl(&["--checker", url, "drain", "app-1"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("app-1 was already draining"), "{out}");

    let (code, out, _) = ctl(&["--checker", url, "health"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("healthy (draining)"), "{out}");
    let (code, out, _) = ctl(&["--checker", url, "health", "app-1", "--json"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"draining\": true"), "{out}");

    let (code, out, err) = ctl(&["--checker", url, "enable", "app-1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("app-1 takes new clients again (healthy), v"),
        "{out}"
    );
    assert!(!c.get("app-1").await.draining);

    // An unknown target: exit 1 and a reason; no name: usage, exit 2.
    let (code, out, err) = ctl(&["--checker", url, "drain", "nope"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no target named \"nope\""), "{err}");
    let (code, _, err) = ctl(&["--checker", url, "enable", "nope"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = ctl(&["--checker", url, "enable"]).await;
    assert_eq!(code, 2);
    server.stop().await;
}
