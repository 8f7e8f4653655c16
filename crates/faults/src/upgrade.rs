//! F12's binary upgrade: `tether-proxy --upgrade` replaces the running
//! proxy (one time in a quick run, three in a row in a full one) while
//! keep-alive clients and clients opening a connection per request keep
//! coming. Measured: requests during the run, failures, refused
//! connections, the time until the new process serves, and the time until
//! the old one has drained and exited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tether_testkit::{Client, FakeBackend, Proc, TempConfig, get};
use tokio::time::Instant;

use crate::Size;
use crate::load::{CLIENT_TIMEOUT, Figures, Res, Sample, ms};
use crate::probe::snapshot;
use crate::report::{Check, Outcome};
use crate::scenarios::{fake_members, line_within, warm};
use crate::setup::{DEADLINE, START, embedded_toml, wait_serving};

/// The proxies' `drain_timeout`.
const DRAIN: Duration = Duration::from_secs(10);
/// Load on each process before it is replaced, and after the last.
const BETWEEN: Duration = Duration::from_millis(500);

/// Clients that open a new connection for every request.
#[derive(Default)]
struct Fresh {
    ok: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
}

pub async fn binary_upgrade(size: Size) -> Outcome {
    let t = Instant::now();
    let rounds = size.pick(1, 3);
    let mut o = Outcome::new("F12", "binary upgrade under load (--upgrade)");
    let a = FakeBackend::start("f12-a").await;
    let b = FakeBackend::start("f12-b").await;
    let config = TempConfig::new("");
    let socket = config.dir().join("upgrade.sock");
    let toml = embedded_toml(
        &fake_members(&[&a, &b]),
        &format!(
            "upgrade_socket = \"{}\"\ndrain_timeout = \"{}s\"\n",
            socket.display(),
            DRAIN.as_secs()
        ),
    );
    std::fs::write(config.path(), toml).expect("write config");
    let mut old = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = old.wait_listening("http", START).await;
    wait_serving(addr, &["f12-a", "f12-b"]).await;
    warm(addr, 2).await;
    o.before = snapshot(old.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let ids = Arc::new(AtomicUsize::new(0));
    let kept: Vec<_> = (0..3)
        .map(|_| tokio::spawn(kept_client(addr, t0, ids.clone(), stop.clone())))
        .collect();
    let fresh = Arc::new(Fresh::default());
    let fresh_tasks: Vec<_> = (0..2)
        .map(|_| tokio::spawn(fresh_client(addr, fresh.clone(), stop.clone())))
        .collect();
    let mut serving_after = Vec::new();
    let mut exited_after = Vec::new();
    let mut drained = 0;
    for _ in 0..rounds {
        // Load time on the running process, not a wait for a condition.
        tokio::time::sleep(BETWEEN).await;
        let started = Instant::now();
        let new = Proc::spawn(
            "tether-proxy",
            &["--config", config.path_str(), "--upgrade"],
            &[],
        );
        let serving = line_within(&new, 0, "upgrade: serving", START).await;
        serving_after.push(serving);
        let exit = old.wait_exit(DRAIN + DEADLINE).await;
        exited_after.push(exit.map(|_| started.elapsed()));
        if exit.is_some_and(|s| s.success()) && !old.output().contains("drain deadline passed") {
            drained += 1;
        }
        old = new;
    }
    tokio::time::sleep(BETWEEN).await;
    stop.store(true, Ordering::Relaxed);
    // A keep-alive request that got no answer counts as failed if it
    // reached a backend (cut in flight). One that reached none was written
    // onto an idle connection the old process was closing, before reading
    // it: HTTP/1's keep-alive race (RFC 9112 section 9.3.1), which clients
    // answer by sending the request again on a new connection; so is it
    // here, and it must then succeed.
    let seen: std::collections::HashSet<String> = a
        .requests()
        .into_iter()
        .chain(b.requests())
        .map(|r| r.uri)
        .collect();
    let mut samples = Vec::new();
    let mut retried = 0;
    for task in kept {
        let Ok((mut mine, unanswered)) = task.await else {
            continue;
        };
        for (i, path) in unanswered {
            if seen.contains(&path) {
                continue;
            }
            retried += 1;
            mine[i].res = match get(addr, &path, &[]).await {
                Ok(r) if r.status == 200 => Res::Ok(r.body),
                Ok(r) => Res::Status(r.status),
                Err(e) => Res::Conn(format!("sent again: {}", e.kind())),
            };
        }
        samples.extend(mine);
    }
    samples.sort_by_key(|s| s.start);
    for task in fresh_tasks {
        let _ = task.await;
    }
    let f = Figures::of(&samples);
    let refused_kept: usize = f
        .by_error
        .iter()
        .filter(|(e, _)| e.contains("refused"))
        .map(|(_, n)| n)
        .sum();
    let fresh_ok = fresh.ok.load(Ordering::Relaxed);
    let fresh_refused = fresh.refused.load(Ordering::Relaxed);
    let fresh_failed = fresh.failed.load(Ordering::Relaxed);
    let times = |d: &[Option<Duration>]| {
        d.iter()
            .map(|d| d.map_or_else(|| "never".to_owned(), ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    o.note(format!(
        "{rounds} upgrade(s); new process serving after {}; old one drained and exited after {}",
        times(&serving_after),
        times(&exited_after)
    ));
    o.note(format!(
        "keep-alive clients: {} requests ({} failed; {retried} unanswered but never forwarded, sent again on a new connection: the old process closed an idle connection as they were written); new-connection clients: {} answered, {fresh_refused} refused, {fresh_failed} failed",
        f.sent,
        f.failed(),
        fresh_ok
    ));
    o.note("bad config: a reload that fails validation keeps the running config (crates/proxy/tests/reload.rs)");
    o.check(Check::exact(
        "0 failed requests",
        format!("{}", f.failed() + fresh_failed + fresh_refused),
        f.failed() == 0 && fresh_failed == 0 && fresh_refused == 0,
    ));
    o.check(Check::exact(
        "0 refused connections",
        format!("{}", refused_kept + fresh_refused),
        refused_kept + fresh_refused == 0,
    ));
    o.check(Check::exact(
        &format!(
            "every old process drains within drain_timeout ({} s) and exits 0",
            DRAIN.as_secs()
        ),
        format!("{drained} of {rounds}"),
        drained == rounds,
    ));
    let slowest = serving_after
        .iter()
        .copied()
        .try_fold(Duration::ZERO, |m, d| d.map(|d| m.max(d)));
    o.check(Check::time(
        "new process serving within 5 s",
        slowest,
        Duration::from_secs(5),
        START,
    ));
    o.load = Some(f);
    // "After" is the last new process, serving the same load.
    o.after = snapshot(old.pid());
    old.terminate();
    let _ = old.wait_exit(DRAIN + DEADLINE).await;
    for m in [a, b] {
        m.stop().await;
    }
    o.took = t.elapsed();
    o
}

/// One request per new connection until `stop`.
async fn fresh_client(addr: SocketAddr, tally: Arc<Fresh>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match get(addr, "/", &[]).await {
            Ok(r) if r.status == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tally.refused.fetch_add(1, Ordering::Relaxed)
            }
            _ => tally.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// One keep-alive connection, a new one when the proxy closes it, a
/// request every 2 ms until `stop`, each to its own path. Returns the
/// samples and, for each that failed on the connection, its index and
/// path: whether a backend saw that path decides later whether it was cut
/// in flight or never forwarded.
async fn kept_client(
    addr: SocketAddr,
    t0: Instant,
    ids: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut unanswered = Vec::new();
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/f12/{}", ids.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        let res = send(addr, &mut client, &path).await;
        if matches!(res, Res::Conn(_)) {
            unanswered.push((out.len(), path));
        }
        out.push(Sample {
            start: started - t0,
            latency: started.elapsed(),
            res,
            header: None,
        });
        // Pace, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (out, unanswered)
}

/// One `GET path` on `client`, connecting first if it has none or it
/// closed.
async fn send(addr: SocketAddr, client: &mut Option<Client>, path: &str) -> Res {
    if client.as_ref().is_none_or(Client::is_closed) {
        match Client::connect(addr).await {
            Ok(c) => *client = Some(c),
            Err(e) => return Res::Conn(format!("connect: {}", e.kind())),
        }
    }
    let Some(c) = client.as_mut() else {
        return Res::Conn("no connection".to_owned());
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, c.get(path, &[])).await {
        Ok(Ok(r)) if r.status == 200 => Res::Ok(r.body),
        Ok(Ok(r)) => Res::Status(r.status),
        Ok(Err(e)) => {
            *client = None;
            Res::Conn(e.to_string().to_lowercase())
        }
        Err(_) => {
            *client = None;
            Res::Conn("timeout".to_owned())
        }
    }
}
