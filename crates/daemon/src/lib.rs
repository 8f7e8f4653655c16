//! tether-daemon: what both Tether daemons (checker and proxy) share: the
//! config file and environment, log4rs set-up and reload, signals, one
//! drain handle for every server and task, the admin endpoint (`/metrics`,
//! `/healthz`, `/readyz`, status page), the service `main`, and the
//! hand-over of listening sockets to a new binary (`upgrade`).
//!
//! Depends on `tether-core` for the pool types only; never on the checker
//! or the proxy, which both depend on it.

pub mod admin;
pub mod cert_expiry;
pub mod clock;
pub mod config;
pub mod config_state;
pub mod drain;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod signal;
pub mod tls;
pub mod upgrade;

pub use drain::Drain;
pub use error::{ConfigError, LoggingError};
