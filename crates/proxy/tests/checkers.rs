//! A proxy following several checkers: a real listener on 127.0.0.1:0,
//! fake backends, and scripted fake checkers that disagree, die and come
//! back. A member leaves rotation only when a majority of the live checkers
//! say it is unhealthy; with no live checker the last table stays.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{DEADLINE, Running, backends, config, healthy_snapshot, wait_routes};
use tether_checker::dns::{Lookup, Resolve};
use tether_core::{CheckerState, HealthState, HealthUpdate};
use tether_proxy::config::{CheckerDns, HealthSource};
use tether_proxy::source::Resolver;
use tether_testkit::{FakeBackend, FakeChecker, eventually, get, run_to_end, status};

use HealthState::{Healthy, Unhealthy, Unknown};

/// A checker whose snapshot (version 1) gives the backends these states.
async fn checker_saying(b: &[FakeBackend], states: &[HealthState]) -> FakeChecker {
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        1,
        b.iter()
            .zip(states)
            .map(|(x, s)| status(x.name(), &x.url(), *s))
            .collect(),
    );
    checker
}

/// A proxy following `checkers`, in this order, with its admin endpoint.
async fn proxy_following(checkers: &[&FakeChecker]) -> Running {
    let uris = checkers
        .iter()
        .map(|c| c.url().parse().expect("uri"))
        .collect();
    Running::start_with_admin(config(HealthSource::Checkers(uris))).await
}

