//! Errors of the proxy library.

use std::net::SocketAddr;

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded checker: {0}")]
    Checker(#[from] tether_checker::Error),
}
