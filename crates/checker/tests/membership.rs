//! Membership at runtime: `set_targets` adds and removes members, DNS
//! entries follow what their host resolves to, and every change goes out
//! on Watch one version at a time. Also the hub's metrics and the first
//! round that readiness waits for.

mod common;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::DEADLINE;
use tether_checker::Checker;
use tether_checker::dns::{Lookup, Resolve};
use tether_checker::hub::{HubHandle, Subscription};
use tether_core::{HealthState, HealthUpdate, PoolEntry, ProbeKind, Target, UpdateKind};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeBackend, eventually};
use tokio::sync::broadcast;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(1);
/// Short, so a test sees several lookups; the resolver answers at once.
const REFRESH: Duration = Duration::from_millis(50);

fn target(name: &str, url: String) -> Target {
    common::target(name, url, ProbeKind::Http, INTERVAL, TIMEOUT, 1)
}

/// A resolver whose answers the test sets: per host, addresses or an error.
#[derive(Default)]
struct TestResolver {
    answers: Mutex<HashMap<String, io::Result<Vec<SocketAddr>>>>,
    lookups: Mutex<u64>,
}

impl TestResolver {
    fn set(&self, host: &str, answer: io::Result<Vec<SocketAddr>>) {
        self.answers
            .lock()
            .expect("lock")
            .insert(host.to_owned(), answer);
    }

    fn lookups(&self) -> u64 {
        *self.lookups.lock().expect("lock")
    }
}

