//! The proxy's admin endpoint through a real `tether-proxy` process:
//! `/healthz`, `/readyz` (and the startup rule behind it), `/metrics`
//! checked against the traffic sent, and the status page.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get};
use tokio::time::Instant;

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);

/// An embedded-mode proxy over `backends`, probing them over HTTP.
fn config(backends: &[&FakeBackend]) -> TempConfig {
    let mut toml = String::from(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [log]\nlevel = \"info\"\n",
    );
    for b in backends {
        toml.push_str(&format!(
            "\n[[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
            b.url(),
            b.name()
        ));
    }
    TempConfig::new(&toml)
}

/// One sample per `name{labels}` key, as a Prometheus text parser reads the
/// exposition: `# HELP`/`# TYPE` lines, then `name{k="v",...} value`.
/// Panics on a line that is neither, so a malformed scrape fails the test.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type {kind}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} typed twice"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let name = key.split('{').next().unwrap_or(key);
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && name.starts_with("tether_"),
            "metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "{key} twice"
        );
    }
    samples
}

async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let r = get(admin, path, &[]).await.expect("admin answers");
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_metrics_and_status_page() {
    let a = FakeBackend::start("app-1").await;
    let b = FakeBackend::start("app-2").await;
    b.set_healthy(false);
    let config = config(&[&a, &b]);
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let http = proc.wait_listening("http", START).await;
    let admin = proc.wait_listening("admin", START).await;

    assert_eq!(admin_get(admin, "/healthz").await.0, 200);
    eventually("/readyz says ready", DEADLINE, || async {
        (admin_get(admin, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    // 10 requests go to app-1 (app-2 fails its probe); 3 sticky attempts:
    // one honoured, one for the unhealthy member (ignored), one unparsable.
    for _ in 0..10 {
        let r = get(http, "/", &[]).await.expect("proxy answers");
        assert_eq!(r.status, 200);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    for (target, last_use) in [
        ("app-1", now.as_str()),
        ("app-2", now.as_str()),
        ("app-1", "soon"),
    ] {
        let r = get(
            http,
            "/",
            &[
                ("x-target-server", target),
                ("x-target-server-last-use", last_use),
            ],
        )
        .await
        .expect("proxy answers");
        assert_eq!(r.status, 200);
    }

    let (status, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let m = parse(&text);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{text}"))
    };
    assert_eq!(
        get("tether_requests_total{target=\"app-1\",code=\"2xx\"}"),
        13.0
    );
    assert_eq!(
        get("tether_requests_total{target=\"app-2\",code=\"2xx\"}"),
        0.0
    );
    assert_eq!(get("tether_target_healthy{target=\"app-1\"}"), 1.0);
    assert_eq!(get("tether_target_healthy{target=\"app-2\"}"), 0.0);
    assert_eq!(get("tether_sticky_total{result=\"honoured\"}"), 1.0);
    assert_eq!(get("tether_sticky_total{result=\"ignored\"}"), 1.0);
    assert_eq!(get("tether_sticky_total{result=\"invalid\"}"), 1.0);
    assert_eq!(get("tether_request_duration_seconds_count"), 13.0);
    assert_eq!(
        get("tether_request_duration_seconds_bucket{le=\"+Inf\"}"),
        13.0
    );
    assert!(get("tether_health_version{checker=\"embedded\"}") >= 1.0);
    assert_eq!(get("tether_checkers_live"), 1.0);
    assert_eq!(get("tether_retries_total"), 0.0);
    for name in [
        "tether_upstream_connect_failures_total{target=\"app-1\"}",
        "tether_ejections_total{target=\"app-1\"}",
        "tether_health_updates_total",
        "tether_health_stream_reconnects_total",
        "tether_open_connections",
    ] {
        get(name);
    }

    let (status, page) = admin_get(admin, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<table>") && page.contains("app-1") && page.contains("app-2"),
        "{page}"
    );
    assert_eq!(admin_get(admin, "/nope").await.0, 404);

    // No healthy member: not ready, and it says why.
    a.set_healthy(false);
    eventually("/readyz says not ready", DEADLINE, || async {
        let (status, body) = admin_get(admin, "/readyz").await;
        (status == 503 && body.contains("no healthy member")).then_some(())
    })
    .await;
    drop(proc);
    a.stop().await;
    b.stop().await;
}

/// Startup rule: a member that has no verdict yet holds back traffic (503)
/// and readiness, so the first member probed does not take everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_before_every_member_has_a_first_verdict() {
    let a = FakeBackend::start("app-1").await;
    let slow = FakeBackend::start("app-2").await;
    // app-2's health check answers after 1.5 s, beyond the probe timeout
    // below... so its first verdict (unhealthy) comes after ~1 s.
    slow.set_latency(Duration::from_millis(1500));
    let toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"3s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n\
         [[targets]]\nurl = \"{}\"\nname = \"app-1\"\n[[targets]]\nurl = \"{}\"\nname = \"app-2\"\n",
        a.url(),
        slow.url()
    );
    let config = TempConfig::new(&toml);
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let http = proc.wait_listening("http", START).await;
    let admin = proc.wait_listening("admin", START).await;
    // Ask until the first 200, noting when each answer came.
    let deadline = Instant::now() + DEADLINE;
    let mut sent = Vec::new();
    loop {
        let r = get(http, "/", &[]).await.expect("proxy answers");
        sent.push((epoch_ms(), r.status));
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "before startup ends the answer is 503");
        assert!(Instant::now() < deadline, "the proxy never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // When did app-2 get its first verdict? (`hc` logs `app-2 unknown -> ...`
    // with a millisecond timestamp from the same clock.)
    // The line is written just after the verdict is published, so an
    // answer may come a little before its time stamp; served before the
    // verdict would be ~1 s before it (app-2's probe timeout).
    let line = proc.wait_for_line("app-2 unknown -> ", DEADLINE).await;
    let verdict = log_time_ms(&line);
    const LOG_LAG_MS: u64 = 100;
    for (at, status) in &sent {
        if *status == 200 {
            assert!(
                at + LOG_LAG_MS >= verdict,
                "served at {at}, before app-2's verdict at {verdict}: {sent:?}"
            );
        }
    }
    assert!(
        sent.len() > 1,
        "the test never saw the startup window: {sent:?}"
    );
    let (status, _) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200);
    drop(proc);
    a.stop().await;
    slow.stop().await;
}

fn epoch_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms fit")
}

/// The epoch ms of a log line's `2026-11-30T12:00:00.123Z` timestamp.
fn log_time_ms(line: &str) -> u64 {
    let ts = line
        .split_whitespace()
        .find(|w| w.len() == 24 && w.ends_with('Z'))
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let num = |r: std::ops::Range<usize>| -> i64 { ts[r].parse().expect("digits") };
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    u64::try_from(secs * 1000 + num(20..23)).expect("after 1970")
}

/// A second proxy on a host whose admin port is taken says which listener
/// failed and which key moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_admin_port_is_named_by_its_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr");
    let backend = FakeBackend::start("app-1").await;
    let config = TempConfig::new(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{port}\"\n\
         [[targets]]\nurl = \"{}\"\n",
        backend.url()
    ));
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        tether_testkit::run_to_end("tether-proxy", &["--config", config.path_str()], &[])
    })
    .await
    .expect("run");
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {port} (admin.listen)")),
        "{stderr}"
    );
    drop(taken);
}
