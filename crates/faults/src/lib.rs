//! tether-faults: the fault suite. Each scenario starts the built binaries
//! (`tether-proxy`, `tether-checker`, `tether-echo`) with temp configs,
//! drives traffic through the proxy, injects one failure and returns what
//! clients saw ([`Outcome`]): requests, failures by status and by
//! connection error, latency, time to detect and recover, the proxy's RSS
//! and open descriptors before and after, and each target with its verdict.
//!
//! The `tether-faults` binary runs the whole suite with full-size
//! parameters and writes `docs/RELIABILITY.md`; `tests/` run a fast subset
//! ([`Size::Quick`]) as ordinary `cargo test`.

pub mod cut;
mod health_plane;
pub mod load;
pub mod probe;
pub mod relay;
pub mod report;
pub mod scenarios;
pub mod setup;
mod upgrade;

pub use load::{Figures, Load, LoadSpec, Sample};
pub use report::{Check, Outcome};

/// How big a run is: `Full` for `make faults` (the figures in the doc),
/// `Quick` for `cargo test` (smaller counts, shorter outages, generous
/// bounds on timing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Quick,
    Full,
}

impl Size {
    pub fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Size::Quick => quick,
            Size::Full => full,
        }
    }
}
