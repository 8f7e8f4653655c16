//! The checker's own state: impaired while silence hits more than `[health]
//! impaired_threshold` of its members at once (core's
//! `ImpairmentDetector` decides), because then the likelier cause is the
//! checker's network, not every backend at once.
//!
//! Entering and leaving are each one published change (`UpdateKind::
//! Checker`), one log line on `hc` (WARN in, INFO out) and a new value on
//! the handle's watch, which `grpc.health.v1` service `""`, `/readyz` and
//! `/metrics` read. While impaired, silence changes no member's state (see
//! `results.rs`); answers still do.
//!
//! No outage after a partition heals: on leaving, every member is marked
//! to be re-probed, and until a probe that *started* after the recovery has
//! come back for it, its silence stays held too, so a probe that timed out
//! during the partition cannot publish a verdict the proxies did not have.

use log::{info, warn};
use tether_core::{CheckerState, ImpairedThreshold, UpdateKind};
use tokio::time::Instant;

use super::Hub;

// === impl Hub ===

impl Hub {
    /// Publishes a new state of the checker itself.
    pub(super) fn checker_changed(&mut self, state: CheckerState) {
        let v = self.publish(UpdateKind::Checker(state.clone()));
        match &state.impaired {
            Some(i) => {
                self.recovered_at = None;
                warn!(
                    target: "hc",
                    "checker impaired: {}; the likelier cause is this checker's own network, so \
                     verdicts caused by silence are held (members keep their state) v{v}",
                    i.reason
                );
            }
            None => {
                self.recovered_at = Some(Instant::now());
                for entry in self.entries.values_mut() {
                    entry.reprobe = true;
                }
                info!(
                    target: "hc",
                    "checker no longer impaired: probes reach members again; each member is \
                     re-probed before its state changes v{v}"
                );
            }
        }
        self.checker_tx.send_replace(state);
    }

    pub(super) fn set_threshold(&mut self, threshold: ImpairedThreshold) {
        if self.detector.threshold() != threshold {
            info!(target: "hc", "health.impaired_threshold is now {threshold}");
            self.detector.set_threshold(threshold);
        }
    }
}
