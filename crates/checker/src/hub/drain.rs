//! Draining: the operator's flag on a member (the `Drain` and `Enable`
//! RPCs). It is not the probes': it survives state changes and probe-setting
//! resets, goes with the member when it leaves, and lives in memory only,
//! so a restarted checker starts with nothing draining.

use log::info;
use tether_core::{TargetStatus, UpdateKind};

use super::Hub;

/// What [`HubHandle::set_draining`](super::HubHandle::set_draining) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainOutcome {
    /// The version after the call.
    pub version: u64,
    /// The member's record after the call.
    pub status: TargetStatus,
    /// False when the flag already had the value asked for (nothing was
    /// published).
    pub changed: bool,
}

// === impl Hub ===

impl Hub {
    pub(super) fn set_draining(&mut self, name: &str, draining: bool) -> Option<DrainOutcome> {
        let entry = self.entries.get_mut(name)?;
        if entry.status.draining == draining {
            return Some(DrainOutcome {
                version: self.version,
                status: entry.status.clone(),
                changed: false,
            });
        }
        entry.status.draining = draining;
        let status = entry.status.clone();
        let version = self.publish(UpdateKind::Change(status.clone()));
        let what = if draining { "draining" } else { "enabled" };
        info!(target: "hc", "{} {what} ({}) v{version}", status.name, status.state);
        Some(DrainOutcome {
            version,
            status,
            changed: true,
        })
    }
}
