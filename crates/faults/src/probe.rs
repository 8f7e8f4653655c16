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

/// The kernel's `TcpExt` counters named in `names` (from
/// `/proc/net/netstat`), 0 for any it does not have. System-wide: other
/// traffic on the machine counts too.
pub fn tcp_ext(names: &[&str]) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(keys), Some(values)) = (lines.next(), lines.next()) else {
        return vec![0; names.len()];
    };
    let pairs: Vec<(&str, u64)> = keys
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(k, v)| (k, v.parse().unwrap_or(0)))
        .collect();
    names
        .iter()
        .map(|n| pairs.iter().find(|(k, _)| k == n).map_or(0, |p| p.1))
        .collect()
}

/// The accept-queue length `addr`'s listening socket was given (`ss`'s
/// Send-Q for a listener), if it can be read.
pub fn listen_backlog(addr: std::net::SocketAddr) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-ltn"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let want = addr.to_string();
    text.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 4 && cols[3] == want)
            .then(|| cols[2].parse().ok())
            .flatten()
    })
}

/// TCP sockets on this machine in `state` (an `ss` state name such as
/// `established` or `syn-recv`) whose local port (`local`) or peer port
/// (not `local`) is `addr`'s port.
pub fn sockets_on(addr: std::net::SocketAddr, state: &str, local: bool) -> usize {
    let side = if local { "sport" } else { "dport" };
    let filter = format!("( {side} = :{} )", addr.port());
    std::process::Command::new("ss")
        .args(["-tnH", "state", state, &filter])
        .output()
        .map_or(0, |o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
}
