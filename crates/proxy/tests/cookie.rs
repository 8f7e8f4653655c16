//! Signed stickiness over real sockets: the `tether_sticky` cookie between
//! proxies sharing keys, every way a cookie can be bad, key rotation,
//! strict mode, signed headers; and a property test that no cookie or
//! header value routes outside the pool.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Running, backends, checker_config, healthy_checker, now_ms, wait_routes};
use proptest::prelude::*;
use tether_core::{HealthState, HealthUpdate, Member, Pick, RoundRobin, RoutingTable, UpdateKind};
use tether_proxy::config::{ProxyConfig, StickyConfig};
use tether_proxy::sticky::{self, Keys, Mode, Read};
use tether_testkit::{FakeBackend, FakeChecker, Reply, get, status};

const KEY_A: &str = "key-a: 0123456789abcdef0123456789abcdef";
const KEY_B: &str = "key-b: fedcba9876543210fedcba9876543210";
const WINDOW: Duration = Duration::from_secs(30);

fn keys(list: &[&str]) -> Keys {
    Keys::from_bytes(list.iter().map(|k| k.as_bytes()))
}

/// A proxy config fed by `checker` with `[sticky]` in `mode` under `keys`.
fn sticky_config(checker: &FakeChecker, mode: Mode, key_list: &[&str]) -> ProxyConfig {
    let mut c = checker_config(checker);
    c.sticky = StickyConfig {
        mode,
        keys: keys(key_list),
        ..StickyConfig::default()
    };
    c
}

/// Starts a proxy and waits until it routes to every backend.
async fn start(config: ProxyConfig, b: &[FakeBackend]) -> Running {
    let proxy = Running::start_with_admin(config).await;
    let names: Vec<&str> = b.iter().map(|x| x.name()).collect();
    wait_routes(&proxy, &names).await;
    proxy
}

/// The `tether_sticky` value the reply sets, if any.
fn cookie_of(reply: &Reply) -> Option<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix("tether_sticky="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

async fn with_cookie(proxy: &Running, value: &str) -> Reply {
    let cookie = format!("theme=dark; tether_sticky={value}");
    proxy.get_with(&[("cookie", &cookie)]).await
}

/// Who served each of `n` requests carrying the cookie `value`.
async fn spread(proxy: &Running, value: &str, n: usize) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        let r = with_cookie(proxy, value).await;
        assert_eq!(r.status, 200, "{}", r.body);
        *c.entry(r.body).or_insert(0) += 1;
    }
    c
}

