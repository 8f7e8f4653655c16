//! The hub's numbers for `/metrics`: the version, open Watch streams, and
//! each member's probe counts and durations (the admin module writes them
//! out).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tether_daemon::metrics::Histogram;

use super::Hub;

/// The hub's numbers for `/metrics`.
#[derive(Clone, Debug)]
pub struct HubMetrics {
    pub version: u64,
    /// gRPC Watch streams open right now.
    pub watch_subscribers: usize,
    /// See [`HubHandle::first_round_done`](super::HubHandle::first_round_done).
    pub first_round_done: bool,
    /// Every current member, in pool order.
    pub targets: Vec<TargetMetrics>,
}

/// One member's probe counts, cumulative since it joined the pool.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    pub name: String,
    pub probes_succeeded: u64,
    pub probes_failed: u64,
    /// Every probe's duration; the hub keeps observing into it.
    pub probe_duration: Arc<Histogram>,
}

/// One open Watch stream, counted while it lives.
#[derive(Debug)]
pub struct WatcherGuard(pub(super) Arc<AtomicUsize>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Hub ===

impl Hub {
    pub(super) fn metrics(&self) -> HubMetrics {
        let targets = self
            .order
            .iter()
            .filter_map(|name| self.entries.get(name))
            .map(|e| TargetMetrics {
                name: e.status.name.clone(),
                probes_succeeded: e.probes_succeeded,
                probes_failed: e.probes_failed,
                probe_duration: e.probe_duration.clone(),
            })
            .collect();
        HubMetrics {
            version: self.version,
            watch_subscribers: self.watchers.load(Ordering::Relaxed),
            first_round_done: *self.first_round.borrow(),
            targets,
        }
    }
}
