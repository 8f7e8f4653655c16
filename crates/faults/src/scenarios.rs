//! The scenarios, one function each. Every one starts its own processes,
//! bounds its run (request caps, deadlines), and returns an [`Outcome`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tether_testkit::raw::RawConn;
use tether_testkit::rss::PeakRss;
use tether_testkit::{Blackhole, FakeBackend, Proc, SynBlackhole, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::Size;
pub use crate::health_plane::{
    checker_cut_from_backends, checker_partition_heals, checker_partition_outlasts_stream,
    every_backend_503, one_of_two_checkers_cut,
};
use crate::load::{Figures, Load, LoadSpec, Res, Sample, ms};
use crate::probe::{self, settle_fds, snapshot};
use crate::relay::Relay;
use crate::report::{Check, Outcome, mib};
use crate::setup::{
    DEADLINE, Echo, Proxy, START, checker_toml, embedded_toml, fed_proxy_toml, free_port,
    wait_serving,
};
pub use crate::upgrade::binary_upgrade;

/// How long descriptors get to return to their baseline after a scenario:
/// the proxy closes an upstream connection idle for its pool timeout (4 s)
/// on a sweep of the same period, so within about 8 s; 15 s leaves room
/// for a loaded machine.
const FD_DEADLINE: Duration = Duration::from_secs(15);

type Scenario = fn(Size) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// Every scenario, in the order `make faults` runs them.
pub fn all() -> Vec<(&'static str, Scenario)> {
    vec![
        ("F1", |s| Box::pin(backend_killed(s))),
        ("F2", |s| Box::pin(backend_hung(s))),
        ("F3", |s| Box::pin(syn_blackhole(s))),
        ("F5", |s| Box::pin(idle_pooled_close(s))),
        ("F6", |s| Box::pin(all_down_then_one(s))),
        ("F7", |s| Box::pin(checker_killed(s))),
        ("F9", |s| Box::pin(checker_hung(s))),
        ("F10", |s| Box::pin(outside_pool(s))),
        ("F11", |s| Box::pin(reloads(s))),
        ("F12", |s| Box::pin(binary_upgrade(s))),
        ("F13", |s| Box::pin(idle_clients(s))),
        ("F14", |s| Box::pin(slow_clients(s))),
        ("F15", |s| Box::pin(large_bodies(s))),
        ("F16", |s| Box::pin(shut_windows(s))),
        ("F17", |s| Box::pin(checker_cut_from_backends(s))),
        ("F18", |s| Box::pin(one_of_two_checkers_cut(s))),
        ("F19", |s| Box::pin(checker_partition_heals(s))),
        ("F19b", |s| Box::pin(checker_partition_outlasts_stream(s))),
        ("F20", |s| Box::pin(every_backend_503(s))),
        ("WS", |s| Box::pin(websocket_backend_death(s))),
    ]
}

/// Catalogue rows this suite does not run, and why.
pub const NOT_DONE: &[(&str, &str)] = &[
    (
        "F4 (503 only to proxy traffic)",
        "covered by the passive-ejection tests in crates/proxy/tests/passive.rs, not measured here",
    ),
    (
        "F8 (checker restarts empty)",
        "checked inside F7: no routing table below the pre-kill health after the restart",
    ),
];

// === helpers ===

pub(crate) fn members_of(echos: &[&Echo]) -> Vec<(String, String)> {
    echos.iter().map(|e| e.member()).collect()
}

pub(crate) fn fake_members(backends: &[&FakeBackend]) -> Vec<(String, String)> {
    backends
        .iter()
        .map(|b| (b.name().to_owned(), b.url()))
        .collect()
}

/// Waits for a proxy output line after `mark` containing `needle`; the time
/// it took, or `None` after `deadline`.
pub(crate) async fn line_within(
    proc: &Proc,
    mark: usize,
    needle: &str,
    deadline: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if proc.lines().iter().skip(mark).any(|l| l.contains(needle)) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Like [`line_within`] for several needles at once: when each first
/// appeared, waiting at most `linger` for the rest once one has.
async fn lines_within(
    proc: &Proc,
    mark: usize,
    needles: &[&str],
    deadline: Duration,
    linger: Duration,
) -> Vec<Option<Duration>> {
    let start = Instant::now();
    let mut seen: Vec<Option<Duration>> = vec![None; needles.len()];
    let mut first: Option<Instant> = None;
    while start.elapsed() < deadline && first.is_none_or(|f| f.elapsed() < linger) {
        let lines = proc.lines();
        for (i, needle) in needles.iter().enumerate() {
            if seen[i].is_none() && lines.iter().skip(mark).any(|l| l.contains(needle)) {
                seen[i] = Some(start.elapsed());
                first.get_or_insert_with(Instant::now);
            }
        }
        if seen.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// Warms the proxy (pools, allocator) with the scenario's own load shape,
/// so the baseline includes what steady traffic holds.
pub(crate) async fn warm(addr: SocketAddr, workers: usize) {
    let _ = Load::start(addr, &LoadSpec::new(workers, Duration::ZERO, 50))
        .wait()
        .await;
}

/// Waits for the proxy's descriptors to return to the baseline (+`slack`);
/// if they do not, notes which sockets it still holds (peers in `known`
/// named). Idle upstream connections count: the pool closes them by
/// itself, so every descriptor must be back, in CI too.
pub(crate) async fn finish_fds(
    o: &mut Outcome,
    pid: u32,
    slack: usize,
    known: &[(String, SocketAddr)],
) {
    let limit = o.before.fds + slack;
    let (after, settled) = settle_fds(pid, limit, FD_DEADLINE).await;
    o.after = after;
    if !settled {
        o.note(format!(
            "fds still held after {} s: {}",
            FD_DEADLINE.as_secs(),
            probe::describe_sockets(pid, known)
        ));
    }
    o.fds_back(settled, limit, FD_DEADLINE);
}

pub(crate) fn fake_known(backends: &[&FakeBackend]) -> Vec<(String, SocketAddr)> {
    backends
        .iter()
        .map(|b| (b.name().to_owned(), b.addr()))
        .collect()
}

pub(crate) fn failed_after(samples: &[Sample], t: Duration) -> usize {
    samples
        .iter()
        .filter(|s| s.start >= t && !matches!(s.res, Res::Ok(_)))
        .count()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

// === F1 ===

/// F1: `kill -9` one of three backends (separate processes) under load.
pub async fn backend_killed(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F1", "backend killed under load (kill -9)");
    let a = Echo::start("f1-a").await;
    let b = Echo::start("f1-b").await;
    let mut victim = Echo::start("f1-victim").await;
    let proxy = Proxy::start(&embedded_toml(&members_of(&[&a, &b, &victim]), "")).await;
    wait_serving(proxy.addr, &["f1-a", "f1-b", "f1-victim"]).await;
    let workers = 4;
    warm(proxy.addr, workers).await;
    o.before = snapshot(proxy.pid());

    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(workers, Duration::from_millis(5), size.pick(400, 2500)),
    );
    tokio::time::sleep(size.pick(Duration::from_secs(1), Duration::from_secs(3))).await;
    let mark = proxy.proc.line_count();
    let kill_at = load.now();
    victim.proc.kill();
    o.detect = line_within(&proxy.proc, mark, "2/3 healthy", DEADLINE).await;
    let samples = load.wait().await;
    let f = Figures::of(&samples);
    let in_flight = samples
        .iter()
        .filter(|s| s.start < kill_at && s.start + s.latency > kill_at)
        .count();
    let new_failed = failed_after(&samples, kill_at);
    let last_to_victim = samples
        .iter()
        .filter(|s| s.res == Res::Ok("f1-victim".to_owned()))
        .map(|s| s.start)
        .max();
    o.note(format!(
        "killed at {}; {in_flight} requests in flight then; last answer from the victim started {}; checker mark-down logged {} after the kill",
        ms(kill_at),
        last_to_victim.map_or("–".into(), ms),
        o.detect.map_or("never".into(), ms),
    ));
    o.check(Check::exact(
        "0 failures for requests sent after the kill (one member healthy)",
        new_failed.to_string(),
        new_failed == 0,
    ));
    o.check(Check::exact(
        "failures ≤ requests in flight on the victim",
        format!("{} ≤ {in_flight}", f.failed()),
        f.failed() <= in_flight,
    ));
    o.load = Some(f);
    let known = [a.clone_addr(), b.clone_addr(), victim.clone_addr()];
    finish_fds(&mut o, proxy.pid(), workers, &known).await;
    o.took = t.elapsed();
    o
}

// === F2 ===

/// F2: `kill -STOP` one of three backends under load, then `kill -CONT`.
pub async fn backend_hung(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F2", "backend hung (SIGSTOP), then resumed");
    let a = Echo::start("f2-a").await;
    let b = Echo::start("f2-b").await;
    let victim = Echo::start("f2-victim").await;
    let proxy = Proxy::start(&embedded_toml(&members_of(&[&a, &b, &victim]), "")).await;
    wait_serving(proxy.addr, &["f2-a", "f2-b", "f2-victim"]).await;
    let workers = 4;
    warm(proxy.addr, workers).await;
    o.before = snapshot(proxy.pid());

    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(workers, Duration::from_millis(5), size.pick(400, 2500)),
    );
    tokio::time::sleep(size.pick(Duration::from_secs(1), Duration::from_secs(3))).await;
    let mark = proxy.proc.line_count();
    let stop_at = load.now();
    probe::signal(victim.proc.pid(), "STOP");
    o.detect = line_within(&proxy.proc, mark, "2/3 healthy", DEADLINE).await;
    let down_at = stop_at + o.detect.unwrap_or(DEADLINE);
    tokio::time::sleep(size.pick(Duration::from_secs(2), Duration::from_secs(5))).await;
    let mark = proxy.proc.line_count();
    probe::signal(victim.proc.pid(), "CONT");
    o.recover = line_within(&proxy.proc, mark, "3/3 healthy", DEADLINE).await;
    let samples = load.wait().await;
    let f = Figures::of(&samples);
    let timeouts: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.res == Res::Status(504))
        .collect();
    let (lo, hi) = timeouts
        .iter()
        .fold((Duration::MAX, Duration::ZERO), |(lo, hi), s| {
            (lo.min(s.latency), hi.max(s.latency))
        });
    let routed_after = samples
        .iter()
        .filter(|s| s.start > down_at && s.start < down_at + Duration::from_secs(60))
        .filter(|s| matches!(s.res, Res::Status(504)))
        .count();
    let want = Duration::from_secs(2);
    let range = if timeouts.is_empty() {
        "no 504".to_owned()
    } else {
        format!("{} 504s, {}–{}", timeouts.len(), ms(lo), ms(hi))
    };
    o.check(Check {
        target: "504s end at the response timeout (2 s) ±10 %".to_owned(),
        measured: range,
        met: timeouts
            .iter()
            .all(|s| s.latency >= want.mul_f64(0.9) && s.latency <= want.mul_f64(1.1)),
        within_bound: timeouts
            .iter()
            .all(|s| s.latency >= want.mul_f64(0.9) && s.latency <= want * 3),
    });
    o.check(Check::time(
        "marked down ≤ 4 s",
        o.detect,
        Duration::from_secs(4),
        Duration::from_secs(10),
    ));
    o.check(Check::exact(
        "0 requests sent to it after mark-down",
        routed_after.to_string(),
        routed_after == 0,
    ));
    let other: usize = f.failed() - timeouts.len();
    o.check(Check::exact(
        "no failure but the 504s",
        other.to_string(),
        other == 0,
    ));
    o.note("recover = SIGCONT until the proxy's table shows 3/3 healthy".to_owned());
    o.load = Some(f);
    let known = [a.clone_addr(), b.clone_addr(), victim.clone_addr()];
    finish_fds(&mut o, proxy.pid(), workers, &known).await;
    o.took = t.elapsed();
    o
}

// === F3 ===

/// F3: one of three members stops answering SYNs: its server goes away and
/// a listener whose one-slot accept queue is full takes its port, so the
/// kernel drops every connect (no refusal, no handshake). The proxy's
/// connect timeout is 500 ms here, so each affected request should cost
/// about that much and then go to another member.
pub async fn syn_blackhole(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F3", "member black-holes SYNs (connect timeout 500 ms)");
    let connect_timeout = Duration::from_millis(500);
    let a = FakeBackend::start("f3-a").await;
    let b = FakeBackend::start("f3-b").await;
    let victim = FakeBackend::start("f3-victim").await;
    let victim_addr = victim.addr();
    let toml = embedded_toml(&fake_members(&[&a, &b, &victim]), "")
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"500ms\"");
    let proxy = Proxy::start(&toml).await;
    wait_serving(proxy.addr, &["f3-a", "f3-b", "f3-victim"]).await;
    let workers = 4;
    warm(proxy.addr, workers).await;
    o.before = snapshot(proxy.pid());

    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(workers, Duration::from_millis(5), size.pick(400, 2500)),
    );
    tokio::time::sleep(size.pick(Duration::from_secs(1), Duration::from_secs(3))).await;
    let mark = proxy.proc.line_count();
    let gone_at = load.now();
    let watch = Instant::now();
    let (seen, (hole, hole_ready)) = tokio::join!(
        lines_within(
            &proxy.proc,
            mark,
            &["ejecting f3-victim", "2/3 healthy"],
            DEADLINE,
            Duration::from_secs(2),
        ),
        async {
            victim.stop().await;
            let hole = SynBlackhole::start_on(victim_addr)
                .await
                .expect("a SYN black hole on the victim's port");
            (hole, watch.elapsed())
        }
    );
    let (ejected, marked_down) = (seen[0], seen[1]);
    o.detect = seen.iter().flatten().min().copied();
    let samples = load.wait().await;
    let f = Figures::of(&samples);
    let slow = connect_timeout.mul_f64(0.8);
    let affected: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= gone_at && s.latency >= slow)
        .collect();
    let (lo, hi) = affected
        .iter()
        .fold((Duration::MAX, Duration::ZERO), |(lo, hi), s| {
            (lo.min(s.latency), hi.max(s.latency))
        });
    let detected_at = gone_at + o.detect.unwrap_or(DEADLINE);
    let after_detect = affected.iter().filter(|s| s.start > detected_at).count();
    let range = if affected.is_empty() {
        "none".to_owned()
    } else {
        format!("{} requests, {}–{}", affected.len(), ms(lo), ms(hi))
    };
    o.note(format!(
        "victim stopped at {}; its port confirmed dropping SYNs {} later (a connect timed out there); passive ejection logged {} after the stop, checker mark-down {}; affected requests (≥ {}): {range}",
        ms(gone_at),
        ms(hole_ready),
        ejected.map_or("never".into(), ms),
        marked_down.map_or("never".into(), ms),
        ms(slow),
    ));
    o.check(Check::exact(
        "0 failures (one member healthy; retry after the connect timeout)",
        f.failures(),
        f.failed() == 0,
    ));
    // With no request meeting the black hole, nothing about connect
    // timeouts was measured: that is a miss, not a pass.
    let met_hole = !affected.is_empty();
    o.check(Check {
        target: "affected requests (at least one) cost ≤ connect timeout (500 ms) + 10 % + retry"
            .to_owned(),
        measured: range,
        met: met_hole
            && affected
                .iter()
                .all(|s| s.latency <= connect_timeout.mul_f64(1.1)),
        within_bound: met_hole && affected.iter().all(|s| s.latency <= connect_timeout * 3),
    });
    o.check(Check::time(
        "taken out of rotation (ejection or mark-down) ≤ 1 s",
        o.detect,
        Duration::from_secs(1),
        Duration::from_secs(5),
    ));
    o.check(Check::exact(
        "0 requests delayed by it after that",
        after_detect.to_string(),
        after_detect == 0,
    ));
    o.load = Some(f);
    let mut known = fake_known(&[&a, &b]);
    known.push(("f3-victim".to_owned(), victim_addr));
    finish_fds(&mut o, proxy.pid(), workers, &known).await;
    drop(hole);
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

