//! Socket tests of the proxy library: a real listener on 127.0.0.1:0, fake
//! backends, and a scripted fake checker feeding health over gRPC.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    DEADLINE, Running, backends, config, healthy_snapshot, http_targets, now_ms, pool, proxy_for,
    wait_routes,
};
use tether_core::{HealthState, HealthUpdate, UpdateKind};
use tether_proxy::config::HealthSource;
use tether_testkit::{FakeBackend, FakeChecker, eventually, get, status};

/// Which target served a request with these headers.
async fn served_by(proxy: &Running, headers: &[(&str, &str)]) -> String {
    let reply = proxy.get_with(headers).await;
    assert_eq!(reply.status, 200, "body: {}", reply.body);
    reply.body
}

async fn counts(proxy: &Running, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(served_by(proxy, &[]).await).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_healthy_targets() {
    let (b, checker, proxy) = pool(3).await;

    let c = counts(&proxy, 30).await;
    for name in ["app-1", "app-2", "app-3"] {
        assert_eq!(c.get(name), Some(&10), "{c:?}");
    }

    // One target goes down: traffic spreads over the other two.
    let mut s = status("app-2", &b[1].url(), HealthState::Unhealthy);
    s.consecutive_failures = 3;
    checker.send(HealthUpdate {
        version: 2,
        kind: UpdateKind::Change(s),
    });
    wait_routes(&proxy, &["app-1", "app-3"]).await;
    let c = counts(&proxy, 20).await;
    assert_eq!(c.get("app-1"), Some(&10), "{c:?}");
    assert_eq!(c.get("app-3"), Some(&10), "{c:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_sticky_headers() {
    let (_b, _checker, proxy) = pool(2).await;
    let before = now_ms();
    let r = proxy.get().await;
    let after = now_ms();
    assert_eq!(r.header("x-target-server"), Some(r.body.as_str()));
    let last_use: u64 = r
        .header("x-target-server-last-use")
        .expect("last-use header")
        .parse()
        .expect("epoch ms");
    assert!(
        before <= last_use && last_use <= after,
        "{before} {last_use} {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_by_name_and_by_url() {
    let (b, _checker, proxy) = pool(3).await;

    for _ in 0..10 {
        let now = now_ms().to_string();
        let got = served_by(
            &proxy,
            &[
                ("x-target-server", "app-2"),
                ("x-target-server-last-use", &now),
            ],
        )
        .await;
        assert_eq!(got, "app-2");
    }
    let url = b[2].url();
    for _ in 0..10 {
        let now = now_ms().to_string();
        let got = served_by(
            &proxy,
            &[
                ("x-target-server", &url),
                ("x-target-server-last-use", &now),
            ],
        )
        .await;
        assert_eq!(got, "app-3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_future_and_garbage_hints_fall_back_to_round_robin() {
    let (_b, _checker, proxy) = pool(3).await;

    let stale = (now_ms() - 31_000).to_string();
    let future = (now_ms() + 60_000).to_string();
    let cases: [&[(&str, &str)]; 6] = [
        &[
            ("x-target-server", "app-1"),
            ("x-target-server-last-use", &stale),
        ],
        &[
            ("x-target-server", "app-1"),
            ("x-target-server-last-use", &future),
        ],
        &[
            ("x-target-server", "app-1"),
            ("x-target-server-last-use", "yesterday"),
        ],
        &[
            ("x-target-server", "app-1"),
            ("x-target-server-last-use", "-1"),
        ],
        &[("x-target-server", "app-1")],
        &[
            ("x-target-server", "no-such-app"),
            ("x-target-server-last-use", "1"),
        ],
    ];
    for headers in cases {
        // Round robin spreads 30 requests evenly; a honoured hint would
        // pile them all on app-1.
        let mut c: HashMap<String, usize> = HashMap::new();
        for _ in 0..30 {
            *c.entry(served_by(&proxy, headers).await).or_insert(0) += 1;
        }
        for name in ["app-1", "app-2", "app-3"] {
            assert_eq!(c.get(name), Some(&10), "{headers:?}: {c:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_outside_the_pool_never_reaches_that_address() {
    let outsider = FakeBackend::start("outsider").await;
    let (_b, _checker, proxy) = pool(2).await;

    let now = now_ms().to_string();
    let outsider_url = outsider.url();
    let outsider_addr = outsider.addr().to_string();
    for hint in [outsider_url.as_str(), outsider_addr.as_str(), "outsider"] {
        for _ in 0..5 {
            let got = served_by(
                &proxy,
                &[
                    ("x-target-server", hint),
                    ("x-target-server-last-use", &now),
                ],
            )
            .await;
            assert!(got == "app-1" || got == "app-2", "{got}");
        }
    }
    assert_eq!(outsider.hits(), 0);
    assert_eq!(outsider.health_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_pinned_target_is_rebalanced() {
    let b = backends(2).await;
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        1,
        vec![
            status("app-1", &b[0].url(), HealthState::Healthy),
            status("app-2", &b[1].url(), HealthState::Unhealthy),
        ],
    );
    let proxy = proxy_for(&checker).await;
    wait_routes(&proxy, &["app-1"]).await;
    let now = now_ms().to_string();
    let r = proxy
        .get_with(&[
            ("x-target-server", "app-2"),
            ("x-target-server-last-use", &now),
        ])
        .await;
    assert_eq!(r.body, "app-1");
    assert_eq!(
        r.header("x-target-server"),
        Some("app-1"),
        "the new target is echoed"
    );
    assert_eq!(b[1].hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_healthy_is_503_with_json() {
    let b = backends(1).await;
    let checker = FakeChecker::start().await;
    checker.set_snapshot(
        1,
        vec![status("app-1", &b[0].url(), HealthState::Unhealthy)],
    );
    let proxy = proxy_for(&checker).await;
    eventually("the proxy has subscribed", DEADLINE, || async {
        (checker.watch_calls() > 0).then_some(())
    })
    .await;
    let r = proxy.get().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, r#"{"error":"No healthy servers available"}"#);
    assert_eq!(b[0].hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_gap_triggers_a_fresh_snapshot() {
    let (b, checker, proxy) = pool(3).await;
    assert_eq!(checker.watch_calls(), 1);

    // The fresh snapshot the proxy will get says app-3 is down; the change
    // with a skipped version must not be applied but must cause a re-watch.
    checker.set_snapshot(
        5,
        vec![
            status("app-1", &b[0].url(), HealthState::Healthy),
            status("app-2", &b[1].url(), HealthState::Healthy),
            status("app-3", &b[2].url(), HealthState::Unhealthy),
        ],
    );
    checker.send(HealthUpdate {
        version: 4,
        kind: UpdateKind::Change(status("app-1", &b[0].url(), HealthState::Unhealthy)),
    });
    eventually("the proxy asks again", DEADLINE, || async {
        (checker.watch_calls() >= 2).then_some(())
    })
    .await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_keeps_the_last_table() {
    let (_b, checker, proxy) = pool(2).await;
    assert_eq!(checker.watch_calls(), 1, "one subscription so far");

    // The stream breaks and every new Watch is refused, so the proxy can
    // get no new table. A second Watch call is the proxy's own word that it
    // saw the break: it only asks again once the stream has ended.
    checker.refuse_watch(Some(tonic::Status::unavailable("checker gone")));
    checker.break_streams();
    eventually(
        "the proxy saw the break and tried again",
        DEADLINE,
        || async { (checker.watch_calls() >= 2 && checker.open_streams() == 0).then_some(()) },
    )
    .await;

    // Fail static: the proxy serves on the last table it had.
    let c = counts(&proxy, 20).await;
    assert_eq!(c.get("app-1"), Some(&10), "{c:?}");
    assert_eq!(c.get("app-2"), Some(&10), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_every_checker_and_resubscribes_to_each() {
    let b = backends(2).await;
    let first = FakeChecker::start().await;
    let second = FakeChecker::start().await;
    healthy_snapshot(&first, 1, &b);
    second.set_snapshot(
        1,
        vec![
            status("app-1", &b[0].url(), HealthState::Unhealthy),
            status("app-2", &b[1].url(), HealthState::Healthy),
        ],
    );
    let uris = vec![
        first.url().parse().expect("uri"),
        second.url().parse().expect("uri"),
    ];
    let proxy = Running::start(config(HealthSource::Checkers(uris))).await;
    eventually("the proxy follows both checkers", DEADLINE, || async {
        (first.open_streams() == 1 && second.open_streams() == 1).then_some(())
    })
    .await;
    // One says app-1 is down, the other up: a tie keeps it in.
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    first.break_streams();
    first.refuse_watch(Some(tonic::Status::unavailable("going away")));
    wait_routes(&proxy, &["app-2"]).await;

    // Changes from the remaining checker are followed.
    second.send(HealthUpdate {
        version: 2,
        kind: UpdateKind::Change(status("app-1", &b[0].url(), HealthState::Healthy)),
    });
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    // The first comes back and is followed again.
    first.refuse_watch(None);
    eventually("the proxy resubscribed to the first", DEADLINE, || async {
        (first.open_streams() == 1).then_some(())
    })
    .await;
    assert_eq!(second.watch_calls(), 1, "the second stream never broke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_waits_for_a_checker_that_starts_late() {
    let b = backends(1).await;
    // Reserve a port, then free it: the checker comes up there later.
    let port_holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = port_holder.local_addr().expect("addr");
    drop(port_holder);
    let uri = format!("http://{addr}").parse().expect("uri");
    let proxy = Running::start(config(HealthSource::Checkers(vec![uri]))).await;
    assert_eq!(proxy.get().await.status, 503, "no health known yet");
    let checker = FakeChecker::start_on(addr)
        .await
        .expect("start on the reserved port");
    healthy_snapshot(&checker, 1, &b);
    wait_routes(&proxy, &["app-1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_on_another_target() {
    let (mut b, _checker, proxy) = pool(3).await;

    // app-2 dies between probes: the checker still says healthy.
    let dead = b.remove(1);
    dead.stop().await;
    for _ in 0..30 {
        let r = proxy.get().await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_ne!(r.body, "app-2");
        assert_eq!(r.header("x-target-server"), Some(r.body.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_probes_its_own_targets() {
    let b = backends(2).await;
    let targets = http_targets(&b, Duration::from_millis(100), 1);
    let proxy = Running::start(config(HealthSource::Embedded {
        targets: targets.into_iter().map(Into::into).collect(),
        grpc_listen: None,
    }))
    .await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    b[0].set_healthy(false);
    wait_routes(&proxy, &["app-2"]).await;
    b[0].set_healthy(true);
    wait_routes(&proxy, &["app-1", "app-2"]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_host() {
    let (b, _checker, proxy) = pool(1).await;
    let r = get(
        proxy.addr,
        "/some/path?q=1",
        &[("connection", "x-drop"), ("x-drop", "1")],
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 200);
    let seen = b[0].requests();
    let last = seen.last().expect("a request reached the backend");
    assert_eq!(last.uri, "/some/path?q=1");
    assert_eq!(last.header("host"), Some(b[0].addr().to_string().as_str()));
    assert_eq!(last.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        last.header("x-forwarded-host"),
        Some(proxy.addr.to_string().as_str())
    );
    assert_eq!(last.header("x-forwarded-proto"), Some("http"));
    assert_eq!(last.header("via"), Some("1.1 tether"));
    assert_eq!(
        last.header("x-drop"),
        None,
        "a header named by Connection is hop-by-hop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_checker_that_knows_nothing_yet_keeps_the_pool_up() {
    let b = backends(2).await;
    let checker = FakeChecker::start().await;
    healthy_snapshot(&checker, 7, &b);
    let proxy = proxy_for(&checker).await;
    wait_routes(&proxy, &["app-1", "app-2"]).await;

    // The checker restarts: its first snapshot has every target unknown.
    checker.set_snapshot(
        0,
        b.iter()
            .map(|x| status(x.name(), &x.url(), HealthState::Unknown))
            .collect(),
    );
    checker.break_streams();
    eventually("the proxy resubscribed", DEADLINE, || async {
        (checker.watch_calls() >= 2 && checker.open_streams() >= 1).then_some(())
    })
    .await;
    let c = counts(&proxy, 20).await;
    assert_eq!(c.get("app-1"), Some(&10), "{c:?}");
    assert_eq!(c.get("app-2"), Some(&10), "{c:?}");

    // Its first real verdict is followed.
    checker.send(HealthUpdate {
        version: 1,
        kind: UpdateKind::Change(status("app-1", &b[0].url(), HealthState::Unhealthy)),
    });
    wait_routes(&proxy, &["app-2"]).await;
}
