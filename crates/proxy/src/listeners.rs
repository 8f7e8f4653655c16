//! Every listening socket the proxy serves on (clients, admin, the embedded
//! checker's gRPC), each bound fresh or taken over from the process a
//! binary upgrade replaces, and named by the config key that asks for it so
//! errors and the upgrade protocol say which one.

use std::net::SocketAddr;

use log::info;
use tether_daemon::upgrade::{Inheritance, Listener};
use tokio::net::TcpListener;

use crate::config::{HealthSource, ProxyConfig};
use crate::error::Error;

/// The client listener's key.
pub const PROXY: &str = "proxy.listen";
/// The admin endpoint's key.
pub const ADMIN: &str = "admin.listen";
/// The embedded checker's gRPC key.
pub const GRPC: &str = "checker.grpc_listen";

/// Connections the kernel may queue before the proxy accepts them. tokio's
/// `TcpListener::bind` asks for 128: a burst of new clients overflows that,
/// the kernel falls back to SYN cookies, and a client whose final ACK then
/// meets a full queue thinks it is connected while the proxy never sees it
/// (the fault suite's F13 lost 1,500 of 10,000). The kernel caps this at
/// `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// The proxy's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: Option<TcpListener>,
    pub grpc: Option<TcpListener>,
}

impl Listeners {
    /// Everything `config` listens on, taken from `inherited` where the old
    /// process has it, bound fresh where it does not. Bound before serving
    /// anything: a port in use is an error at start, not a half-running
    /// proxy (and, in an upgrade, the old process keeps serving).
    pub async fn acquire(
        config: &ProxyConfig,
        mut inherited: Option<&mut Inheritance>,
    ) -> Result<Listeners, Error> {
        let proxy = acquire(PROXY, config.listen, inherited.as_deref_mut()).await?;
        let admin = match config.admin_listen {
            Some(addr) => Some(acquire(ADMIN, addr, inherited.as_deref_mut()).await?),
            None => None,
        };
        let grpc = match grpc_listen(config) {
            Some(addr) => Some(acquire(GRPC, addr, inherited).await?),
            None => None,
        };
        Ok(Listeners { proxy, admin, grpc })
    }

    /// With `proxy` (and `admin`) bound by the caller: tests bind port 0.
    pub async fn around(
        proxy: TcpListener,
        admin: Option<TcpListener>,
        config: &ProxyConfig,
    ) -> Result<Listeners, Error> {
        let admin = match (admin, config.admin_listen) {
            (Some(bound), _) => Some(bound),
            (None, Some(addr)) => Some(bind(ADMIN, addr).await?),
            (None, None) => None,
        };
        let grpc = match grpc_listen(config) {
            Some(addr) => Some(bind(GRPC, addr).await?),
            None => None,
        };
        Ok(Listeners { proxy, admin, grpc })
    }

    /// A copy of each socket under its key, for the process that may
    /// replace this one.
    pub fn offer(&self) -> std::io::Result<Vec<Listener>> {
        let mut out = vec![Listener::of(PROXY, &self.proxy)?];
        if let Some(admin) = &self.admin {
            out.push(Listener::of(ADMIN, admin)?);
        }
        if let Some(grpc) = &self.grpc {
            out.push(Listener::of(GRPC, grpc)?);
        }
        Ok(out)
    }
}

/// The embedded checker's gRPC address, if it serves one.
fn grpc_listen(config: &ProxyConfig) -> Option<SocketAddr> {
    match &config.source {
        HealthSource::Embedded { grpc_listen, .. } => *grpc_listen,
        HealthSource::Checkers(_) => None,
    }
}

/// `key`'s listener: the old process's socket for the same key and address
/// (a configured port 0 takes the old one's port, whatever it was), else
/// its socket on exactly this address under another key, else a fresh one.
async fn acquire(
    key: &'static str,
    addr: SocketAddr,
    inherited: Option<&mut Inheritance>,
) -> Result<TcpListener, Error> {
    let Some(inherited) = inherited else {
        return bind(key, addr).await;
    };
    let same_key = |l: &Listener| {
        l.key == key && (l.addr == addr || addr.port() == 0 && l.addr.ip() == addr.ip())
    };
    let taken = inherited
        .take(same_key)
        .or_else(|| inherited.take(|l| l.addr == addr));
    let Some(listener) = taken else {
        info!(target: "proxy", "upgrade: {key} {addr} is new; bound fresh");
        return bind(key, addr).await;
    };
    let (from, at, pid) = (listener.key.clone(), listener.addr, inherited.from_pid);
    let listener = listener
        .into_tokio()
        .map_err(|source| Error::Bind { key, addr, source })?;
    info!(target: "proxy", "upgrade: {key} {at} taken over from pid {pid} ({from})");
    Ok(listener)
}

/// Binds the listener `key` configures.
pub async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As TcpListener::bind does: a restarted proxy can bind at once
        // while its old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|source| Error::Bind { key, addr, source })
}