// === F5 ===

/// F5: the backend closes idle keep-alive connections after 1 s; clients
/// send with ~1 s gaps, so the proxy's pooled connection dies just as it
/// is reused. Then a certain version: every reused connection drops its
/// request unanswered.
pub async fn idle_pooled_close(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F5", "backend closes idle pooled connections");
    let backend = FakeBackend::start("f5").await;
    let proxy = Proxy::start(&embedded_toml(&fake_members(&[&backend]), "")).await;
    wait_serving(proxy.addr, &["f5"]).await;
    warm(proxy.addr, 3).await;
    o.before = snapshot(proxy.pid());
    backend.set_keep_alive_timeout(Some(Duration::from_secs(1)));
    let mut loads = Vec::new();
    for (i, gap) in [990u64, 1000, 1010].into_iter().enumerate() {
        let spec = LoadSpec::new(1, Duration::from_millis(gap), size.pick(6, 30));
        loads.push(Load::start(proxy.addr, &spec));
        tokio::time::sleep(Duration::from_millis(300 + i as u64 * 7)).await;
    }
    let mut samples = Vec::new();
    for l in loads {
        samples.extend(l.wait().await);
    }
    let race = Figures::of(&samples);
    backend.set_keep_alive_timeout(None);
    backend.set_drop_reused_requests(true);
    let certain = Load::start(
        proxy.addr,
        &LoadSpec::new(1, Duration::from_millis(5), size.pick(50, 200)),
    )
    .wait()
    .await;
    let certain_f = Figures::of(&certain);
    backend.set_drop_reused_requests(false);
    o.note(format!(
        "race phase (gaps 0.99–1.01 s vs the backend's 1 s keep-alive): {race}"
    ));
    o.note(format!(
        "certain phase (every reused upstream connection drops its request; {} dropped): {certain_f}",
        backend.dropped()
    ));
    o.check(Check::exact(
        "0 errors from reused dead connections (race)",
        race.failures(),
        race.failed() == 0,
    ));
    o.check(Check::exact(
        "0 errors when every reused connection is dead (idempotent GET)",
        certain_f.failures(),
        certain_f.failed() == 0,
    ));
    samples.extend(certain);
    o.load = Some(Figures::of(&samples));
    finish_fds(&mut o, proxy.pid(), 3, &fake_known(&[&backend])).await;
    backend.stop().await;
    o.took = t.elapsed();
    o
}