impl Resolve for TestResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        *self.lookups.lock().expect("lock") += 1;
        let answer = match self.answers.lock().expect("lock").get(host) {
            Some(Ok(addrs)) => Ok(addrs
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect()),
            Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Follows a hub subscription: the pool as the stream tells it, checking
/// that versions grow by one.
struct Follower {
    sub: Subscription,
    version: u64,
    names: Vec<String>,
    states: HashMap<String, HealthState>,
    /// Every update after the snapshot.
    seen: Vec<HealthUpdate>,
}

impl Follower {
    async fn new(hub: &HubHandle) -> Follower {
        let sub = hub.subscribe().await.expect("subscribe");
        let UpdateKind::Snapshot { targets, .. } = &sub.snapshot.kind else {
            panic!("a subscription starts with a snapshot");
        };
        Follower {
            version: sub.snapshot.version,
            names: targets.iter().map(|t| t.name.clone()).collect(),
            states: targets.iter().map(|t| (t.name.clone(), t.state)).collect(),
            sub,
            seen: Vec::new(),
        }
    }

    fn apply(&mut self, update: HealthUpdate) {
        assert_eq!(update.version, self.version + 1, "one version per change");
        self.version = update.version;
        match &update.kind {
            UpdateKind::Change(t) => {
                if !self.names.contains(&t.name) {
                    self.names.push(t.name.clone());
                }
                self.states.insert(t.name.clone(), t.state);
            }
            UpdateKind::Removed(name) => {
                assert!(self.names.contains(name), "removal of unknown {name}");
                self.names.retain(|n| n != name);
                self.states.remove(name);
            }
            UpdateKind::Snapshot { .. } | UpdateKind::Checker(_) => {
                panic!("unexpected {update:?}")
            }
        }
        self.seen.push(update);
    }

    /// Applies updates until `done` holds for the pool.
    async fn until(&mut self, what: &str, done: impl Fn(&Follower) -> bool) {
        while !done(self) {
            let rx = &mut self.sub.changes;
            let update = eventually(what, DEADLINE, || {
                let got = match rx.try_recv() {
                    Ok(u) => Some((*u).clone()),
                    Err(broadcast::error::TryRecvError::Empty) => None,
                    Err(e) => panic!("subscription broke: {e}"),
                };
                std::future::ready(got)
            })
            .await;
            self.apply(update);
        }
    }

    fn sorted_names(&self) -> Vec<String> {
        let mut names = self.names.clone();
        names.sort();
        names
    }
}

fn healthy(f: &Follower, name: &str) -> bool {
    f.states.get(name) == Some(&HealthState::Healthy)
}

// === set_targets ===

#[tokio::test]
async fn set_targets_adds_and_removes_one_version_each() {
    let a = FakeBackend::start("a").await;
    let b = FakeBackend::start("b").await;
    let checker = Checker::start(vec![target("a", a.url())]);
    let hub = checker.handle();
    let mut f = Follower::new(&hub).await;
    assert_eq!(f.version, 0, "the initial pool is version 0");
    f.until("a healthy", |f| healthy(f, "a")).await;

    let before = f.version;
    let change = hub
        .set_targets(vec![target("a", a.url()), target("b", b.url())])
        .await
        .expect("set");
    assert_eq!(change.added, ["b"]);
    assert!(change.removed.is_empty() && change.reset.is_empty());
    assert_eq!(change.version, before + 1);
    f.until("b healthy", |f| healthy(f, "b")).await;
    let added = f
        .seen
        .iter()
        .find(|u| matches!(&u.kind, UpdateKind::Change(t) if t.name == "b"))
        .expect("b's addition");
    let UpdateKind::Change(first) = &added.kind else {
        unreachable!()
    };
    assert_eq!(
        first.state,
        HealthState::Unknown,
        "a new member starts unknown"
    );
    assert_eq!(f.names, ["a", "b"]);

    let change = hub
        .set_targets(vec![target("b", b.url())])
        .await
        .expect("set");
    assert_eq!(change.removed, ["a"]);
    f.until("a removed", |f| !f.names.contains(&"a".to_owned()))
        .await;
    assert_eq!(f.version, change.version);
    assert!(hub.get("a").await.expect("get").is_none());

    // a's probe task is gone: a going down publishes nothing more about it.
    let after_removal = f.version;
    a.set_healthy(false);
    b.set_healthy(false);
    f.until("b unhealthy", |f| {
        f.states.get("b") == Some(&HealthState::Unhealthy)
    })
    .await;
    let (_, list) = hub.list().await.expect("list");
    assert_eq!(list.len(), 1);
    assert!(
        f.seen
            .iter()
            .filter(|u| u.version > after_removal)
            .all(|u| !matches!(&u.kind, UpdateKind::Change(t) if t.name == "a")),
        "{:?}",
        f.seen
    );
    let m = hub.metrics().await.expect("metrics");
    assert_eq!(m.targets.len(), 1);
    assert_eq!(m.targets[0].name, "b");
}

#[tokio::test]
async fn a_new_url_is_a_new_member_and_new_probe_settings_a_reset() {
    let a = FakeBackend::start("a").await;
    let a2 = FakeBackend::start("a2").await;
    let checker = Checker::start(vec![target("a", a.url())]);
    let hub = checker.handle();
    let mut f = Follower::new(&hub).await;
    f.until("a healthy", |f| healthy(f, "a")).await;
    let probed = hub.metrics().await.expect("metrics").targets[0].probes_succeeded;
    assert!(probed >= 1);

    let mut slower = target("a", a.url());
    slower.probe.interval = Duration::from_millis(150);
    let change = hub.set_targets(vec![slower]).await.expect("set");
    assert_eq!(change.reset, ["a"]);
    let v = f.version;
    f.until("a reset", |f| f.version > v).await;
    assert_eq!(f.states["a"], HealthState::Unknown);
    f.until("a healthy again", |f| healthy(f, "a")).await;
    let m = hub.metrics().await.expect("metrics");
    assert!(
        m.targets[0].probes_succeeded > probed,
        "counters survive a reset"
    );

    let change = hub
        .set_targets(vec![target("a", a2.url())])
        .await
        .expect("set");
    assert_eq!(
        (change.removed, change.added),
        (vec!["a".to_owned()], vec!["a".to_owned()])
    );
    let v = f.version;
    f.until("a moved", |f| f.version >= v + 2).await;
    assert!(matches!(&f.seen[f.seen.len() - 2].kind, UpdateKind::Removed(n) if n == "a"));
    let (_, got) = hub.get("a").await.expect("get").expect("a is there");
    assert_eq!(got.url, a2.url());
}

// === DNS ===

fn dns_entry(name: &str, port: u16) -> PoolEntry {
    PoolEntry::dns(target(name, format!("http://app.test:{port}")), REFRESH)
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|a| SocketAddr::new(a.parse().expect("ip"), 0))
        .collect()
}

