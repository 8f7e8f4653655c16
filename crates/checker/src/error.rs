//! Errors of the checker library.

use std::net::SocketAddr;

pub use tether_daemon::ConfigError;

/// Why the checker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
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
