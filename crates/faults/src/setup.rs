//! Starting the real binaries with temp configs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tether_testkit::{Proc, TempConfig, eventually, get};

pub const START: Duration = Duration::from_secs(20);
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Probe settings every scenario uses: HTTP probes every 200 ms with a
/// 200 ms timeout, down after 2 failures, up after 1 success.
pub const HEALTH: &str = "[health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\n";

/// The `[proxy]` section: loopback, port 0, `extra` lines appended.
pub fn proxy_section(extra: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nretries = 2\nconnect_timeout = \"1s\"\nresponse_timeout = \"2s\"\n{extra}\n[admin]\nlisten = \"\"\n[log]\nlevel = \"info\"\n"
    )
}

/// `[[targets]]` entries for (name, url) pairs.
pub fn targets(members: &[(String, String)]) -> String {
    members
        .iter()
        .map(|(name, url)| format!("\n[[targets]]\nurl = \"{url}\"\nname = \"{name}\"\n"))
        .collect()
}

/// A proxy with its embedded checker probing `members`.
pub fn embedded_toml(members: &[(String, String)], proxy_extra: &str) -> String {
    format!("{}{HEALTH}{}", proxy_section(proxy_extra), targets(members))
}

/// A running `tether-proxy`.
#[derive(Debug)]
pub struct Proxy {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub config: TempConfig,
}

impl Proxy {
    pub async fn start(toml: &str) -> Proxy {
        let config = TempConfig::new(toml);
        let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
        let addr = proc.wait_listening("http", START).await;
        Proxy { proc, addr, config }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A `tether-echo` process (a FakeBackend in its own process, so it can be
/// killed or stopped with signals).
#[derive(Debug)]
pub struct Echo {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub name: String,
}

impl Echo {
    pub async fn start(name: &str) -> Echo {
        let proc = Proc::spawn(
            "tether-echo",
            &["--listen", "127.0.0.1:0", "--name", name],
            &[],
        );
        let addr = proc.wait_listening(name, START).await;
        Echo {
            proc,
            addr,
            name: name.to_owned(),
        }
    }

    pub fn clone_addr(&self) -> (String, SocketAddr) {
        (self.name.clone(), self.addr)
    }

    pub fn member(&self) -> (String, String) {
        (self.name.clone(), format!("http://{}", self.addr))
    }
}

/// Waits until `n` requests through `addr` all answer 200 and together
/// reach exactly `names`.
pub async fn wait_serving(addr: SocketAddr, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|s| (*s).to_owned()).collect();
    eventually(&format!("the proxy serves {want:?}"), DEADLINE, || {
        let want = want.clone();
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..(names.len() * 4).max(4) {
                let r = get(addr, "/", &[]).await.ok()?;
                if r.status != 200 {
                    return None;
                }
                seen.insert(r.body);
            }
            (seen == want).then_some(())
        }
    })
    .await;
}

/// A free loopback port (bound and released), for a process that must come
/// back on the same address. Chosen below the kernel's ephemeral range
/// (32768-60999 here): a port from port 0 lies inside it, and while it sits
/// released any outgoing connect on the machine may take it as its local
/// port (a fresh-clone `make faults` lost F7's checker port that way).
pub fn free_port() -> SocketAddr {
    let (low, span) = (20_000u32, 12_000u32);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for i in 0..span {
        let port = u16::try_from(low + (seed.wrapping_add(i.wrapping_mul(7_919))) % span)
            .expect("port below 32768");
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("addr");
        }
    }
    panic!("no free loopback port in {low}-{}", low + span - 1);
}

/// A `tether-checker` config on `grpc` probing `members`.
pub fn checker_toml(grpc: SocketAddr, members: &[(String, String)]) -> String {
    format!(
        "[checker]\ngrpc_listen = \"{grpc}\"\n[admin]\nlisten = \"\"\n{HEALTH}[log]\nlevel = \"info\"\n{}",
        targets(members)
    )
}

/// A proxy fed by the checker at `checker`.
pub fn fed_proxy_toml(checker: SocketAddr) -> String {
    format!(
        "{}[health_source]\ncheckers = [\"http://{checker}\"]\n",
        proxy_section("")
    )
}

/// A proxy fed by every checker in `checkers`, in that order.
pub fn fed_by_toml(checkers: &[SocketAddr]) -> String {
    let list: Vec<String> = checkers.iter().map(|c| format!("\"http://{c}\"")).collect();
    format!(
        "{}[health_source]\ncheckers = [{}]\n",
        proxy_section(""),
        list.join(", ")
    )
}

/// A running `tether-checker` with its gRPC and admin listeners on
/// loopback ports it chose (read from its log).
#[derive(Debug)]
pub struct Checker {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub config: TempConfig,
}

impl Checker {
    /// Starts a checker probing `members`; run through `wrapper` (see
    /// [`Proc::spawn_wrapped`]) if not empty, e.g. as another uid, with
    /// its config readable by that uid.
    pub async fn start(members: &[(String, String)], wrapper: &[&str]) -> Checker {
        let toml = format!(
            "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{HEALTH}[log]\nlevel = \"info\"\n{}",
            targets(members)
        );
        let config = TempConfig::new(&toml);
        if !wrapper.is_empty() {
            crate::cut::share(&config);
        }
        let proc = Proc::spawn_wrapped(
            wrapper,
            "tether-checker",
            &["--config", config.path_str()],
            &[],
        );
        let grpc = proc.wait_listening("grpc listening", START).await;
        let admin = proc.wait_listening("admin listening", START).await;
        let checker = Checker {
            proc,
            grpc,
            admin,
            config,
        };
        eventually("the checker's /readyz 200", DEADLINE, || async {
            (checker.readyz().await == Some(200)).then_some(())
        })
        .await;
        checker
    }

    /// The status of `GET /readyz` on its admin listener; `None` if no
    /// answer within a second.
    pub async fn readyz(&self) -> Option<u16> {
        readyz(self.admin).await
    }

    /// One sample's value from its `/metrics`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let m = tokio::time::timeout(Duration::from_secs(1), get(self.admin, "/metrics", &[]))
            .await
            .ok()?
            .ok()?;
        m.body
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }
}

/// The status of `GET /readyz` on the admin listener `admin`; `None` if no
/// answer within a second.
pub async fn readyz(admin: SocketAddr) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(1), get(admin, "/readyz", &[]))
        .await
        .ok()?
        .ok()
        .map(|r| r.status)
}