// === F6 ===

/// F6: both backends stop; then one comes back on its port.
pub async fn all_down_then_one(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F6", "all backends down, then one back");
    let a = FakeBackend::start("f6-a").await;
    let b = FakeBackend::start("f6-b").await;
    let a_addr = a.addr();
    let b_addr = b.addr();
    let proxy = Proxy::start(&embedded_toml(&fake_members(&[&a, &b]), "")).await;
    wait_serving(proxy.addr, &["f6-a", "f6-b"]).await;
    warm(proxy.addr, 2).await;
    o.before = snapshot(proxy.pid());
    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(2, Duration::from_millis(10), usize::MAX),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = proxy.proc.line_count();
    let down_at = load.now();
    a.stop().await;
    b.stop().await;
    o.detect = line_within(&proxy.proc, mark, "0/2 healthy", DEADLINE).await;
    let detected_at = down_at + o.detect.unwrap_or(DEADLINE);
    tokio::time::sleep(size.pick(Duration::from_secs(2), Duration::from_secs(5))).await;
    let back_at = load.now();
    let a = FakeBackend::start_on("f6-a", a_addr)
        .await
        .expect("f6-a back on its port");
    let start = Instant::now();
    while start.elapsed() < DEADLINE && a.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;
    let down: Vec<Sample> = samples
        .iter()
        .filter(|s| s.start > detected_at && s.start + s.latency < back_at)
        .cloned()
        .collect();
    let down_f = Figures::of(&down);
    o.recover = samples
        .iter()
        .find(|s| s.start >= back_at && matches!(s.res, Res::Ok(_)))
        .map(|s| s.start + s.latency - back_at);
    let all_503 = down.iter().all(|s| s.res == Res::Status(503));
    o.note(format!("while down (after mark-down): {down_f}"));
    o.check(Check {
        target: "503 with p99 < 5 ms while down".to_owned(),
        measured: format!("{} (all 503: {all_503})", ms(down_f.p99)),
        met: all_503 && down_f.p99 < Duration::from_millis(5),
        within_bound: all_503 && down_f.p99 < Duration::from_millis(50),
    });
    o.check(Check::time(
        "first 2xx ≤ rise×interval + 200 ms (400 ms) after it is back",
        o.recover,
        Duration::from_millis(400),
        Duration::from_secs(3),
    ));
    o.load = Some(Figures::of(&samples));
    finish_fds(
        &mut o,
        proxy.pid(),
        2,
        &[("f6-a".to_owned(), a_addr), ("f6-b".to_owned(), b_addr)],
    )
    .await;
    a.stop().await;
    o.took = t.elapsed();
    o
}

// === F7 (+F8) ===

