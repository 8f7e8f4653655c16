//! Issue 16's scenarios: shared health without shared fate. A checker cut
//! off from the backends (its own network, not theirs) must cost no
//! request, a real failure must still be seen by a checker that can see,
//! and answers (every backend saying 503) are not silence.
//!
//! F17-F19 cut a `tether-checker` process off with iptables, so they need
//! root and iptables (see [`crate::cut`]); without them they report
//! themselves as not run. F20 cuts nothing.
//!
//! They are written for proxies that follow *every* checker and merge
//! (a member is out only when a majority of the live checkers, stream up
//! and not impaired, say so): F18 needs that to pass; F17, F19 and F20
//! hold with one checker under either semantics.

use std::net::SocketAddr;
use std::time::Duration;

use tether_testkit::{FakeBackend, Proc};
use tokio::time::Instant;

use crate::Size;
use crate::cut::{self, Cut};
use crate::load::{Figures, Load, LoadSpec, Res, Sample, ms};
use crate::probe::snapshot;
use crate::report::{Check, Outcome};
use crate::scenarios::{failed_after, fake_known, fake_members, finish_fds, line_within, warm};
use crate::setup::{
    Checker, DEADLINE, Echo, Proxy, fed_by_toml, fed_proxy_toml, readyz, wait_serving,
};

/// How long a checker stays cut off (issue 16's "Done when").
const CUT_FOR: Duration = Duration::from_secs(6);
/// The suite's probe interval and fall (see [`crate::setup::HEALTH`]).
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
/// How often the scenarios read a checker's `/readyz`.
const READYZ_EVERY: Duration = Duration::from_millis(100);

/// Load workers on a [`Stage`].
const STAGE_WORKERS: usize = 3;

/// What F17 and F19 cut into: three fake backends, a checker probing them
/// as the uid a [`Cut`] can silence, a proxy following it alone, and a
/// load running on it for a second already.
struct Stage {
    backends: [FakeBackend; 3],
    checker: Checker,
    proxy: Proxy,
    load: Load,
    /// The proxy before the load.
    before: crate::probe::Snapshot,
}

