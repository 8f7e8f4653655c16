//! Slow start after a passive ejection, through a real `tether-proxy`
//! process: a member the proxy ejected on its own traffic, while the
//! checker still called it healthy, comes back as cold as one the checker
//! took out, so it ramps over `[health] slow_start` too. Its share is
//! measured per second, as the slow-start test in `balance.rs` does, with
//! the same generous bounds.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{DEADLINE, backends, healthy_checker};
use tether_testkit::{Client, FakeChecker, Proc, TempConfig, eventually, get};
use tokio::task::JoinSet;

const START: Duration = Duration::from_secs(20);

/// A proxy fed by `checker`, with a 3 s ramp and a 1 s first ejection.
fn toml(checker: &FakeChecker) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nslow_start = \"3s\"\n\
         [passive]\nconsecutive_failures = 3\nbase_ejection = \"1s\"\n\
         [health_source]\ncheckers = [\"{}\"]\n\
         [log]\nlevel = \"info\"\n",
        checker.url()
    )
}

/// `clients` keep-alive clients sending `GET /` to `addr` until `duration`
/// has passed; each answer's backend, by the second (since the start) it
/// arrived in.
async fn load_by_second(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
) -> Vec<BTreeMap<String, usize>> {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..clients {
        set.spawn(async move {
            let mut client = Client::connect(addr).await.expect("connect");
            let mut seen = Vec::new();
            while start.elapsed() < duration {
                let reply = client.get("/", &[]).await.expect("answer");
                assert_eq!(reply.status, 200, "{}", reply.body);
                seen.push((start.elapsed().as_secs() as usize, reply.body));
            }
            seen
        });
    }
    let mut seconds = vec![BTreeMap::new(); duration.as_secs() as usize + 1];
    while let Some(seen) = set.join_next().await {
        for (second, name) in seen.expect("client task") {
            *seconds[second].entry(name).or_default() += 1;
        }
    }
    seconds
}

fn share(counts: &BTreeMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

async fn metric(admin: SocketAddr, line: &str) -> Option<u64> {
    let text = get(admin, "/metrics", &[]).await.ok()?.body;
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

/// Whether `/status.json` calls member `name` locally ejected.
async fn ejected(admin: SocketAddr, name: &str) -> Option<bool> {
    let body = get(admin, "/status.json", &[]).await.ok()?.body;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    doc["merged"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["ejected"]
        .as_bool()
}

/// The checker calls app-3 healthy throughout; the proxy ejects it for its
/// reset connections, and once the ejection ends app-3 takes a small share
/// in the first second of the 3 s ramp and about its full share after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_from_a_passive_ejection_ramps() {
    let b = backends(3).await;
    let checker = healthy_checker(&b).await;
    let config = TempConfig::new(&toml(&checker));
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = proc.wait_listening("http", START).await;
    let admin = proc.wait_listening("admin", START).await;
    eventually("the proxy routes to app-3", DEADLINE, || async {
        let reply = get(addr, "/", &[]).await.ok()?;
        (reply.body == "app-3").then_some(())
    })
    .await;

    // Every connection app-3 accepts from now on is reset, and none is
    // kept open, so the proxy's requests to it fail until it ejects it.
    b[2].set_close_after_each(true);
    b[2].set_reset_connections(true);
    let line = "tether_ejections_total{target=\"app-3\"}";
    eventually("the proxy ejects app-3", DEADLINE, || async {
        let _ = get(addr, "/", &[]).await;
        (metric(admin, line).await? >= 1).then_some(())
    })
    .await;
    b[2].set_reset_connections(false);
    b[2].set_close_after_each(false);
    eventually("app-3's ejection ends", DEADLINE, || async {
        (!ejected(admin, "app-3").await?).then_some(())
    })
    .await;

    let seconds = load_by_second(addr, 4, Duration::from_secs(5)).await;
    let shares: Vec<f64> = seconds[..5].iter().map(|s| share(s, "app-3")).collect();
    for (i, s) in seconds.iter().enumerate() {
        println!("second {i}: app-3 share {:.3} of {s:?}", share(s, "app-3"));
    }
    // Weight w beside two full members: a share of w / (2 + w). The first
    // second averages w = 1/6 (about 8 %); after the ramp, 1/3. Without the
    // ramp app-3 would take its third at once.
    assert!(shares[0] < 0.16, "first second: {shares:?}");
    assert!(shares[0] < shares[2], "the share grows: {shares:?}");
    for s in &shares[3..5] {
        assert!((0.25..0.42).contains(s), "after the ramp: {shares:?}");
    }
    assert_eq!(
        metric(admin, line).await,
        Some(1),
        "one ejection: the member was not ejected again while measured"
    );
}
