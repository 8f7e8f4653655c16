//! The checker's settings: `[checker]`, `[health]`, `[[targets]]`,
//! `[admin]` and `[log]` of the shared config file (`tether_daemon::config`),
//! validated into typed values.

use std::net::SocketAddr;

use tether_core::{ImpairedThreshold, PoolEntry, Target};
use tether_daemon::config::{self as shared, ConfigError, LogConfig, RawFile};
use tether_daemon::tls::ServerTls;

/// Default address of the checker's gRPC listener.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
/// Default address of the checker's admin endpoint.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9902";

/// The checker's validated settings.
#[derive(Clone, Debug)]
pub struct CheckerConfig {
    pub grpc_listen: SocketAddr,
    /// `[checker.tls]`: `None` serves plain HTTP/2.
    pub tls: Option<ServerTls>,
    /// Static targets and `expand = "dns"` templates, in config order.
    pub targets: Vec<PoolEntry>,
    /// `[health] impaired_threshold`: silence from more than this share
    /// of the members (2 or more) makes the checker impaired.
    pub impaired_threshold: ImpairedThreshold,
    /// `None`: no admin endpoint.
    pub admin_listen: Option<SocketAddr>,
    pub log: LogConfig,
}

impl CheckerConfig {
    /// A checker of `targets` on `grpc_listen`, everything else at its
    /// default, without an admin endpoint (tests).
    pub fn new(grpc_listen: SocketAddr, targets: Vec<Target>) -> CheckerConfig {
        CheckerConfig {
            grpc_listen,
            tls: None,
            targets: targets.into_iter().map(PoolEntry::fixed).collect(),
            impaired_threshold: ImpairedThreshold::DEFAULT,
            admin_listen: None,
            log: LogConfig::default(),
        }
    }

    /// Validates the checker's sections of `file`.
    pub fn from_file(file: &RawFile) -> Result<CheckerConfig, ConfigError> {
        let grpc_listen = shared::socket_addr(
            "checker.grpc_listen",
            file.checker
                .grpc_listen
                .as_deref()
                .unwrap_or(DEFAULT_GRPC_LISTEN),
        )?;
        Ok(CheckerConfig {
            grpc_listen,
            tls: tls(file)?,
            targets: shared::pool(file)?,
            impaired_threshold: impaired_threshold(file.health.impaired_threshold)?,
            admin_listen: file.admin.validate(DEFAULT_ADMIN_LISTEN)?,
            log: file.log.validate()?,
        })
    }
}

/// The config key of the impairment threshold.
pub const IMPAIRED_THRESHOLD_KEY: &str = "health.impaired_threshold";

/// `[health] impaired_threshold`: a share in (0, 1]; absent, the default.
pub fn impaired_threshold(raw: Option<f64>) -> Result<ImpairedThreshold, ConfigError> {
    match raw {
        None => Ok(ImpairedThreshold::DEFAULT),
        Some(share) => ImpairedThreshold::new(share).ok_or_else(|| {
            ConfigError::new(
                IMPAIRED_THRESHOLD_KEY,
                format!("must be a share greater than 0 and at most 1, got {share}"),
            )
        }),
    }
}

/// The config section of the gRPC listener's TLS.
pub const TLS_SECTION: &str = "checker.tls";

/// `[checker.tls]`, validated (files read and checked), if set. The
/// embedded checker's listener reads it too.
pub fn tls(file: &RawFile) -> Result<Option<ServerTls>, ConfigError> {
    file.checker
        .tls
        .as_ref()
        .map(|raw| raw.validate(TLS_SECTION))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_impaired_threshold_is_a_share() {
        assert_eq!(
            impaired_threshold(None).ok(),
            Some(ImpairedThreshold::DEFAULT)
        );
        assert_eq!(
            impaired_threshold(Some(0.75))
                .ok()
                .map(ImpairedThreshold::get),
            Some(0.75)
        );
        for bad in [0.0, -1.0, 1.5, f64::NAN] {
            let e = impaired_threshold(Some(bad)).expect_err("refused");
            assert!(e.to_string().contains(IMPAIRED_THRESHOLD_KEY), "{e}");
        }
    }
}