impl Stage {
    async fn start(prefix: &str) -> Stage {
        let names = ["a", "b", "c"].map(|m| format!("{prefix}-{m}"));
        let a = FakeBackend::start(&names[0]).await;
        let b = FakeBackend::start(&names[1]).await;
        let c = FakeBackend::start(&names[2]).await;
        let checker = Checker::start(&fake_members(&[&a, &b, &c]), cut::AS_UID).await;
        let proxy = Proxy::start(&fed_proxy_toml(checker.grpc)).await;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_serving(proxy.addr, &names).await;
        warm(proxy.addr, STAGE_WORKERS).await;
        let before = snapshot(proxy.pid());
        let load = Load::start(
            proxy.addr,
            &LoadSpec::new(STAGE_WORKERS, Duration::from_millis(10), usize::MAX),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        Stage {
            backends: [a, b, c],
            checker,
            proxy,
            load,
            before,
        }
    }
}

// === helpers ===

/// Reads `/readyz` on `admin` every [`READYZ_EVERY`] until `until`: each
/// reading's start after `from`, and its status (`None`: no answer within
/// a second).
async fn readyz_until(
    admin: SocketAddr,
    from: Instant,
    until: Instant,
) -> Vec<(Duration, Option<u16>)> {
    let mut seen = Vec::new();
    while Instant::now() < until {
        let at = from.elapsed();
        seen.push((at, readyz(admin).await));
        let next = (Instant::now() + READYZ_EVERY).min(until);
        tokio::time::sleep_until(next).await;
    }
    seen
}

/// How long until `/readyz` on `admin` answers 200 (`ready`) or anything
/// else; `None` after `deadline`.
async fn readyz_becomes(admin: SocketAddr, ready: bool, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if (readyz(admin).await == Some(200)) == ready {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `routing table` lines the proxy logged after `mark` that do not show
/// `full` (e.g. `3/3 healthy`): members taken out of rotation.
fn table_changes(proxy: &Proc, mark: usize, full: &str) -> Vec<String> {
    proxy
        .lines()
        .iter()
        .skip(mark)
        .filter(|l| l.contains("routing table") && !l.contains(full))
        .cloned()
        .collect()
}

/// Samples that started in `[from, to)`.
fn started_within(samples: &[Sample], from: Duration, to: Duration) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.start >= from && s.start < to)
        .cloned()
        .collect()
}

/// The proxy's health-feed events after `mark`, each with its line, for a
/// note (a stream that broke and came back).
fn feed_events(proxy: &Proc, mark: usize) -> Vec<String> {
    proxy
        .lines()
        .iter()
        .skip(mark)
        .filter(|l| l.contains("health feed"))
        .map(|l| {
            l.split_once("health feed")
                .map_or(l.clone(), |(_, rest)| format!("health feed{rest}"))
        })
        .collect()
}

fn ports(backends: &[&FakeBackend]) -> Vec<u16> {
    backends.iter().map(|b| b.addr().port()).collect()
}

// === F17 ===

/// F17: the only checker a proxy follows cannot reach any backend for 6 s
/// (its packets to them are dropped) while the proxy can; then it can
/// again. The checker must suspect itself (impaired, `/readyz` not 200)
/// and hold every verdict, so no request fails.
pub async fn checker_cut_from_backends(size: Size) -> Outcome {
    const ID: &str = "F17";
    const NAME: &str = "the only checker followed is cut off from every backend for 6 s";
    let t = Instant::now();
    let _one = cut::exclusive().await;
    if let Err(why) = cut::available() {
        return Outcome::not_run(ID, NAME, why);
    }
    let mut o = Outcome::new(ID, NAME);
    let Stage {
        backends: [a, b, c],
        checker,
        proxy,
        load,
        before,
    } = Stage::start("f17").await;
    o.before = before;
    let workers = STAGE_WORKERS;
    let mark = proxy.proc.line_count();
    let mut cut = Cut::new();
    let cut_start = Instant::now();
    let cut_at = load.now();
    cut.uid_to_ports(&ports(&[&a, &b, &c]));
    let during = readyz_until(checker.admin, cut_start, cut_start + CUT_FOR).await;
    cut.heal();
    let heal_at = load.now();
    o.recover = readyz_becomes(checker.admin, true, DEADLINE).await;
    // The healed state, under load.
    tokio::time::sleep(size.pick(Duration::from_secs(2), Duration::from_secs(5))).await;
    let samples = load.finish().await;
    let f = Figures::of(&samples);

    o.detect = during
        .iter()
        .find(|(_, s)| *s != Some(200))
        .map(|(at, _)| *at);
    let after_detect: Vec<Option<u16>> = during
        .iter()
        .filter(|(at, _)| o.detect.is_some_and(|d| *at >= d))
        .map(|(_, s)| *s)
        .collect();
    let ready_while_cut = after_detect.iter().filter(|s| **s == Some(200)).count();
    let while_cut = Figures::of(&started_within(&samples, cut_at, heal_at));
    let after_heal = failed_after(&samples, heal_at);
    let flaps = table_changes(&proxy.proc, mark, "3/3 healthy");
    o.note(format!(
        "checker as uid {} with its packets to the 3 backends' ports dropped for {} s; detect = cut until its /readyz is not 200; recover = heal until /readyz 200; while cut: {while_cut}",
        cut::UID,
        CUT_FOR.as_secs()
    ));
    o.check(Check::exact(
        "0 failed requests while the checker is cut off",
        while_cut.failures(),
        while_cut.failed() == 0,
    ));
    o.check(Check::exact(
        "0 failed requests after the partition heals",
        after_heal.to_string(),
        after_heal == 0,
    ));
    o.check(Check::time(
        "its /readyz not 200 ≤ 1 s after the cut",
        o.detect,
        Duration::from_secs(1),
        Duration::from_secs(3),
    ));
    o.check(Check::exact(
        "its /readyz never 200 again while cut",
        format!(
            "{ready_while_cut} of {} readings 200 after the first non-200",
            after_detect.len()
        ),
        o.detect.is_some() && ready_while_cut == 0,
    ));
    o.check(Check::time(
        "its /readyz 200 ≤ 1 s after the heal",
        o.recover,
        Duration::from_secs(1),
        Duration::from_secs(5),
    ));
    o.check(Check::exact(
        "no member taken out of rotation",
        flaps.len().to_string(),
        flaps.is_empty(),
    ));
    o.load = Some(f);
    finish_fds(&mut o, proxy.pid(), workers, &fake_known(&[&a, &b, &c])).await;
    drop(checker);
    for m in [a, b, c] {
        m.stop().await;
    }
    o.took = t.elapsed();
    o
}

// === F18 ===

/// F18: two checkers; the first one the proxy lists is cut off from every
/// backend; meanwhile one backend really fails its health check (503 on
/// its health path) and later dies (`kill -9`). The checker that can see
/// must take it out of rotation within `interval × fall + 1 s`, with no
/// failed request, also after the kill. Needs proxies that merge every
/// checker's view: one that follows the first reachable checker alone
/// keeps the member in (the cut-off checker holds its verdicts).
pub async fn one_of_two_checkers_cut(size: Size) -> Outcome {
    const ID: &str = "F18";
    const NAME: &str = "two checkers, one cut off; a backend fails its health check, then dies";
    let t = Instant::now();
    let _one = cut::exclusive().await;
    if let Err(why) = cut::available() {
        return Outcome::not_run(ID, NAME, why);
    }
    let mut o = Outcome::new(ID, NAME);
    let a = FakeBackend::start("f18-a").await;
    let b = FakeBackend::start("f18-b").await;
    let mut victim = Echo::start("f18-victim").await;
    let mut members = fake_members(&[&a, &b]);
    members.push(victim.member());
    let cut_off = Checker::start(&members, cut::AS_UID).await;
    let seeing = Checker::start(&members, &[]).await;
    // The cut-off checker first: a proxy that follows the first reachable
    // checker follows it.
    let proxy = Proxy::start(&fed_by_toml(&[cut_off.grpc, seeing.grpc])).await;
    wait_serving(proxy.addr, &["f18-a", "f18-b", "f18-victim"]).await;
    let workers = 3;
    warm(proxy.addr, workers).await;
    o.before = snapshot(proxy.pid());
    let load = Load::start(
        proxy.addr,
        &LoadSpec::new(workers, Duration::from_millis(10), usize::MAX),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut cut = Cut::new();
    let mut ports = ports(&[&a, &b]);
    ports.push(victim.addr.port());
    cut.uid_to_ports(&ports);
    let impaired = readyz_becomes(cut_off.admin, false, DEADLINE).await;

    let mark = proxy.proc.line_count();
    let smark = seeing.proc.line_count();
    let fail = Instant::now();
    let fail_at = load.now();
    let failing = tether_testkit::http::request(
        victim.addr,
        http::Method::POST,
        tether_testkit::backend::FAIL_PATH,
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert!(
        failing.as_ref().is_ok_and(|r| r.status == 200),
        "the victim's health must switch to 503: {failing:?}"
    );
    let out_within = INTERVAL * FALL + Duration::from_secs(1);
    // Long enough past the target to see whether it stays out.
    let hold = out_within + size.pick(Duration::from_secs(2), Duration::from_secs(4));
    let seen = line_within(&seeing.proc, smark, "f18-victim healthy -> unhealthy", hold).await;
    tokio::time::sleep_until(fail + hold).await;
    let logged_out = line_within(&proxy.proc, mark, "2/3 healthy", Duration::ZERO).await;
    let kill_at = load.now();
    victim.proc.kill();
    // Dead, under load.
    tokio::time::sleep(size.pick(Duration::from_secs(2), Duration::from_secs(4))).await;
    cut.heal();
    let heal_at = load.now();
    let recovered = readyz_becomes(cut_off.admin, true, DEADLINE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;
    let f = Figures::of(&samples);

    let by_victim: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= fail_at && s.res == Res::Ok("f18-victim".to_owned()))
        .collect();
    let last_answer = by_victim
        .iter()
        .map(|s| s.start + s.latency)
        .max()
        .map(|end| end.saturating_sub(fail_at));
    // Out of rotation: no answer from it started after the target, up to
    // the kill.
    let late = by_victim
        .iter()
        .filter(|s| s.start >= fail_at + out_within * 2)
        .count();
    o.detect = if late == 0 {
        Some(last_answer.unwrap_or_default())
    } else {
        None
    };
    o.recover = recovered;
    let before_kill = Figures::of(&started_within(&samples, Duration::ZERO, kill_at));
    let after_kill = failed_after(&samples, kill_at);
    o.note(format!(
        "proxy follows [cut-off checker (uid {}, packets to the backends dropped), seeing checker]; cut-off checker's /readyz not 200 {} after the cut; victim's health 503 at {}, the seeing checker marked it unhealthy {} later; detect = until the victim's last answer; {} answers from it after the switch ({late} started after {}); proxy logged 2/3 healthy: {}; killed at {}; healed at {}, cut-off checker ready again {} later",
        cut::UID,
        impaired.map_or("never".into(), ms),
        ms(fail_at),
        seen.map_or("never".into(), ms),
        by_victim.len(),
        ms(out_within * 2),
        if logged_out.is_some() { "yes" } else { "no" },
        ms(kill_at),
        ms(heal_at),
        recovered.map_or("never".into(), ms),
    ));
    o.check(Check::exact(
        "the cut-off checker's /readyz not 200 (impaired)",
        impaired.map_or("never".into(), |d| format!("after {}", ms(d))),
        impaired.is_some(),
    ));
    o.check(Check::time(
        &format!(
            "failing member out of rotation ≤ interval × fall + 1 s ({})",
            ms(out_within)
        ),
        o.detect,
        out_within,
        out_within * 2,
    ));
    o.check(Check::exact(
        "0 failed requests while it fails its health check",
        before_kill.failures(),
        before_kill.failed() == 0,
    ));
    o.check(Check::exact(
        "0 failed requests after it is killed",
        after_kill.to_string(),
        after_kill == 0,
    ));
    o.load = Some(f);
    let mut known = fake_known(&[&a, &b]);
    known.push(victim.clone_addr());
    finish_fds(&mut o, proxy.pid(), workers, &known).await;
    drop(cut_off);
    drop(seeing);
    a.stop().await;
    b.stop().await;
    o.took = t.elapsed();
    o
}

// === F19 ===

/// F19: the only checker a proxy follows is cut off from everything for
/// 6 s: its packets to the backends and to the proxy are dropped, and so
/// are the proxy's to it. Then the partition heals. No request may fail,
/// during or after, and the proxy must follow the checker's fresh verdicts
/// again. 6 s is shorter than the proxy takes to call a silent stream dead
/// (HTTP/2 keep-alive 5 s + 3 s), so the stream stalls and resumes.
pub async fn checker_partition_heals(size: Size) -> Outcome {
    partition(
        size,
        "F19",
        "the only checker followed is cut off from backends and proxy for 6 s, then healed",
        CUT_FOR,
    )
    .await
}

/// F19b: as F19 for 12 s, long enough for the proxy to give the stream up
/// (keeping its last table) and subscribe again after the heal: it must
/// not follow a snapshot taken while the checker could see nothing.
pub async fn checker_partition_outlasts_stream(size: Size) -> Outcome {
    partition(
        size,
        "F19b",
        "as F19 for 12 s: the proxy gives the stream up and subscribes again",
        Duration::from_secs(12),
    )
    .await
}

async fn partition(size: Size, id: &'static str, name: &'static str, cut_for: Duration) -> Outcome {
    let t = Instant::now();
    let _one = cut::exclusive().await;
    if let Err(why) = cut::available() {
        return Outcome::not_run(id, name, why);
    }
    let mut o = Outcome::new(id, name);
    let Stage {
        backends: [a, b, c],
        checker,
        proxy,
        load,
        before,
    } = Stage::start("f19").await;
    o.before = before;
    let workers = STAGE_WORKERS;
    let mark = proxy.proc.line_count();
    let cmark = checker.proc.line_count();
    let mut cut = Cut::new();
    let cut_start = Instant::now();
    let cut_at = load.now();
    cut.uid_everywhere().anyone_to_port(checker.grpc.port());
    // Its log goes through a pipe, not the network.
    o.detect = line_within(&checker.proc, cmark, "checker impaired", cut_for).await;
    tokio::time::sleep_until(cut_start + cut_for).await;
    let broke_during = feed_events(&proxy.proc, mark);
    let hmark = proxy.proc.line_count();
    let cmark = checker.proc.line_count();
    cut.heal();
    let heal = Instant::now();
    let heal_at = load.now();
    // Each as time since the heal (they are waited for one after another).
    let left = line_within(&checker.proc, cmark, "no longer impaired", DEADLINE)
        .await
        .map(|_| heal.elapsed());
    let ready = readyz_becomes(checker.admin, true, DEADLINE)
        .await
        .map(|_| heal.elapsed());
    // If the proxy gave the stream up, it must have subscribed again.
    let gave_up = proxy
        .proc
        .lines()
        .iter()
        .skip(mark)
        .any(|l| l.contains("keeping the last table"));
    let resubscribed = if gave_up {
        line_within(&proxy.proc, hmark, "subscribed to", DEADLINE)
            .await
            .map(|_| heal.elapsed())
    } else {
        Some(Duration::ZERO)
    };
    o.recover =
        (left.is_some() && ready.is_some() && resubscribed.is_some()).then(|| heal.elapsed());
    // The healed state, under load (a stream the proxy finds dead only
    // now must cost nothing either).
    tokio::time::sleep(size.pick(Duration::from_secs(3), Duration::from_secs(10))).await;
    let flaps = table_changes(&proxy.proc, mark, "3/3 healthy");
    // The proxy follows the checker again: a fresh verdict reaches it.
    let vmark = proxy.proc.line_count();
    c.set_healthy(false);
    let follows = line_within(&proxy.proc, vmark, "2/3 healthy", DEADLINE).await;
    let vmark = proxy.proc.line_count();
    c.set_healthy(true);
    let back = line_within(&proxy.proc, vmark, "3/3 healthy", DEADLINE).await;
    let samples = load.finish().await;
    let f = Figures::of(&samples);
    let while_cut = Figures::of(&started_within(&samples, cut_at, heal_at));
    let after_heal = failed_after(&samples, heal_at);
    let after = feed_events(&proxy.proc, hmark);
    o.note(format!(
        "checker as uid {}: every TCP packet it sends to 127.0.0.1 dropped, and every packet to its gRPC port, for {} s; detect = cut until it logs `checker impaired`; recover = heal until it logs `no longer impaired` ({}), its /readyz is 200 ({}) and the proxy follows it ({}); while cut: {while_cut}",
        cut::UID,
        cut_for.as_secs(),
        left.map_or("never".into(), ms),
        ready.map_or("never".into(), ms),
        if gave_up {
            resubscribed.map_or("never resubscribed".into(), |d| {
                format!("stream given up, resubscribed {}", ms(d))
            })
        } else {
            "same stream".into()
        },
    ));
    o.note(format!(
        "proxy's feed while cut: {}; after the heal: {}",
        if broke_during.is_empty() {
            "no event".to_owned()
        } else {
            broke_during.join("; ")
        },
        if after.is_empty() {
            "no event".to_owned()
        } else {
            after.join("; ")
        }
    ));
    o.check(Check::exact(
        "0 failed requests while the checker is cut off",
        while_cut.failures(),
        while_cut.failed() == 0,
    ));
    o.check(Check::exact(
        "0 failed requests after the partition heals",
        after_heal.to_string(),
        after_heal == 0,
    ));
    o.check(Check::time(
        "checker impaired ≤ 1 s after the cut",
        o.detect,
        Duration::from_secs(1),
        Duration::from_secs(3),
    ));
    o.check(Check::time(
        "recovered (checker ready, proxy following) ≤ 2 s after the heal",
        o.recover,
        Duration::from_secs(2),
        Duration::from_secs(10),
    ));
    o.check(Check::exact(
        "no member taken out of rotation",
        flaps.len().to_string(),
        flaps.is_empty(),
    ));
    let out_within = INTERVAL * FALL + Duration::from_secs(1);
    o.check(Check::time(
        &format!(
            "then a member failing its health check is out ≤ interval × fall + 1 s ({})",
            ms(out_within)
        ),
        follows,
        out_within,
        out_within * 3,
    ));
    o.note(format!(
        "after the healed state: f19-c's health 503 until the proxy logged 2/3 healthy ({}), then 200 until 3/3 ({})",
        follows.map_or("never".into(), ms),
        back.map_or("never".into(), ms)
    ));
    o.load = Some(f);
    finish_fds(&mut o, proxy.pid(), workers, &fake_known(&[&a, &b, &c])).await;
    drop(checker);
    for m in [a, b, c] {
        m.stop().await;
    }
    o.took = t.elapsed();
    o
}

// === F20 ===

/// F20: every backend answers 503 on its health path (answers, not
/// silence): the proxy answers each request with a fast `503` and
/// `Retry-After: 1`, and the checker is not impaired: its verdicts are
/// right. Then they answer 200 again.
pub async fn every_backend_503(size: Size) -> Outcome {
    let t = Instant::now();
    let mut o = Outcome::new(
        "F20",
        "every backend answers 503 on its health path (answers, not silence)",
    );
    let a = FakeBackend::start("f20-a").await;
    let b = FakeBackend::start("f20-b").await;
    let c = FakeBackend::start("f20-c").await;
    let checker = Checker::start(&fake_members(&[&a, &b, &c]), &[]).await;
    let proxy = Proxy::start(&fed_proxy_toml(checker.grpc)).await;
    wait_serving(proxy.addr, &["f20-a", "f20-b", "f20-c"]).await;
    let workers = 2;
    warm(proxy.addr, workers).await;
    o.before = snapshot(proxy.pid());
    let mut spec = LoadSpec::new(workers, Duration::from_millis(10), usize::MAX);
    spec.record = Some("retry-after".to_owned());
    let load = Load::start(proxy.addr, &spec);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cmark = checker.proc.line_count();
    let fail = Instant::now();
    let fail_at = load.now();
    for m in [&a, &b, &c] {
        m.set_healthy(false);
    }
    // Every member out, as the checker and the proxy see it.
    let hold = size.pick(Duration::from_secs(3), Duration::from_secs(10));
    let readiness = readyz_until(checker.admin, fail, fail + hold).await;
    let impaired_metric = checker.metric("tether_checker_impaired").await;
    let back_at = load.now();
    for m in [&a, &b, &c] {
        m.set_healthy(true);
    }
    // Back, under load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;

    let first_503 = samples
        .iter()
        .find(|s| s.start >= fail_at && s.res == Res::Status(503))
        .map(|s| s.start);
    o.detect = first_503.map(|s| s.saturating_sub(fail_at));
    o.recover = samples
        .iter()
        .find(|s| s.start >= back_at && matches!(s.res, Res::Ok(_)))
        .map(|s| (s.start + s.latency).saturating_sub(back_at));
    let down = first_503.map_or_else(Vec::new, |from| started_within(&samples, from, back_at));
    let down_f = Figures::of(&down);
    let fast_503 = down
        .iter()
        .filter(|s| s.res == Res::Status(503) && s.header.as_deref() == Some("1"))
        .count();
    let ready = readiness.iter().filter(|(_, s)| *s == Some(200)).count();
    let impaired_logged = checker
        .proc
        .lines()
        .iter()
        .skip(cmark)
        .any(|l| l.contains("checker impaired"));
    let out_within = INTERVAL * FALL + Duration::from_secs(1);
    o.note(format!(
        "every backend's health path 503 at {}; detect = until the first 503 from the proxy; recover = health 200 again until the first 2xx; whole run: {}",
        ms(fail_at),
        Figures::of(&samples)
    ));
    o.check(Check::exact(
        "every answer while all fail: 503 with Retry-After: 1",
        format!("{fast_503} of {}", down.len()),
        !down.is_empty() && fast_503 == down.len(),
    ));
    o.check(Check {
        target: "each 503 in well under 200 ms (p50 / p99 / max)".to_owned(),
        measured: format!(
            "{} / {} / {}",
            ms(down_f.p50),
            ms(down_f.p99),
            ms(down_f.max)
        ),
        met: !down.is_empty() && down_f.max < Duration::from_millis(200),
        within_bound: !down.is_empty() && down_f.p99 < Duration::from_millis(200),
    });
    o.check(Check::exact(
        "the checker is not impaired (/readyz 200, metric 0, no log line)",
        format!(
            "/readyz 200 in {ready} of {} readings; tether_checker_impaired {}; logged impaired: {impaired_logged}",
            readiness.len(),
            impaired_metric.map_or("?".to_owned(), |v| v.to_string())
        ),
        ready == readiness.len() && impaired_metric == Some(0.0) && !impaired_logged,
    ));
    o.check(Check::time(
        &format!(
            "all out of rotation ≤ interval × fall + 1 s ({})",
            ms(out_within)
        ),
        o.detect,
        out_within,
        out_within * 3,
    ));
    o.check(Check::time(
        "first 2xx ≤ 1 s after they answer 200 again",
        o.recover,
        Duration::from_secs(1),
        Duration::from_secs(5),
    ));
    o.load = Some(down_f);
    finish_fds(&mut o, proxy.pid(), workers, &fake_known(&[&a, &b, &c])).await;
    drop(checker);
    for m in [a, b, c] {
        m.stop().await;
    }
    o.took = t.elapsed();
    o
}
