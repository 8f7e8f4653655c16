//! Errors of the checker library.

use std::net::SocketAddr;

pub use tether_daemon::ConfigError;

/// Why the checker could not run.
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
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// A TLS file changed or vanished since the config was validated.
    #[error("TLS: {0}")]
    Tls(#[from] ConfigError),
}