#[tokio::test]
async fn dns_members_follow_the_answers_and_survive_a_failed_lookup() {
    let resolver = Arc::new(TestResolver::default());
    resolver.set("app.test", Ok(addrs(&["127.0.0.2", "127.0.0.3"])));
    let checker = Checker::start_with(vec![dns_entry("web", 9)], resolver.clone());
    let hub = checker.handle();
    let mut f = Follower::new(&hub).await;
    f.until("two members", |f| f.names.len() == 2).await;
    assert_eq!(f.sorted_names(), ["web@127.0.0.2:9", "web@127.0.0.3:9"]);
    let (_, list) = hub.list().await.expect("list");
    let urls: Vec<_> = list.iter().map(|t| t.url.as_str()).collect();
    assert!(urls.contains(&"http://127.0.0.2:9"), "{urls:?}");

    resolver.set(
        "app.test",
        Ok(addrs(&["127.0.0.3", "127.0.0.2", "127.0.0.4"])),
    );
    let v = f.version;
    f.until("three members", |f| f.names.len() == 3).await;
    assert_eq!(
        f.names[2], "web@127.0.0.4:9",
        "the new one joins at the end"
    );
    // Besides probe results (the members refuse), one addition only.
    let joined: Vec<_> = f
        .seen
        .iter()
        .filter(|u| u.version > v)
        .filter(|u| match &u.kind {
            UpdateKind::Change(t) => t.state == HealthState::Unknown,
            _ => true,
        })
        .collect();
    assert_eq!(joined.len(), 1, "{joined:?}");

    // A failed lookup or an empty answer keeps the last members.
    let v = f.version;
    let n = resolver.lookups();
    resolver.set("app.test", Err(io::Error::other("SERVFAIL")));
    eventually("two more lookups", DEADLINE, || {
        std::future::ready((resolver.lookups() >= n + 2).then_some(()))
    })
    .await;
    resolver.set("app.test", Ok(Vec::new()));
    let n = resolver.lookups();
    eventually("two more lookups", DEADLINE, || {
        std::future::ready((resolver.lookups() >= n + 2).then_some(()))
    })
    .await;
    let (version, list) = hub.list().await.expect("list");
    assert_eq!(list.len(), 3);
    f.until("caught up", |f| f.version == version).await;
    assert!(
        f.seen
            .iter()
            .filter(|u| u.version > v)
            .all(|u| matches!(u.kind, UpdateKind::Change(_))),
        "no member left on a failed lookup: {:?}",
        f.seen
    );

    resolver.set("app.test", Ok(addrs(&["127.0.0.4"])));
    f.until("one member", |f| f.names.len() == 1).await;
    assert_eq!(f.names, ["web@127.0.0.4:9"]);
}

#[tokio::test]
async fn dns_entry_leaves_with_its_members_on_set_pool() {
    let resolver = Arc::new(TestResolver::default());
    resolver.set("app.test", Ok(addrs(&["127.0.0.2", "127.0.0.3"])));
    let a = FakeBackend::start("a").await;
    let pool = vec![PoolEntry::fixed(target("a", a.url())), dns_entry("web", 9)];
    let checker = Checker::start_with(pool, resolver.clone());
    let hub = checker.handle();
    let mut f = Follower::new(&hub).await;
    f.until("three members", |f| f.names.len() == 3).await;
    // Who holds the resolver now: this test, the hub, each member's probe
    // loop and the entry's resolving task.
    let held = Arc::strong_count(&resolver);
    let change = hub
        .set_pool(vec![PoolEntry::fixed(target("a", a.url()))])
        .await
        .expect("set");
    let mut removed = change.removed.clone();
    removed.sort();
    assert_eq!(removed, ["web@127.0.0.2:9", "web@127.0.0.3:9"]);
    f.until("only a", |f| f.names == ["a"]).await;
    // The resolving task stopped with its entry, and the two members'
    // probe loops with them: three fewer holders of the resolver. Nothing
    // left can look the name up again.
    eventually("the entry's tasks let go of the resolver", DEADLINE, || {
        std::future::ready((Arc::strong_count(&resolver) + 3 <= held).then_some(()))
    })
    .await;
    assert_eq!(hub.list().await.expect("list").1.len(), 1);
}

#[tokio::test]
async fn dns_members_are_probed_at_their_address_under_the_entry_host() {
    let backend = FakeBackend::start("vhost").await;
    let port = backend.addr().port();
    let resolver = Arc::new(TestResolver::default());
    resolver.set("backend.test", Ok(addrs(&["127.0.0.1"])));
    let mut template = target("backend", format!("http://backend.test:{port}"));
    // Not the health path, so the fake backend records the probe's head.
    "/vhost-probe".clone_into(&mut template.probe.path);
    let checker = Checker::start_with(vec![PoolEntry::dns(template, REFRESH)], resolver);
    let hub = checker.handle();

    let probe = eventually("an HTTP probe of the DNS member", DEADLINE, || {
        let seen = backend.requests().into_iter().next();
        std::future::ready(seen)
    })
    .await;
    assert_eq!(probe.uri, "/vhost-probe");
    let host = format!("backend.test:{port}");
    assert_eq!(probe.header("host"), Some(host.as_str()));

    let (_, list) = hub.list().await.expect("list");
    let member = &list[0];
    assert_eq!(member.name, format!("backend@127.0.0.1:{port}"));
    assert_eq!(member.url, format!("http://127.0.0.1:{port}"));
    assert_eq!(member.host.as_deref(), Some(host.as_str()));
}

