//! What the proxy process holds: resident memory and open descriptors.

use std::time::Duration;

use tether_testkit::rss::vm_rss;

/// Open descriptors of `pid` (entries of `/proc/PID/fd`); 0 if unreadable.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `VmRSS` of `pid` in bytes; 0 if unreadable.
pub fn rss(pid: u32) -> u64 {
    vm_rss(pid).unwrap_or(0)
}

/// RSS and fds at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub rss: u64,
    pub fds: usize,
}

pub fn snapshot(pid: u32) -> Snapshot {
    Snapshot {
        rss: rss(pid),
        fds: fds(pid),
    }
}

/// Polls until `pid` holds at most `limit` descriptors or `deadline`
/// passes; returns the last snapshot and whether the limit was reached.
pub async fn settle_fds(pid: u32, limit: usize, deadline: Duration) -> (Snapshot, bool) {
    let start = tokio::time::Instant::now();
    loop {
        let s = snapshot(pid);
        if s.fds <= limit {
            return (s, true);
        }
        if start.elapsed() >= deadline {
            return (s, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` (a name for `kill -<signal>`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!("kill -{signal} {pid}: {other:?}"),
    }
}

/// The TCP sockets `pid` holds, grouped as `STATE → peer ×count`, with a
/// peer named when it is in `known`; from `ss -tanp`.
pub fn describe_sockets(pid: u32, known: &[(String, std::net::SocketAddr)]) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tanp"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tag = format!("pid={pid},");
    let mut groups: std::collections::BTreeMap<String, usize> = Default::default();
    for line in out.lines().filter(|l| l.contains(&tag)) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 {
            continue;
        }
        let (state, local, peer) = (cols[0], cols[3], cols[4]);
        let name = known
            .iter()
            .find(|(_, a)| a.to_string() == peer)
            .map(|(n, _)| format!("backend {n}"))
            .or_else(|| {
                known
                    .iter()
                    .find(|(_, a)| a.to_string() == local)
                    .map(|(n, _)| format!("client of {n}"))
            })
            .unwrap_or_else(|| {
                if state == "LISTEN" {
                    "listener".into()
                } else {
                    "other".into()
                }
            });
        *groups.entry(format!("{state} {name}")).or_default() += 1;
    }
    groups
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Established sockets of `pid` whose peer is one of `peers` (upstream
/// connections, pooled or busy).
pub fn upstream_sockets(pid: u32, peers: &[std::net::SocketAddr]) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-tanp"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tag = format!("pid={pid},");
    out.lines()
        .filter(|l| l.contains(&tag) && l.starts_with("ESTAB"))
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|p| peers.iter().any(|a| a.to_string() == p))
        })
        .count()
}