/// F7: `kill -9` the checker under load, restart it on its port after an
/// outage; F8 on the way: the restarted checker must not flap the table.
pub async fn checker_killed(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F7", "checker killed and restarted under load");
    let a = FakeBackend::start("f7-a").await;
    let b = FakeBackend::start("f7-b").await;
    let grpc = free_port();
    let cconf = tether_testkit::TempConfig::new(&checker_toml(grpc, &fake_members(&[&a, &b])));
    let mut checker = Proc::spawn("tether-checker", &["--config", cconf.path_str()], &[]);
    checker.wait_listening("grpc listening", START).await;
    let proxy = Proxy::start(&fed_proxy_toml(grpc)).await;
    wait_serving(proxy.addr, &["f7-a", "f7-b"]).await;
    warm(proxy.addr, 3).await;
    o.before = snapshot(proxy.pid());
    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(3, Duration::from_millis(10), usize::MAX),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = proxy.proc.line_count();
    checker.kill();
    o.detect = line_within(&proxy.proc, mark, "keeping the last table", DEADLINE).await;
    let outage = size.pick(Duration::from_secs(3), Duration::from_secs(30));
    tokio::time::sleep(outage).await;
    let mark = proxy.proc.line_count();
    let checker = Proc::spawn("tether-checker", &["--config", cconf.path_str()], &[]);
    checker.wait_listening("grpc listening", START).await;
    o.recover = line_within(&proxy.proc, mark, "subscribed to", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.finish().await;
    let f = Figures::of(&samples);
    let flaps: Vec<String> = proxy
        .proc
        .lines()
        .iter()
        .skip(mark)
        .filter(|l| l.contains("routing table") && !l.contains("2/2 healthy"))
        .cloned()
        .collect();
    o.note(format!(
        "outage {} s; detect = kill until the proxy logs the broken stream; recover = restarted checker listening until the proxy logs `subscribed`",
        outage.as_secs()
    ));
    o.check(Check::exact(
        "0 failed requests while the checker is down or restarting",
        f.failures(),
        f.failed() == 0,
    ));
    o.check(Check::time(
        "resubscribed ≤ 2 s after the checker's return",
        o.recover,
        Duration::from_secs(2),
        Duration::from_secs(8),
    ));
    o.check(Check::exact(
        "F8: 0 flaps below 2/2 healthy after the restart",
        flaps.len().to_string(),
        flaps.is_empty(),
    ));
    o.load = Some(f);
    finish_fds(&mut o, proxy.pid(), 3, &fake_known(&[&a, &b])).await;
    drop(checker);
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

// === F9 ===

/// F9: the proxy reaches the checker through a relay that freezes (no byte
/// either way, sockets open): a hung checker or a silent partition.
pub async fn checker_hung(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F9", "checker hung (frozen relay), then healed");
    let a = FakeBackend::start("f9-a").await;
    let b = FakeBackend::start("f9-b").await;
    let grpc = free_port();
    let cconf = tether_testkit::TempConfig::new(&checker_toml(grpc, &fake_members(&[&a, &b])));
    let checker = Proc::spawn("tether-checker", &["--config", cconf.path_str()], &[]);
    checker.wait_listening("grpc listening", START).await;
    let relay = Relay::start(grpc).await;
    let proxy = Proxy::start(&fed_proxy_toml(relay.addr())).await;
    wait_serving(proxy.addr, &["f9-a", "f9-b"]).await;
    warm(proxy.addr, 3).await;
    o.before = snapshot(proxy.pid());
    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(3, Duration::from_millis(10), usize::MAX),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = proxy.proc.line_count();
    relay.freeze(true);
    o.detect = line_within(
        &proxy.proc,
        mark,
        "keeping the last table",
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(size.pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    let mark = proxy.proc.line_count();
    relay.freeze(false);
    o.recover = line_within(&proxy.proc, mark, "subscribed to", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;
    let f = Figures::of(&samples);
    o.note(format!(
        "detect = freeze until the proxy logs the dead stream (HTTP/2 keep-alive 5 s + 3 s); recover = thaw until `subscribed`; relay accepted {} connections",
        relay.accepted()
    ));
    o.check(Check::exact(
        "0 failed requests while the checker is hung",
        f.failures(),
        f.failed() == 0,
    ));
    o.check(Check::time(
        "dead stream detected ≤ 10 s",
        o.detect,
        Duration::from_secs(10),
        Duration::from_secs(15),
    ));
    o.check(Check::time(
        "resync ≤ 2 s after heal",
        o.recover,
        Duration::from_secs(2),
        Duration::from_secs(8),
    ));
    o.load = Some(f);
    finish_fds(&mut o, proxy.pid(), 3, &fake_known(&[&a, &b])).await;
    drop(checker);
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

// === F10 ===

/// F10: requests whose sticky header, cookie, Host or absolute URI name an
/// address outside the pool (a listener that counts connections).
pub async fn outside_pool(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F10", "sticky hints naming an address outside the pool");
    let a = FakeBackend::start("f10-a").await;
    let b = FakeBackend::start("f10-b").await;
    let outside = Blackhole::start().await;
    let key = std::env::temp_dir().join(format!("tether-faults-{}.key", std::process::id()));
    std::fs::write(&key, "f10-sticky-key-of-at-least-32-bytes-0123456789").expect("write key");
    let toml = format!(
        "{}\n[sticky]\nenabled = true\nwindow = \"30s\"\nmode = \"both\"\nkeys = [\"file:{}\"]\n",
        embedded_toml(&fake_members(&[&a, &b]), ""),
        key.display()
    );
    let proxy = Proxy::start(&toml).await;
    wait_serving(proxy.addr, &["f10-a", "f10-b"]).await;
    o.before = snapshot(proxy.pid());
    let out = outside.addr().to_string();
    let now = now_ms().to_string();
    let names = [
        out.clone(),
        format!("http://{out}"),
        format!("localhost:{}", outside.addr().port()),
        format!("f10-a@{out}"),
        format!("{out}/"),
        "outside".to_owned(),
    ];
    let rounds = size.pick(10, 100);
    let mut samples = Vec::new();
    let t0 = Instant::now();
    for _ in 0..rounds {
        for name in &names {
            let started = Instant::now();
            let cookie = format!("tether_sticky={name}.{now}.00000000.{}", "A".repeat(43));
            let headers = [
                ("x-target-server", name.as_str()),
                ("x-target-server-last-use", now.as_str()),
                ("cookie", cookie.as_str()),
            ];
            let res = match get(proxy.addr, "/", &headers).await {
                Ok(r) if r.status == 200 => Res::Ok(r.body),
                Ok(r) => Res::Status(r.status),
                Err(e) => Res::Conn(e.to_string()),
            };
            samples.push(Sample {
                start: started - t0,
                latency: started.elapsed(),
                res,
                header: None,
            });
        }
        // Host and absolute-form URI naming the outside address.
        for req in [
            format!("GET / HTTP/1.1\r\nHost: {out}\r\nConnection: close\r\n\r\n"),
            format!("GET http://{out}/ HTTP/1.1\r\nHost: {out}\r\nConnection: close\r\n\r\n"),
        ] {
            let started = Instant::now();
            let res = match RawConn::connect(proxy.addr, Duration::from_secs(5)).await {
                Ok(mut c) => match c.send(req.as_bytes()).await {
                    Ok(()) => match c.read_response().await {
                        Ok(r) if r.status == 200 => {
                            Res::Ok(String::from_utf8_lossy(&r.body).into())
                        }
                        Ok(r) => Res::Status(r.status),
                        Err(e) => Res::Conn(e.to_string()),
                    },
                    Err(e) => Res::Conn(e.to_string()),
                },
                Err(e) => Res::Conn(e.to_string()),
            };
            samples.push(Sample {
                start: started - t0,
                latency: started.elapsed(),
                res,
                header: None,
            });
        }
    }
    let f = Figures::of(&samples);
    let accepted = outside.accepted();
    o.note(format!(
        "{} variants × {rounds}: x-target-server / cookie naming {out} in 6 spellings, Host and absolute URI naming it; statuses other than 200 are the proxy refusing, not a connection",
        names.len() + 2
    ));
    o.check(Check::exact(
        "0 connections to the outside address",
        accepted.to_string(),
        accepted == 0,
    ));
    o.load = Some(f);
    finish_fds(&mut o, proxy.pid(), 2, &fake_known(&[&a, &b])).await;
    let _ = std::fs::remove_file(&key);
    outside.stop().await;
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

// === F11 ===

/// F11: 20 SIGHUP reloads (add, remove, change settings) under load.
pub async fn reloads(_size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("F11", "20 SIGHUP reloads under load");
    let a = FakeBackend::start("f11-a").await;
    let b = FakeBackend::start("f11-b").await;
    let c = FakeBackend::start("f11-c").await;
    let toml = |ms: &[&FakeBackend], retries: u32| {
        embedded_toml(&fake_members(ms), &format!("# retries {retries}\n"))
            .replace("retries = 2", &format!("retries = {retries}"))
    };
    let proxy = Proxy::start(&toml(&[&a, &b], 2)).await;
    wait_serving(proxy.addr, &["f11-a", "f11-b"]).await;
    warm(proxy.addr, 3).await;
    o.before = snapshot(proxy.pid());
    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(3, Duration::from_millis(5), usize::MAX),
    );
    let steps: [(&[&FakeBackend], u32); 4] = [
        (&[&a, &b, &c], 2),
        (&[&b, &c], 2),
        (&[&b, &c], 1),
        (&[&a, &b], 2),
    ];
    let mut applied = 0;
    for n in 1..=20usize {
        let (ms, retries) = steps[(n - 1) % steps.len()];
        std::fs::write(proxy.config.path(), toml(ms, retries)).expect("write config");
        let mark = proxy.proc.line_count();
        probe::signal(proxy.pid(), "HUP");
        if line_within(&proxy.proc, mark, &format!("reload #{n} applied"), DEADLINE)
            .await
            .is_some()
        {
            applied += 1;
        }
        // Probes of an added member (interval 200 ms, rise 1) and the load
        // on each membership.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let samples = load.finish().await;
    let f = Figures::of(&samples);
    o.note(format!("{applied} of 20 reloads applied; membership cycles a,b → a,b,c → b,c → b,c (retries 1) → a,b"));
    o.check(Check::exact(
        "0 failures across 20 reloads",
        f.failures(),
        f.failed() == 0 && applied == 20,
    ));
    o.load = Some(f);
    finish_fds(&mut o, proxy.pid(), 3 + 3, &fake_known(&[&a, &b, &c])).await;
    for m in [a, b, c] {
        m.stop().await;
    }
    o.took = t.elapsed();
    o
}

// === F13 ===

/// F13: many idle client connections held open, normal traffic beside them.
pub async fn idle_clients(size: Size) -> Outcome {
    let t = Instant::now();
    let n = size.pick(1_000, 10_000);
    let mut o = Outcome::new("F13", "idle client connections beside normal traffic");
    let a = FakeBackend::start("f13-a").await;
    let b = FakeBackend::start("f13-b").await;
    let toml = embedded_toml(&fake_members(&[&a, &b]), "header_read_timeout = \"120s\"\n");
    let proxy = Proxy::start(&toml).await;
    wait_serving(proxy.addr, &["f13-a", "f13-b"]).await;
    warm(proxy.addr, 2).await;
    let spec = LoadSpec::new(2, Duration::from_millis(2), size.pick(200, 1000));
    let base = Figures::of(&Load::start(proxy.addr, &spec).wait().await);
    o.before = snapshot(proxy.pid());
    let counters = [
        "ListenOverflows",
        "TCPReqQFullDoCookies",
        "SyncookiesRecv",
        "SyncookiesFailed",
    ];
    let kernel_before = probe::tcp_ext(&counters);
    let mut idle = Vec::with_capacity(n);
    let mut errors = 0;
    while idle.len() + errors < n {
        let batch = (n - idle.len() - errors).min(500);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            set.spawn(TcpStream::connect(proxy.addr));
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(s)) => idle.push(s),
                _ => errors += 1,
            }
        }
    }
    // Let the proxy accept them all.
    let want = o.before.fds + idle.len();
    let _ = probe_wait(proxy.pid(), |s| s.fds >= want, Duration::from_secs(20)).await;
    let held = snapshot(proxy.pid());
    let kernel: Vec<u64> = probe::tcp_ext(&counters)
        .iter()
        .zip(&kernel_before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let client_side = probe::sockets_on(proxy.addr, "established", false);
    let proxy_side = probe::sockets_on(proxy.addr, "established", true);
    let syn_recv = probe::sockets_on(proxy.addr, "syn-recv", true);
    let backlog = probe::listen_backlog(proxy.addr);
    let busy = Figures::of(&Load::start(proxy.addr, &spec).wait().await);
    // Per connection the proxy really accepted (its descriptors), not per
    // connect that returned: the kernel completes handshakes the proxy has
    // not accepted yet.
    let accepted = held.fds.saturating_sub(o.before.fds);
    let per_conn = held.rss.saturating_sub(o.before.rss) / (accepted.max(1) as u64);
    o.note(format!(
        "{} idle connections open ({errors} failed to connect); proxy while holding them: rss {}, fds {}; {} per idle connection",
        idle.len(),
        mib(held.rss),
        held.fds,
        kib(per_conn)
    ));
    o.note(format!(
        "connects in batches of 500 against the proxy's accept queue of {} (somaxconn {}); while they ran the kernel counted {} accept-queue overflows, {} SYN-cookie answers (SYN queue full), {} cookie ACKs accepted, {} rejected; after 20 s: {client_side} established on the client side, {proxy_side} on the proxy's, {syn_recv} still in SYN-RECV",
        backlog.map_or("?".to_owned(), |b| b.to_string()),
        read_sys("/proc/sys/net/core/somaxconn"),
        kernel[0],
        kernel[1],
        kernel[2],
        kernel[3],
    ));
    if client_side > proxy_side {
        o.note(format!(
            "why not all: {} connections are open on the client side only. A handshake the kernel finished with a SYN cookie keeps no state on the proxy's side; when its final ACK finds the accept queue full the kernel drops it (tcp_abort_on_overflow {}), nothing retransmits, and a client that never sends a byte never learns. The proxy's listen backlog sets that queue (4096 since the F13 finding; tokio's default was 128)",
            client_side.saturating_sub(proxy_side),
            read_sys("/proc/sys/net/ipv4/tcp_abort_on_overflow"),
        ));
    }
    o.note(format!("active traffic alone: {base}"));
    o.note(format!(
        "active traffic beside the idle connections: {busy}"
    ));
    o.note(format!(
        "fd limit: inherited from the suite (`make faults` raises the soft `ulimit -n` to 65536 or the hard limit); nf_conntrack_count {} of max {} before the run",
        read_sys("/proc/sys/net/netfilter/nf_conntrack_count"),
        read_sys("/proc/sys/net/netfilter/nf_conntrack_max")
    ));
    // Counted on the proxy's port with `ss`, not by its fds: pooled upstream
    // connections closing meanwhile would skew a count of descriptors.
    o.check(Check::exact(
        "all idle connections accepted by the proxy within 20 s",
        format!("{proxy_side} of {n} ({errors} connects failed)"),
        errors == 0 && proxy_side >= n,
    ));
    o.check(Check::exact(
        "< 16 KiB RSS per idle connection",
        kib(per_conn),
        per_conn < 16 * 1024,
    ));
    let ratio = busy.p99.as_secs_f64() / base.p99.as_secs_f64().max(1e-6);
    o.check(Check {
        target: "active p99 within +10 % of baseline".to_owned(),
        measured: format!("{} vs {} (×{ratio:.2})", ms(busy.p99), ms(base.p99)),
        met: ratio <= 1.1,
        within_bound: busy.p99 <= base.p99 * 3 + Duration::from_millis(50),
    });
    o.check(Check::exact(
        "0 failed active requests",
        busy.failures(),
        busy.failed() == 0,
    ));
    o.load = Some(busy);
    drop(idle);
    finish_fds(&mut o, proxy.pid(), 2, &fake_known(&[&a, &b])).await;
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

async fn probe_wait(pid: u32, pred: impl Fn(&probe::Snapshot) -> bool, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if pred(&snapshot(pid)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn read_sys(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

// === F14 ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// A request head, one header line a second, never finished.
    Slowloris,
    /// A complete head promising 1 MB, one body byte a second.
    SlowBody,
    /// Asks for 64 MiB and never reads.
    SlowReader,
    /// Asks for 64 MiB and reads 1 KiB a second.
    SlowReader1k,
    /// A plain request to a backend that takes a minute to answer (only
    /// in the per-connection memory figures).
    SlowBackend,
}

/// One attacking connection; returns when the proxy closed it, or `None`
/// if it was still open when the task was stopped.
async fn attack(addr: SocketAddr, kind: Attack, t0: Instant) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let head: &[u8] = match kind {
        Attack::Slowloris => b"GET / HTTP/1.1\r\nHost: x\r\n",
        Attack::SlowBody => b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
        Attack::SlowReader | Attack::SlowReader1k => {
            b"GET /bytes/67108864 HTTP/1.1\r\nHost: x\r\n\r\n"
        }
        Attack::SlowBackend => b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    s.write_all(head).await.ok()?;
    match kind {
        // Never read; hold the socket until aborted.
        Attack::SlowReader | Attack::SlowBackend => std::future::pending::<()>().await,
        Attack::SlowReader1k => loop {
            let mut kib = [0u8; 1024];
            match s.read(&mut kib).await {
                Ok(0) | Err(_) => return Some(t0.elapsed()),
                Ok(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        },
        Attack::Slowloris | Attack::SlowBody => {}
    }
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(t0.elapsed()),
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let bytes: &[u8] = if kind == Attack::Slowloris { b"X-a: b\r\n" } else { b"x" };
                if s.write_all(bytes).await.is_err() {
                    return Some(t0.elapsed());
                }
            }
        }
    }
}

/// What one attacking connection of `kind` costs the proxy: a fresh proxy,
/// `n` such connections held until the proxy has each (its descriptors
/// say so, and the slow readers' answers have filled what they can), the
/// RSS they added divided by `n`. One kind per proxy process, so memory
/// freed by one kind cannot hide the next one's.
async fn rss_per_connection(kind: Attack, n: usize, backend: &FakeBackend) -> (u64, usize) {
    // The default response timeout: the suite's 2 s would answer a slow
    // body with 504 before it could be measured.
    let toml = embedded_toml(&fake_members(&[backend]), "")
        .replace("response_timeout = \"2s\"", "response_timeout = \"30s\"");
    let proxy = Proxy::start(&toml).await;
    wait_serving(proxy.addr, &[backend.name()]).await;
    warm(proxy.addr, 1).await;
    let before = snapshot(proxy.pid());
    let t0 = Instant::now();
    let mut attacks = JoinSet::new();
    for _ in 0..n {
        let addr = proxy.addr;
        attacks.spawn(async move { attack(addr, kind, t0).await });
    }
    // Every connection accepted (and, for the slow reader, whose request
    // reaches a backend, its upstream connection open): a descriptor each,
    // two for those. A slow body is read ahead and holds no backend.
    let per = match kind {
        Attack::Slowloris | Attack::SlowBody => 1,
        Attack::SlowReader | Attack::SlowReader1k | Attack::SlowBackend => 2,
    };
    if kind == Attack::SlowBackend {
        backend.set_latency(Duration::from_secs(60));
    }
    // A little slack: the warm-up's own connections may close meanwhile
    // (they did, and a wait for the exact count then ran past the header
    // read timeout that cuts the slowloris connections: "0 fds").
    let _ = probe_wait(
        proxy.pid(),
        |s| s.fds + 10 >= before.fds + per * n,
        DEADLINE,
    )
    .await;
    // The state each holds once it waits: RSS steady (within 1 % over
    // half a second) once the slow readers' buffers have filled; at most
    // 3 s, well inside the header read timeout (10 s) that would cut the
    // slowloris connections.
    let mut held = snapshot(proxy.pid());
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = snapshot(proxy.pid());
        let steady = now.rss.abs_diff(held.rss) * 100 <= held.rss;
        held = now;
        if steady {
            break;
        }
    }
    attacks.abort_all();
    while attacks.join_next().await.is_some() {}
    let grown = held.rss.saturating_sub(before.rss);
    (grown / n.max(1) as u64, held.fds.saturating_sub(before.fds))
}

/// F14: slowloris, slow body and slow reader connections beside normal
/// clients.
pub async fn slow_clients(size: Size) -> Outcome {
    let t = Instant::now();
    let per_kind = size.pick(100, 500);
    let mut o = Outcome::new(
        "F14",
        "slowloris, slow body, slow reader beside normal clients",
    );
    let a = FakeBackend::start("f14-a").await;
    let b = FakeBackend::start("f14-b").await;
    // A body_timeout inside the full run's 13 s, so the slow bodies' cut
    // is seen (a trickle is below the minimum body rate).
    let proxy = Proxy::start(&embedded_toml(
        &fake_members(&[&a, &b]),
        &format!("body_timeout = \"{}s\"", SLOW_BODY_TIMEOUT.as_secs()),
    ))
    .await;
    wait_serving(proxy.addr, &["f14-a", "f14-b"]).await;
    warm(proxy.addr, 2).await;
    let spec = LoadSpec::new(2, Duration::from_millis(2), size.pick(200, 1000));
    let base = Figures::of(&Load::start(proxy.addr, &spec).wait().await);
    o.before = snapshot(proxy.pid());
    let t0 = Instant::now();
    let mut attacks: JoinSet<(Attack, Option<Duration>)> = JoinSet::new();
    let addr = proxy.addr;
    for kind in [Attack::Slowloris, Attack::SlowBody, Attack::SlowReader] {
        for _ in 0..per_kind {
            attacks.spawn(async move { (kind, attack(addr, kind, t0).await) });
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = Figures::of(&Load::start(proxy.addr, &spec).wait().await);
    let held = snapshot(proxy.pid());
    // Full runs wait past the header timeout (10 s) to see the cut.
    if size == Size::Full {
        let until = t0 + Duration::from_secs(13);
        tokio::time::sleep_until(until).await;
    }
    attacks.abort_all();
    let mut closed: Vec<(Attack, Duration)> = Vec::new();
    while let Some(r) = attacks.join_next().await {
        if let Ok((kind, Some(at))) = r {
            closed.push((kind, at));
        }
    }
    let summary = |kind: Attack| {
        let times: Vec<Duration> = closed.iter().filter(|c| c.0 == kind).map(|c| c.1).collect();
        match (times.iter().min(), times.iter().max()) {
            (Some(lo), Some(hi)) => format!(
                "{} of {per_kind} cut, at {}–{}",
                times.len(),
                ms(*lo),
                ms(*hi)
            ),
            _ => format!("0 of {per_kind} cut"),
        }
    };
    o.note(format!("normal clients alone: {base}"));
    o.note(format!(
        "normal clients beside {} attack connections: {during}",
        3 * per_kind
    ));
    o.note(format!(
        "proxy while attacked: rss {}, fds {}; slowloris {}; slow body {}",
        mib(held.rss),
        held.fds,
        summary(Attack::Slowloris),
        summary(Attack::SlowBody)
    ));
    // Memory per attacking connection, one kind per fresh proxy, on the
    // binaries this suite runs: release by default (`make faults`); debug
    // ones hold several times as much, so their figure says so.
    let profile = if cfg!(debug_assertions) {
        "debug binaries, not a memory figure: several times a release build's; \
         `make faults` measures release"
    } else {
        "release binaries"
    };
    let mut per_kind = Vec::new();
    let mut per_conn = Vec::new();
    // The slow backend's own (its answers take a minute; dropped, not
    // stopped, so nothing waits for them).
    let slow = FakeBackend::start("f14-slow").await;
    for kind in [
        Attack::Slowloris,
        Attack::SlowBody,
        Attack::SlowReader,
        Attack::SlowReader1k,
        Attack::SlowBackend,
    ] {
        let backend = if kind == Attack::SlowBackend {
            &slow
        } else {
            &a
        };
        let (per, fds) = rss_per_connection(kind, per_kind_n(size), backend).await;
        per_kind.push(format!("{kind:?} {} ({fds} fds)", kib(per)));
        per_conn.push((kind, per));
    }
    o.note(format!(
        "RSS per attacking connection ({profile}; {} of a kind alone on a fresh proxy): {}",
        per_kind_n(size),
        per_kind.join(", ")
    ));
    // Issue 18's goals, on release binaries only (a debug build's futures
    // are several times the size). nginx on the same probe: 9.5, 13.5, 108.
    if !cfg!(debug_assertions) {
        for (kind, per) in &per_conn {
            let goal_kib: u64 = match kind {
                Attack::Slowloris => 2,
                Attack::SlowBody => 8,
                Attack::SlowReader | Attack::SlowReader1k => 16,
                Attack::SlowBackend => continue,
            };
            o.check(Check {
                target: format!("RSS per {kind:?} connection ≤ {goal_kib} KiB"),
                measured: kib(*per),
                met: *per <= goal_kib * 1024,
                within_bound: *per <= 2 * goal_kib * 1024,
            });
        }
    }
    let ratio = during.p99.as_secs_f64() / base.p99.as_secs_f64().max(1e-6);
    o.check(Check {
        target: "normal p99 within 2× of baseline".to_owned(),
        measured: format!("{} vs {} (×{ratio:.2})", ms(during.p99), ms(base.p99)),
        met: ratio <= 2.0,
        within_bound: during.p99 <= base.p99 * 3 + Duration::from_millis(50),
    });
    o.check(Check::exact(
        "normal clients 100 % success",
        during.failures(),
        during.failed() == 0,
    ));
    if size == Size::Full {
        // Cut once body_timeout of waiting passed below the minimum rate
        // (the attack starts within a second, so by t0 + 7 s).
        let slow: Vec<Duration> = closed
            .iter()
            .filter(|c| c.0 == Attack::SlowBody)
            .map(|c| c.1)
            .collect();
        let in_time = slow
            .iter()
            .filter(|&&at| {
                at >= SLOW_BODY_TIMEOUT && at <= SLOW_BODY_TIMEOUT + Duration::from_secs(2)
            })
            .count();
        o.check(Check::exact(
            "every slow body cut after body_timeout (+2 s)",
            format!(
                "{in_time} of {per_kind_total}",
                per_kind_total = per_kind_n(size)
            ),
            in_time == per_kind_n(size),
        ));
    }
    o.load = Some(during);
    finish_fds(&mut o, proxy.pid(), 2, &fake_known(&[&a, &b])).await;
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

/// F14's body_timeout: the slow bodies' cut falls inside the full run.
const SLOW_BODY_TIMEOUT: Duration = Duration::from_secs(5);

fn per_kind_n(size: Size) -> usize {
    size.pick(100, 500)
}

// === F15 ===

/// F15: a large body each way through the proxy, its RSS sampled.
pub async fn large_bodies(size: Size) -> Outcome {
    let t = Instant::now();
    let len: u64 = size.pick(64 << 20, 1 << 30);
    let mut o = Outcome::new("F15", "large bodies both ways");
    let a = FakeBackend::start("f15").await;
    let proxy = Proxy::start(&embedded_toml(&fake_members(&[&a]), "")).await;
    wait_serving(proxy.addr, &["f15"]).await;
    warm(proxy.addr, 1).await;
    o.before = snapshot(proxy.pid());
    let peak = PeakRss::start(proxy.pid(), Duration::from_millis(20));
    let d0 = Instant::now();
    let down = tether_testkit::http::download(proxy.addr, &format!("/bytes/{len}")).await;
    let d_took = d0.elapsed();
    let u0 = Instant::now();
    let up = tether_testkit::http::upload(proxy.addr, "/", len).await;
    let u_took = u0.elapsed();
    let (peak_rss, samples) = peak.stop();
    let received = a.requests().last().map_or(0, |r| r.body_len as u64);
    let growth = peak_rss.saturating_sub(o.before.rss);
    let mbps = |d: Duration| len as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-6);
    o.note(format!(
        "{} MiB down: {:?} in {:.1} s ({:.0} MiB/s); up: status {:?}, backend got {received} bytes, {:.1} s ({:.0} MiB/s); peak RSS {} over {samples} samples",
        len >> 20,
        down.as_ref().map_err(|e| e.to_string()),
        d_took.as_secs_f64(),
        mbps(d_took),
        up.as_ref().map(|r| r.status).map_err(|e| e.to_string()),
        u_took.as_secs_f64(),
        mbps(u_took),
        mib(peak_rss)
    ));
    o.check(Check::exact(
        "both bodies complete",
        format!("down {:?}, up {received} bytes", down.as_ref().ok()),
        down.as_ref().is_ok_and(|d| *d == (200, len))
            && up.as_ref().is_ok_and(|r| r.status == 200)
            && received == len,
    ));
    o.check(Check {
        target: "RSS growth < 16 MiB".to_owned(),
        measured: mib(growth),
        met: growth < 16 << 20,
        within_bound: growth < 64 << 20,
    });
    finish_fds(&mut o, proxy.pid(), 2, &fake_known(&[&a])).await;
    a.stop().await;
    o.took = t.elapsed();
    o
}

// === F16 ===

/// The proxy's `send_timeout` in F16.
const F16_SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// One HTTP/2 connection (prior knowledge) whose streams never open their
/// window (`SETTINGS_INITIAL_WINDOW_SIZE = 0`, no WINDOW_UPDATE): `streams`
/// requests for 1 MiB each. Returns the bodies once every head is in.
async fn shut_window(addr: SocketAddr, streams: usize) -> Option<Vec<h2::RecvStream>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut pending = Vec::new();
    for _ in 0..streams {
        let mut c = client.clone().ready().await.ok()?;
        let req = http::Request::get(format!("http://{addr}/bytes/1048576"))
            .body(())
            .ok()?;
        pending.push(c.send_request(req, true).ok()?.0);
    }
    let mut bodies = Vec::new();
    for res in pending {
        bodies.push(res.await.ok()?.into_body());
    }
    Some(bodies)
}

/// F16: HTTP/2 clients that never open their flow-control window, each
/// stream holding a backend connection until `send_timeout` frees it,
/// beside normal clients.
pub async fn shut_windows(size: Size) -> Outcome {
    let t = Instant::now();
    let conns = size.pick(2, 10);
    let streams = 100;
    let mut o = Outcome::new(
        "F16",
        "HTTP/2 clients that never open their window (send_timeout 3 s)",
    );
    let a = FakeBackend::start("f16").await;
    let extra = format!("send_timeout = \"{}s\"", F16_SEND_TIMEOUT.as_secs());
    let proxy = Proxy::start(&embedded_toml(&fake_members(&[&a]), &extra)).await;
    wait_serving(proxy.addr, &["f16"]).await;
    warm(proxy.addr, 1).await;
    let spec = LoadSpec::new(2, Duration::from_millis(2), size.pick(200, 1000));
    let base = Figures::of(&Load::start(proxy.addr, &spec).wait().await);
    o.before = snapshot(proxy.pid());
    let baseline = a.open_connections();
    let mut opened = JoinSet::new();
    for _ in 0..conns {
        opened.spawn(shut_window(proxy.addr, streams));
    }
    let load = Load::start(proxy.addr, &spec);
    let mut held = Vec::new();
    while let Some(r) = opened.join_next().await {
        if let Ok(Some(bodies)) = r {
            held.push(bodies);
        }
    }
    // Every answer waits for its client from here.
    let heads = Instant::now();
    let pinned = a.open_connections().saturating_sub(baseline);
    let during_attack = snapshot(proxy.pid());
    let (answered_conns, answered_streams) = (held.len(), held.iter().map(Vec::len).sum::<usize>());
    // Each stream's reset, as its client sees it: the moment the proxy cut
    // it, which is the moment it dropped the backend connection behind it.
    let mut resets = JoinSet::new();
    for body in held.drain(..).flatten() {
        resets.spawn(async move {
            let mut body = body;
            let end = tokio::time::timeout(F16_SEND_TIMEOUT + DEADLINE, body.data()).await;
            matches!(end, Ok(Some(Err(e))) if e.reason() == Some(h2::Reason::CANCEL))
                .then(|| heads.elapsed())
        });
    }
    let mut reset = 0;
    let mut last_reset = Duration::ZERO;
    while let Some(r) = resets.join_next().await {
        if let Ok(Some(at)) = r {
            reset += 1;
            last_reset = last_reset.max(at);
        }
    }
    let released = (reset == conns * streams).then_some(last_reset);
    let during = Figures::of(&load.wait().await);
    // The normal load's pooled connections count at the backend too; they
    // close after the pool's idle timeout.
    let back = tokio::time::timeout(FD_DEADLINE, async {
        while a.open_connections() > baseline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        heads.elapsed()
    })
    .await
    .ok();
    o.detect = released;
    o.note(format!("normal clients alone: {base}"));
    o.note(format!(
        "{} connections × {streams} streams answered ({} of {} planned); backend connections open beyond the baseline once every head was in: {pinned}; proxy while pinned: rss {}, fds {}",
        answered_conns,
        answered_streams,
        conns * streams,
        mib(during_attack.rss),
        during_attack.fds,
    ));
    o.note(format!(
        "{reset} streams reset (CANCEL), the last {} after the answers' heads; backend connections back to the baseline {} after them (the normal load's pooled ones close after the pool's 4 s idle timeout)",
        released.map_or("never (within the deadline)".to_owned(), ms),
        back.map_or("never (within 15 s)".to_owned(), ms)
    ));
    o.note(format!("normal clients beside them: {during}"));
    o.check(Check::time(
        "every stream cut (and its backend connection closed) within send_timeout + 1 s",
        released,
        F16_SEND_TIMEOUT + Duration::from_secs(1),
        F16_SEND_TIMEOUT + Duration::from_secs(3),
    ));
    o.check(Check::exact(
        "every stream reset",
        format!("{reset} of {}", conns * streams),
        reset == conns * streams,
    ));
    o.check(Check::exact(
        "normal clients 100 % success",
        during.failures(),
        during.failed() == 0,
    ));
    o.check(Check::exact(
        "backend connections back to the baseline",
        back.map_or("never".to_owned(), ms),
        back.is_some(),
    ));
    o.load = Some(during);
    finish_fds(&mut o, proxy.pid(), 1, &fake_known(&[&a])).await;
    a.stop().await;
    o.took = t.elapsed();
    o
}

// === WebSocket ===

/// A WebSocket through the proxy to a backend process that is killed: the
/// client must see the connection end, not hang.
pub async fn websocket_backend_death(_size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new("WS", "WebSocket held open through the backend's death");
    let mut echo = Echo::start("ws").await;
    let proxy = Proxy::start(&embedded_toml(&members_of(&[&echo]), "")).await;
    wait_serving(proxy.addr, &["ws"]).await;
    o.before = snapshot(proxy.pid());
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let url = format!("ws://{}/ws", proxy.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket upgrade through the proxy");
    ws.send(Message::text("hello")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let echoed_ok = matches!(&echoed, Ok(Some(Ok(m))) if m.to_text().ok() == Some("hello"));
    let killed = Instant::now();
    echo.proc.kill();
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                None => return "stream ended".to_owned(),
                Some(Err(e)) => return format!("error: {e}"),
                Some(Ok(Message::Close(f))) => return format!("close frame {f:?}"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let took = killed.elapsed();
    o.detect = end.is_ok().then_some(took);
    o.note(format!(
        "echo before the kill: {echoed_ok}; after the kill the client saw: {}",
        end.as_ref()
            .map_or("nothing within 30 s (a hang)".to_owned(), Clone::clone)
    ));
    o.check(Check::time(
        "the client sees the end within 5 s, not a hang",
        o.detect,
        Duration::from_secs(5),
        Duration::from_secs(15),
    ));
    drop(ws);
    finish_fds(&mut o, proxy.pid(), 1, &[echo.clone_addr()]).await;
    o.took = t.elapsed();
    o
}
