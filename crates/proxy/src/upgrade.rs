//! The proxy's part in a binary upgrade (`tether_daemon::upgrade` is the
//! protocol). A new process (`--upgrade`) inherits the running one's
//! listening sockets, waits until its own routing table can route before
//! it accepts anything, tells the old one it serves (the old one then
//! stops accepting and drains), and takes the upgrade socket file over. A
//! running process offers its listeners to the next one.

use std::time::{Duration, Instant};

use log::{error, info, warn};
use tether_daemon::upgrade::{self, Inheritance, Listener, PendingSocket};

use crate::config::ProxyConfig;
use crate::error::Error;
use crate::stats::ProxyStats;
use crate::table::TableCell;

/// The setting, for messages.
pub const KEY: &str = "proxy.upgrade_socket";
/// How long a new process may take to have its first health round. Past
/// it, it gives up and the old one, which never stopped, keeps serving: a
/// new process that would answer every request with 503 is no upgrade.
pub const READY_WAIT: Duration = Duration::from_secs(30);
/// How often the wait looks at the table (a start-up step, not the
/// request path).
const READY_POLL: Duration = Duration::from_millis(10);

/// What this process does about upgrades: what it inherited (started with
/// `--upgrade`), and the upgrade socket it will answer on.
#[derive(Debug, Default)]
pub struct Plan {
    inherited: Option<Inheritance>,
    socket: Option<PendingSocket>,
}

impl Plan {
    /// No upgrade socket: tests and configs without one.
    pub fn none() -> Plan {
        Plan::default()
    }

    /// For a process starting with `config`; `upgrading`: it was started
    /// with `--upgrade` and takes over from the process at the socket.
    pub async fn start(config: &ProxyConfig, upgrading: bool) -> Result<Plan, Error> {
        let Some(path) = &config.upgrade_socket else {
            if upgrading {
                return Err(Error::NoUpgradeSocket);
            }
            return Ok(Plan::none());
        };
        let inherited = if upgrading {
            let inherited = upgrade::inherit(KEY, path).await?;
            info!(
                target: "proxy",
                "upgrade: taking over from pid {} through {}",
                inherited.from_pid,
                path.display()
            );
            Some(inherited)
        } else {
            None
        };
        // Bound now, so nothing about it can fail once this one serves.
        let socket = PendingSocket::bind(KEY, path, !upgrading)?;
        Ok(Plan {
            inherited,
            socket: Some(socket),
        })
    }

    /// Whether this process answers on an upgrade socket (and so keeps
    /// copies of its listening sockets to offer).
    pub fn offers(&self) -> bool {
        self.socket.is_some()
    }

    /// The old process's listeners, while they are being matched to this
    /// config.
    pub fn inherited(&mut self) -> Option<&mut Inheritance> {
        self.inherited.as_mut()
    }

    /// Says which of the old process's listeners this config drops; each
    /// closes when the old process drains.
    pub fn log_untaken(&self) {
        let Some(inherited) = &self.inherited else {
            return;
        };
        for l in inherited.untaken() {
            info!(
                target: "proxy",
                "upgrade: {} {} is not in this config; it closes when pid {} drains",
                l.key, l.addr, inherited.from_pid
            );
        }
    }

    /// In an upgrade, waits until the routing table has its first health
    /// round (as `/readyz` counts it), so that the first client this
    /// process accepts is routed as the old one would have; at once
    /// otherwise.
    pub async fn until_ready(&self, table: &TableCell, stats: &ProxyStats) -> Result<(), Error> {
        if self.inherited.is_none() {
            return Ok(());
        }
        let start = Instant::now();
        while table.load().version().is_none() || !stats.is_settled() {
            if start.elapsed() >= READY_WAIT {
                return Err(Error::NotReady(READY_WAIT));
            }
            tokio::time::sleep(READY_POLL).await;
        }
        info!(
            target: "proxy",
            "upgrade: routing table ready after {:?}; accepting",
            start.elapsed()
        );
        Ok(())
    }

    /// Runs once this process accepts: tells the old process (which then
    /// drains), takes the socket file over, and offers `listeners` to the
    /// next process. Completes with that process's pid once it serves;
    /// never without an upgrade socket.
    pub async fn serve(self, listeners: std::io::Result<Vec<Listener>>) -> u32 {
        if let Some(inherited) = self.inherited {
            let pid = inherited.from_pid;
            match inherited.serving().await {
                Ok(()) => {
                    info!(target: "proxy", "upgrade: serving; pid {pid} stops accepting and drains")
                }
                Err(e) => warn!(
                    target: "proxy",
                    "upgrade: cannot tell pid {pid} this process serves ({e}); both serve until it stops"
                ),
            }
        }
        let Some(pending) = self.socket else {
            return std::future::pending().await;
        };
        let listeners = match listeners {
            Ok(l) => l,
            Err(e) => {
                error!(target: "proxy", "{KEY}: cannot copy the listening sockets ({e}); upgrades are off");
                return std::future::pending().await;
            }
        };
        let socket = match pending.commit() {
            Ok(s) => s,
            Err(e) => {
                error!(target: "proxy", "{e}; upgrades are off");
                return std::future::pending().await;
            }
        };
        info!(
            target: "proxy",
            "upgrade socket at {} (pid {})",
            socket.path().display(),
            std::process::id()
        );
        socket.offer(listeners, "proxy").await
    }
}