/// `tether_sticky_total{result=...}` from the proxy's `/metrics`.
async fn sticky_metric(admin: SocketAddr, result: &str) -> u64 {
    let r = get(admin, "/metrics", &[]).await.expect("metrics");
    let key = format!("tether_sticky_total{{result=\"{result}\"}} ");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in\n{}", r.body))
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_sticks_across_two_proxies_sharing_keys() {
    let b = backends(3).await;
    let checker = healthy_checker(&b).await;
    let first = start(sticky_config(&checker, Mode::Cookie, &[KEY_A]), &b).await;
    let second = start(sticky_config(&checker, Mode::Cookie, &[KEY_A]), &b).await;

    let r = first.get().await;
    let pinned = r.body.clone();
    let set = r
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .expect("a Set-Cookie");
    assert!(
        set.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "plain HTTP: no Secure: {set}"
    );
    let mut cookie = cookie_of(&r).expect("tether_sticky");
    assert!(cookie.starts_with(&format!("{pinned}.")), "{cookie}");

    // Each proxy honours the other's cookie and re-issues it.
    for proxy in [&second, &first, &second, &first, &second] {
        for _ in 0..3 {
            let r = with_cookie(proxy, &cookie).await;
            assert_eq!(r.body, pinned);
            assert_eq!(r.header("x-target-server"), Some(pinned.as_str()));
            cookie = cookie_of(&r).expect("re-issued on every response");
        }
    }
    // The backend got the client's other cookies, never the proxy's.
    let seen: Vec<_> = b
        .iter()
        .flat_map(|x| x.requests())
        .filter_map(|req| req.header("cookie").map(str::to_owned))
        .collect();
    assert!(!seen.is_empty());
    for c in seen {
        assert_eq!(c, "theme=dark");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cookies_are_ignored_and_counted() {
    let b = backends(3).await;
    let checker = healthy_checker(&b).await;
    let config = sticky_config(&checker, Mode::Cookie, &[KEY_A]);
    let proxy = start(config, &b).await;
    let admin = proxy.admin.expect("admin endpoint");

    let k = keys(&[KEY_A]);
    let now = now_ms();
    let good = k.cookie_value("app-1", now).expect("signed");
    let cases = [
        (
            "tampered value",
            good.replacen("app-1", "app-2", 1),
            "tampered",
        ),
        (
            "tampered time",
            good.replacen(&now.to_string(), &(now + 60_000).to_string(), 1),
            "tampered",
        ),
        (
            "expired",
            k.cookie_value("app-1", now - 31_000).expect("signed"),
            "expired",
        ),
        (
            "unknown key",
            keys(&[KEY_B]).cookie_value("app-1", now).expect("signed"),
            "unknown_key",
        ),
        ("garbage", "app-1.soon".to_owned(), "invalid"),
    ];
    for (what, value, _) in &cases {
        // Round robin spreads 9 requests evenly; a honoured cookie would
        // pile them all on app-1.
        let c = spread(&proxy, value, 9).await;
        for name in ["app-1", "app-2", "app-3"] {
            assert_eq!(c.get(name), Some(&3), "{what}: {c:?}");
        }
    }
    // Inside the window (29 s old): honoured.
    let old = k.cookie_value("app-2", now_ms() - 29_000).expect("signed");
    assert_eq!(spread(&proxy, &old, 3).await.get("app-2"), Some(&3));

    assert_eq!(sticky_metric(admin, "tampered").await, 18);
    assert_eq!(sticky_metric(admin, "expired").await, 9);
    assert_eq!(sticky_metric(admin, "unknown_key").await, 9);
    assert_eq!(sticky_metric(admin, "invalid").await, 9);
    assert_eq!(sticky_metric(admin, "honoured").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_keep_sessions_and_sign_with_the_new_key() {
    let b = backends(3).await;
    let checker = healthy_checker(&b).await;
    let old = start(sticky_config(&checker, Mode::Cookie, &[KEY_A]), &b).await;
    let rotated = start(sticky_config(&checker, Mode::Cookie, &[KEY_B, KEY_A]), &b).await;
    let new_only = start(sticky_config(&checker, Mode::Cookie, &[KEY_B]), &b).await;

    let r = old.get().await;
    let pinned = r.body.clone();
    let old_cookie = cookie_of(&r).expect("cookie");
    let (old_id, new_id) = (&keys(&[KEY_A]).ids()[0], &keys(&[KEY_B]).ids()[0]);
    assert!(old_cookie.contains(&format!(".{old_id}.")), "{old_cookie}");

    // The old key still verifies; the answer is signed with the new one.
    let r = with_cookie(&rotated, &old_cookie).await;
    assert_eq!(r.body, pinned);
    let new_cookie = cookie_of(&r).expect("cookie");
    assert!(new_cookie.contains(&format!(".{new_id}.")), "{new_cookie}");

    // Once the old key is gone, only re-issued cookies stick.
    assert_eq!(
        spread(&new_only, &new_cookie, 6).await.get(&pinned),
        Some(&6)
    );
    let c = spread(&new_only, &old_cookie, 9).await;
    assert_eq!(
        c.len(),
        3,
        "the old key is unknown here: round robin: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_a_pin_to_a_member_that_is_down() {
    let b = backends(2).await;
    let checker = healthy_checker(&b).await;
    let mut strict = sticky_config(&checker, Mode::Cookie, &[KEY_A]);
    strict.sticky.strict = true;
    let strict = start(strict, &b).await;
    let lenient = start(sticky_config(&checker, Mode::Cookie, &[KEY_A]), &b).await;
    let k = keys(&[KEY_A]);

    let pin = k.cookie_value("app-1", now_ms()).expect("signed");
    assert_eq!(with_cookie(&strict, &pin).await.body, "app-1");

    let mut down = status("app-1", &b[0].url(), HealthState::Unhealthy);
    down.consecutive_failures = 3;
    checker.send(HealthUpdate {
        version: 2,
        kind: UpdateKind::Change(down),
    });
    wait_routes(&strict, &["app-2"]).await;
    wait_routes(&lenient, &["app-2"]).await;

    let pin = k.cookie_value("app-1", now_ms()).expect("signed");
    let r = with_cookie(&strict, &pin).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.body, r#"{"error":"No healthy servers available"}"#);
    assert!(cookie_of(&r).is_none(), "no member, no cookie");
    assert_eq!(with_cookie(&lenient, &pin).await.body, "app-2");

    // Only a live pin is kept at that price: a stale one, or none, is
    // re-balanced as usual.
    let stale = k.cookie_value("app-1", now_ms() - 40_000).expect("signed");
    assert_eq!(with_cookie(&strict, &stale).await.body, "app-2");
    assert_eq!(strict.get().await.body, "app-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_headers_honour_only_what_the_proxy_signed() {
    let b = backends(3).await;
    let checker = healthy_checker(&b).await;
    let mut config = sticky_config(&checker, Mode::Header, &[KEY_A]);
    config.sticky.sign_headers = true;
    let proxy = start(config, &b).await;

    let r = proxy.get().await;
    let pinned = r.body.clone();
    let last_use = r
        .header("x-target-server-last-use")
        .expect("last use")
        .to_owned();
    let id = &keys(&[KEY_A]).ids()[0];
    assert!(last_use.contains(&format!(".{id}.")), "{last_use}");
    assert!(cookie_of(&r).is_none(), "header mode sets no cookie");

    for _ in 0..6 {
        let r = proxy
            .get_with(&[
                ("x-target-server", &pinned),
                ("x-target-server-last-use", &last_use),
            ])
            .await;
        assert_eq!(r.body, pinned);
    }
    let other = if pinned == "app-1" { "app-2" } else { "app-1" };
    let plain = now_ms().to_string();
    for (target, last) in [
        (pinned.as_str(), plain.as_str()),
        (other, last_use.as_str()),
    ] {
        let mut c: HashMap<String, usize> = HashMap::new();
        for _ in 0..9 {
            let r = proxy
                .get_with(&[
                    ("x-target-server", target),
                    ("x-target-server-last-use", last),
                ])
                .await;
            *c.entry(r.body).or_insert(0) += 1;
        }
        assert_eq!(c.len(), 3, "{target} {last}: round robin: {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_cookie_naming_an_outside_address_never_reaches_it() {
    let outsider = FakeBackend::start("outsider").await;
    let b = backends(2).await;
    let checker = healthy_checker(&b).await;
    let proxy = start(sticky_config(&checker, Mode::Both, &[KEY_A]), &b).await;
    let k = keys(&[KEY_A]);
    let addr = outsider.addr().to_string();
    let url = outsider.url();
    // Even correctly signed (a leaked key): a name is only matched against
    // members.
    for name in [addr.as_str(), url.as_str(), "outsider", "app-1@127.0.0.1:1"] {
        let value = k.cookie_value(name, now_ms()).expect("signed");
        for _ in 0..3 {
            let r = with_cookie(&proxy, &value).await;
            assert!(r.body == "app-1" || r.body == "app-2", "{name}: {}", r.body);
        }
    }
    // Every answer is in, so any contact would already have happened: the
    // proxy never connects to anything after it has answered.
    assert_eq!(
        (outsider.connections(), outsider.hits(), outsider.resets()),
        (0, 0, 0),
        "the outsider was contacted"
    );
}

// === the property: every pick is a member ===

fn table() -> RoutingTable<()> {
    let names = ["app-1", "backend@10.0.0.5:8080", "a.b", "x y", "down"];
    let members = names
        .iter()
        .enumerate()
        .map(|(i, name)| Member {
            name: (*name).to_owned(),
            url: format!("http://127.0.0.1:{}", 5000 + i),
            healthy: *name != "down",
            data: (),
        })
        .collect();
    RoutingTable::new(Some(1), members)
}

/// A value a client could send: printable junk, or a value signed at
/// `now + offset` for some name (a member or not), with one byte changed
/// or not, under the proxy's key or another.
#[derive(Clone, Debug)]
enum Sent {
    Junk(String),
    Signed {
        name: String,
        offset: i64,
        flip: Option<(usize, u8)>,
        proxy_key: bool,
    },
}

impl Sent {
    /// As a cookie value (`name.ms.id.mac`) or a header one (`ms.id.mac`).
    fn render(&self, now: u64, cookie: bool) -> String {
        let (name, offset, flip, proxy_key) = match self {
            Sent::Junk(junk) => return junk.clone(),
            Sent::Signed {
                name,
                offset,
                flip,
                proxy_key,
            } => (name, offset, flip, proxy_key),
        };
        let k = keys(&[if *proxy_key { KEY_A } else { KEY_B }]);
        let ms = now.saturating_add_signed(*offset);
        let v = if cookie {
            k.cookie_value(name, ms)
        } else {
            k.sign(name, ms)
        };
        let mut v = v.expect("signed").into_bytes();
        if let Some((at, byte)) = flip {
            let at = at % v.len();
            v[at] = (*byte).clamp(0x20, 0x7e);
        }
        String::from_utf8_lossy(&v).into_owned()
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("app-1".to_owned()),
        Just("backend@10.0.0.5:8080".to_owned()),
        Just("a.b".to_owned()),
        Just("down".to_owned()),
        Just("http://127.0.0.1:5000".to_owned()),
        Just("http://127.0.0.1:9".to_owned()),
        "[ -~]{1,24}",
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(Sent::Junk),
        (
            name(),
            -40_000i64..10_000,
            proptest::option::weighted(0.3, any::<(usize, u8)>()),
            proptest::bool::weighted(0.8),
        )
            .prop_map(|(name, offset, flip, proxy_key)| Sent::Signed {
                name,
                offset,
                flip,
                proxy_key,
            }),
    ]
}

proptest! {
    #[test]
    fn no_cookie_or_header_value_picks_outside_the_pool(
        cookie in sent(),
        target in name(),
        last_use in sent(),
        mode in prop_oneof![Just(Mode::Header), Just(Mode::Cookie), Just(Mode::Both)],
        sign_headers in any::<bool>(),
        strict in any::<bool>(),
        now in 1_000_000_000_000u64..3_000_000_000_000,
    ) {
        let table = table();
        let rr = RoundRobin::new();
        let k = keys(&[KEY_A]);
        let rules = sticky::Rules {
            mode,
            cookie_name: sticky::DEFAULT_COOKIE_NAME,
            keys: &k,
            sign_headers,
            window: WINDOW,
        };
        let mut headers = http::HeaderMap::new();
        for (name, v) in [
            ("cookie", format!("tether_sticky={}", cookie.render(now, true))),
            ("x-target-server", target),
            ("x-target-server-last-use", last_use.render(now, false)),
        ] {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                headers.insert(name, v);
            }
        }
        let read = sticky::read(&rules, &headers, now);
        let claim = match &read {
            Read::Claim(c) => Some(c.hint()),
            _ => None,
        };
        let pick = tether_core::sticky::decide_pinned(
            claim.as_ref(), now, WINDOW, strict, &table, &rr, |_| true,
        );
        match pick {
            Pick::Sticky(i) => {
                let m = table.member(i).expect("a member");
                let target = claim.expect("a claim").target;
                prop_assert!(m.healthy);
                prop_assert!(m.name == target || m.url == target);
            }
            Pick::Balanced(i) => prop_assert!(table.member(i).is_some_and(|m| m.healthy)),
            Pick::PinnedDown => prop_assert!(strict),
            Pick::NoneHealthy => prop_assert!(false, "the table has healthy members"),
        }
    }
}