/// One sample of the proxy's `/metrics`, by its full key.
async fn metric(admin: SocketAddr, key: &str) -> Option<f64> {
    let r = get(admin, "/metrics", &[]).await.expect("admin answers");
    r.body.lines().find_map(|line| {
        let (k, v) = line.rsplit_once(' ')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// Waits until `/metrics` says `n` checkers are live.
async fn wait_live(proxy: &Running, n: usize) {
    let admin = proxy.admin.expect("admin");
    eventually(&format!("{n} live checkers"), DEADLINE, || async {
        (metric(admin, "tether_checkers_live").await == Some(n as f64)).then_some(())
    })
    .await;
}

/// Who served `n` requests, all of which must succeed.
async fn counts(proxy: &Running, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = proxy.get().await;
        assert_eq!(r.status, 200, "body: {}", r.body);
        *counts.entry(r.body).or_insert(0) += 1;
    }
    counts
}

/// Ends `checker`'s streams and refuses new ones: it is cut off.
fn cut(checker: &FakeChecker) {
    checker.refuse_watch(Some(tonic::Status::unavailable("cut off")));
    checker.break_streams();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_checkers_that_disagree_keep_the_member_in() {
    let b = backends(2).await;
    let down = checker_saying(&b, &[Unhealthy, Healthy]).await;
    let up = checker_saying(&b, &[Healthy, Healthy]).await;
    let proxy = proxy_following(&[&down, &up]).await;
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    let c = counts(&proxy, 20).await;
    assert_eq!(c.get("app-1"), Some(&10), "a tie keeps app-1 in: {c:?}");
    let admin = proxy.admin.expect("admin");
    for checker in [&down, &up] {
        let key = format!("tether_health_version{{checker=\"{}\"}}", checker.url());
        assert_eq!(metric(admin, &key).await, Some(1.0), "{key}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_take_a_member_out() {
    let b = backends(2).await;
    let first = checker_saying(&b, &[Unhealthy, Healthy]).await;
    let second = checker_saying(&b, &[Healthy, Healthy]).await;
    let third = checker_saying(&b, &[Unhealthy, Healthy]).await;
    let proxy = proxy_following(&[&first, &second, &third]).await;
    wait_live(&proxy, 3).await;
    wait_routes(&proxy, &["app-2"]).await;
    assert_eq!(counts(&proxy, 10).await.get("app-1"), None);

    // The third changes its mind: one against two, app-1 is back.
    third.send(HealthUpdate::change(
        2,
        status("app-1", &b[0].url(), Healthy),
    ));
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_stream_dies_the_others_view_rules_alone() {
    let b = backends(2).await;
    let down = checker_saying(&b, &[Unhealthy, Healthy]).await;
    let up = checker_saying(&b, &[Healthy, Healthy]).await;
    let proxy = proxy_following(&[&down, &up]).await;
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    cut(&up);
    wait_live(&proxy, 1).await;
    wait_routes(&proxy, &["app-2"]).await;

    // The admin endpoint shows each checker's view and the merged one.
    let admin = proxy.admin.expect("admin");
    let r = get(admin, "/status.json", &[])
        .await
        .expect("admin answers");
    assert_eq!(r.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(doc["live"], 1, "{doc}");
    let checkers = doc["checkers"].as_array().expect("checkers");
    assert_eq!(checkers.len(), 2);
    assert_eq!(checkers[0]["address"], down.url().as_str());
    assert_eq!(checkers[0]["stream_up"], true);
    assert_eq!(checkers[0]["unhealthy"], serde_json::json!(["app-1"]));
    assert_eq!(checkers[1]["address"], up.url().as_str());
    assert_eq!(checkers[1]["stream_up"], false);
    assert_eq!(checkers[1]["live"], false);
    assert_eq!(checkers[1]["version"], 1);
    let merged = doc["merged"].as_array().expect("merged");
    assert_eq!(merged[0]["name"], "app-1");
    assert_eq!(merged[0]["state"], "unhealthy");
    assert_eq!(merged[1]["healthy"], true);
    let page = get(admin, "/", &[]).await.expect("admin answers");
    assert!(page.body.contains("<h2>Checkers</h2>"), "{}", page.body);
    assert!(page.body.contains(&up.url()), "{}", page.body);
    // And tetherctl shows it from there.
    let url = format!("http://{admin}");
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_to_end("tetherctl", &["checkers", &url], &[]))
            .await
            .expect("tetherctl runner");
    assert_eq!(code, 0, "{err}");
    let line = |addr: &str| {
        out.lines()
            .find(|l| l.starts_with(addr))
            .unwrap_or_else(|| panic!("no line for {addr} in\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line(&down.url())[1..], ["up", "no", "1", "2", "app-1"]);
    assert_eq!(line(&up.url())[1..], ["down", "no", "1", "2", "-"]);
    assert!(out.contains("1 of 2 checkers live"), "{out}");

    // It comes back, its vote counts again.
    up.refuse_watch(None);
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_stream_dies_the_last_table_stays() {
    let b = backends(3).await;
    let first = checker_saying(&b, &[Healthy, Healthy, Unhealthy]).await;
    let second = checker_saying(&b, &[Healthy, Healthy, Unhealthy]).await;
    let proxy = proxy_following(&[&first, &second]).await;
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    cut(&first);
    cut(&second);
    wait_live(&proxy, 0).await;
    eventually("the proxy tried both again", DEADLINE, || async {
        (first.watch_calls() >= 2 && second.watch_calls() >= 2).then_some(())
    })
    .await;
    // Fail static: every request keeps succeeding on the last table.
    let c = counts(&proxy, 20).await;
    assert_eq!(c.get("app-1"), Some(&10), "{c:?}");
    assert_eq!(c.get("app-2"), Some(&10), "{c:?}");
    let admin = proxy.admin.expect("admin");
    let ready = get(admin, "/readyz", &[]).await.expect("admin answers");
    assert_eq!(ready.status, 200, "{}", ready.body);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_reconnecting_with_unknown_members_takes_none_out() {
    let b = backends(2).await;
    let first = FakeChecker::start().await;
    let restarted = FakeChecker::start().await;
    healthy_snapshot(&first, 4, &b);
    healthy_snapshot(&restarted, 9, &b);
    let proxy = proxy_following(&[&first, &restarted]).await;
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    // One checker is cut off; the other restarts and knows nothing yet:
    // the only live checker says `unknown` for everything.
    cut(&first);
    restarted.set_snapshot(
        0,
        b.iter()
            .map(|x| status(x.name(), &x.url(), Unknown))
            .collect(),
    );
    restarted.break_streams();
    eventually("the proxy resubscribed", DEADLINE, || async {
        (restarted.watch_calls() >= 2 && restarted.open_streams() == 1).then_some(())
    })
    .await;
    wait_live(&proxy, 1).await;
    let c = counts(&proxy, 20).await;
    assert_eq!(c.get("app-1"), Some(&10), "{c:?}");
    assert_eq!(c.get("app-2"), Some(&10), "{c:?}");

    // Its first real verdict is followed (it is the only live checker).
    restarted.send(HealthUpdate::change(
        1,
        status("app-1", &b[0].url(), Unhealthy),
    ));
    wait_routes(&proxy, &["app-2"]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_on_one_stream_resubscribes_only_that_one() {
    let b = backends(2).await;
    let first = checker_saying(&b, &[Healthy, Healthy]).await;
    let second = checker_saying(&b, &[Healthy, Healthy]).await;
    let proxy = proxy_following(&[&first, &second]).await;
    wait_live(&proxy, 2).await;

    // The second skips a version; its fresh snapshot calls app-1 down,
    // as does the first now: both agree, app-1 goes.
    second.set_snapshot(
        7,
        vec![
            status("app-1", &b[0].url(), Unhealthy),
            status("app-2", &b[1].url(), Healthy),
        ],
    );
    second.send(HealthUpdate::change(
        5,
        status("app-2", &b[1].url(), Unhealthy),
    ));
    eventually("the second is asked again", DEADLINE, || async {
        (second.watch_calls() >= 2).then_some(())
    })
    .await;
    first.send(HealthUpdate::change(
        2,
        status("app-1", &b[0].url(), Unhealthy),
    ));
    wait_routes(&proxy, &["app-2"]).await;
    assert_eq!(first.watch_calls(), 1, "the first stream had no gap");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impaired_checker_does_not_vote() {
    let b = backends(2).await;
    let first = checker_saying(&b, &[Unhealthy, Healthy]).await;
    let second = checker_saying(&b, &[Healthy, Healthy]).await;
    let third = checker_saying(&b, &[Unhealthy, Healthy]).await;
    // The first says from its first snapshot that it cannot be trusted.
    first.set_checker_state(CheckerState::impaired(1, "2 of 2 members silent"));
    let proxy = proxy_following(&[&first, &second, &third]).await;
    eventually("every checker is followed", DEADLINE, || async {
        (first.open_streams() + second.open_streams() + third.open_streams() == 3).then_some(())
    })
    .await;
    wait_live(&proxy, 2).await;
    // One against one among the live: app-1 stays.
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    // The first recovers: two against one, app-1 goes.
    first.send(HealthUpdate::checker(2, CheckerState::ok()));
    wait_live(&proxy, 3).await;
    wait_routes(&proxy, &["app-2"]).await;

    // The third becomes impaired: a tie again, app-1 is back.
    third.send(HealthUpdate::checker(
        2,
        CheckerState::impaired(2, "cut off from the backends"),
    ));
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    let admin = proxy.admin.expect("admin");
    let r = get(admin, "/status.json", &[])
        .await
        .expect("admin answers");
    let doc: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let third_doc = &doc["checkers"][2];
    assert_eq!(third_doc["stream_up"], true, "{doc}");
    assert_eq!(third_doc["live"], false, "{doc}");
    assert_eq!(
        third_doc["impaired"]["reason"], "cut off from the backends",
        "{doc}"
    );
    assert_eq!(doc["checkers"][0]["impaired"], serde_json::Value::Null);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_is_reported_to_every_live_checker() {
    let b = backends(3).await;
    let first = checker_saying(&b, &[Healthy, Healthy, Healthy]).await;
    let second = checker_saying(&b, &[Healthy, Healthy, Healthy]).await;
    let gone = checker_saying(&b, &[Healthy, Healthy, Healthy]).await;
    let proxy = proxy_following(&[&first, &second, &gone]).await;
    wait_live(&proxy, 3).await;
    cut(&gone);
    wait_live(&proxy, 2).await;

    // app-2 dies between probes: the checkers still call it healthy, and
    // the proxy's own connect failures eject it (retried elsewhere, so no
    // client sees an error).
    let mut b = b;
    let dead = b.remove(1);
    dead.stop().await;
    for _ in 0..12 {
        assert_eq!(proxy.get().await.status, 200);
    }
    let reported = |c: &FakeChecker| c.reports().iter().any(|(name, _)| name == "app-2");
    eventually("both live checkers got the report", DEADLINE, || async {
        (reported(&first) && reported(&second)).then_some(())
    })
    .await;
    assert!(!reported(&gone), "a checker that is not live is not asked");
    proxy.stop().await;
}

/// A resolver the test scripts: what `checkers.test` resolves to now.
#[derive(Default)]
struct Names {
    answer: std::sync::Mutex<Option<Vec<SocketAddr>>>,
    lookups: std::sync::atomic::AtomicUsize,
}

impl Names {
    /// `None`: the lookup fails.
    fn set(&self, addrs: Option<Vec<SocketAddr>>) {
        *self.answer.lock().expect("lock") = addrs;
    }

    fn lookups(&self) -> usize {
        self.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Resolve for Names {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> Lookup<'a> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer = self.answer.lock().expect("lock").clone();
        Box::pin(async move {
            assert_eq!(host, "checkers.test");
            answer.ok_or_else(|| std::io::Error::other("no such name"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_name_is_followed_at_every_address_it_resolves_to() {
    let b = backends(2).await;
    let down = checker_saying(&b, &[Unhealthy, Healthy]).await;
    let up = checker_saying(&b, &[Healthy, Healthy]).await;
    let names = Arc::new(Names::default());
    names.set(Some(vec![down.addr()]));
    let mut config = config(HealthSource::Checkers(vec![
        "http://checkers.test:50051".parse().expect("uri"),
    ]));
    config.checker_dns = Some(CheckerDns {
        refresh: Duration::from_millis(100),
        resolver: Resolver(names.clone()),
    });
    let proxy = Running::start_with_admin(config).await;
    wait_live(&proxy, 1).await;
    wait_routes(&proxy, &["app-2"]).await;

    // A second pod appears: it is followed, and the tie keeps app-1 in.
    names.set(Some(vec![up.addr(), down.addr()]));
    wait_live(&proxy, 2).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    let admin = proxy.admin.expect("admin");
    let r = get(admin, "/status.json", &[])
        .await
        .expect("admin answers");
    let doc: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let labels: Vec<String> = doc["checkers"]
        .as_array()
        .expect("checkers")
        .iter()
        .map(|c| c["address"].as_str().expect("address").to_owned())
        .collect();
    let mut want = vec![
        format!("checkers.test:50051@{}", down.addr()),
        format!("checkers.test:50051@{}", up.addr()),
    ];
    want.sort_by_key(|l| {
        l.rsplit_once('@')
            .and_then(|(_, a)| a.parse::<SocketAddr>().ok())
    });
    assert_eq!(labels, want);

    // A failing lookup keeps what there was.
    names.set(None);
    let seen = names.lookups();
    eventually("two more lookups", DEADLINE, || async {
        (names.lookups() >= seen + 2).then_some(())
    })
    .await;
    assert_eq!(metric(admin, "tether_checkers_live").await, Some(2.0));

    // The pod that called app-1 down goes away: its stream is closed and
    // its vote with it.
    names.set(Some(vec![up.addr()]));
    wait_live(&proxy, 1).await;
    eventually("the gone pod's stream is closed", DEADLINE, || async {
        (down.open_streams() == 0).then_some(())
    })
    .await;
    down.send(HealthUpdate::change(
        2,
        status("app-2", &b[1].url(), Unhealthy),
    ));
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    proxy.stop().await;
}
