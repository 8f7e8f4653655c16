//! Errors of the proxy library.

use std::net::SocketAddr;

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `key` is the setting that chose the address, so the message says
    /// which listener it is and what to change.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded checker: {0}")]
    Checker(#[from] tether_checker::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::LoadError),
    #[error("{0}")]
    Upgrade(#[from] tether_daemon::upgrade::UpgradeError),
    #[error("--upgrade needs proxy.upgrade_socket, the running proxy's upgrade socket")]
    NoUpgradeSocket,
    /// An upgrading process that cannot route gives up; the old one serves on.
    #[error("upgrade: no health round within {0:?}; the running proxy keeps serving")]
    NotReady(std::time::Duration),
}

/// An error and its sources on one line, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