#[tokio::test]
async fn localhost_resolves_through_the_system_resolver() {
    let backend = FakeBackend::start("local").await;
    let port: u16 = backend
        .url()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let entry = PoolEntry::dns(
        target("local", format!("http://localhost:{port}")),
        Duration::from_secs(10),
    );
    let checker = Checker::start(vec![entry]);
    let hub = checker.handle();
    let mut f = Follower::new(&hub).await;
    let v4 = format!("local@127.0.0.1:{port}");
    // localhost may resolve to ::1 as well; only 127.0.0.1 is certain.
    f.until("localhost's 127.0.0.1 member healthy", |f| healthy(f, &v4))
        .await;
    assert!(f.names.iter().all(|n| n.starts_with("local@")));
    hub.first_round().await.expect("first round");
}

// === metrics, first round, grpc.health.v1 ===

/// Serves `hub`'s gRPC API on a loopback port until the sender is dropped.
async fn serve(hub: &HubHandle) -> (Channel, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tether_checker::service::serve(
        listener,
        hub.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    (channel, stop)
}

#[tokio::test]
async fn metrics_count_probes_and_watch_streams() {
    let a = FakeBackend::start("a").await;
    let checker = Checker::start(vec![target("a", a.url())]);
    let hub = checker.handle();
    hub.first_round().await.expect("first round");
    assert!(hub.first_round_done());
    let (channel, _stop) = serve(&hub).await;
    let mut client = HealthServiceClient::new(channel);
    let mut stream = client
        .watch(pb::WatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("first").expect("some");
    assert!(matches!(
        first.update,
        Some(pb::watch_response::Update::Snapshot(_))
    ));
    let m = eventually("two probes and one watcher", DEADLINE, || {
        let hub = hub.clone();
        async move {
            let m = hub.metrics().await.expect("metrics");
            (m.targets[0].probes_succeeded >= 2 && m.watch_subscribers == 1).then_some(m)
        }
    })
    .await;
    assert!(m.first_round_done);
    assert_eq!(m.targets[0].name, "a");
    assert_eq!(m.targets[0].probes_failed, 0);
    assert!(m.targets[0].probe_duration.count() >= 2);
    drop(stream);
    eventually("the watcher gone", DEADLINE, || {
        let hub = hub.clone();
        async move { (hub.metrics().await.ok()?.watch_subscribers == 0).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn checker_is_not_serving_until_its_first_round_is_done() {
    // A target that accepts and never answers: no result before the
    // probe's timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        tokio::select! {
            _ = async { while let Ok((s, _)) = listener.accept().await { held.push(s); } } => {}
            _ = released => {}
        }
    });
    let mut slow = target("slow", format!("http://{addr}"));
    slow.probe.timeout = Duration::from_secs(3);
    let server = common::Server::start(vec![slow]).await;
    let health = HealthClient::new(server.channel().await);
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status())
        }
    };
    assert_eq!(status("").await.expect("check"), ServingStatus::NotServing);
    drop(release);
    eventually("checker serving after the first round", DEADLINE, || {
        let status = status("");
        async move { (status.await.ok()? == ServingStatus::Serving).then_some(()) }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn grpc_health_forgets_a_removed_target() {
    let a = FakeBackend::start("a").await;
    let b = FakeBackend::start("b").await;
    let checker = Checker::start(vec![target("a", a.url()), target("b", b.url())]);
    let hub = checker.handle();
    let (channel, _stop) = serve(&hub).await;
    let health = HealthClient::new(channel);
    let check = |service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
        }
    };
    eventually("a serving", DEADLINE, || {
        let c = check("a");
        async move { (c.await.ok()?.into_inner().status() == ServingStatus::Serving).then_some(()) }
    })
    .await;
    hub.set_targets(vec![target("b", b.url())])
        .await
        .expect("set");
    eventually("a unknown to grpc.health.v1", DEADLINE, || {
        let c = check("a");
        async move { (c.await.err()?.code() == tonic::Code::NotFound).then_some(()) }
    })
    .await;
}
