//! A proxy never connects to an address that neither its config nor its
//! checker gave it as a member: a member the checker announces with a url
//! the proxy cannot use as-is (a path, user info, a query, another scheme,
//! no url at all) is left out and logged, and traffic goes only to the
//! members it can use.

mod common;

use common::{DEADLINE, backends, proxy_for, wait_routes};
use tether_core::HealthState;
use tether_testkit::{FakeChecker, eventually, status};
use tokio::net::TcpListener;

#[tokio::test]
async fn members_with_unusable_urls_are_ignored() {
    let b = backends(1).await;
    // Where a sloppy proxy would connect if it took an announced url apart
    // and kept only its authority: nothing may arrive here.
    let trap = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = trap.local_addr().expect("addr").port();
    let announced = [
        ("with-path", format!("http://127.0.0.1:{port}/admin")),
        ("with-query", format!("http://127.0.0.1:{port}?x=1")),
        ("with-user", format!("http://user@127.0.0.1:{port}")),
        ("other-scheme", format!("ftp://127.0.0.1:{port}")),
        ("no-scheme", format!("127.0.0.1:{port}")),
        ("evil", "http://evil/with/a/path".to_owned()),
        ("garbage", "http://[::1".to_owned()),
    ];
    let checker = FakeChecker::start().await;
    let mut members = vec![status("app-1", &b[0].url(), HealthState::Healthy)];
    members.extend(
        announced
            .iter()
            .map(|(name, url)| status(name, url, HealthState::Healthy)),
    );
    checker.set_snapshot(1, members);
    let proxy = proxy_for(&checker).await;
    wait_routes(&proxy, &["app-1"]).await;

    // Round robin over everything it accepted: only app-1, every time.
    for _ in 0..(announced.len() * 3) {
        let reply = proxy.get().await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "app-1"));
    }
    let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), trap.accept()).await;
    assert!(
        accepted.is_err(),
        "the proxy connected to an address it was never given as a member"
    );

    // A usable member announced later is followed, so the bad ones did not
    // stall the feed.
    let more = backends(2).await;
    checker.send(tether_core::HealthUpdate {
        version: 2,
        kind: tether_core::UpdateKind::Change(status(
            "app-2",
            &more[1].url(),
            HealthState::Healthy,
        )),
    });
    eventually("the proxy follows a later change", DEADLINE, || async {
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(proxy.get().await.body);
        }
        seen.iter().any(|b| b == "app-2").then_some(())
    })
    .await;
}
