//! What the hub does with one probe's result: the member's tracker decides,
//! the published record takes the probe's details, and a state change is
//! one new version on Watch. It also latches the first round as done.
//!
//! Silence is held back while the checker is impaired, and after it, until
//! the member has been probed afresh (see `impaired.rs`): such a result
//! updates the member's record but not its tracker, so the member keeps the
//! state it had.

use std::sync::Arc;

use log::{debug, info};
use tether_core::{HealthState, HealthUpdate, ProbeOutcome, UpdateKind};
use tether_daemon::clock;
use tokio::sync::broadcast;

use super::schedule::Probed;
use super::{Entry, Hub};
use crate::probe::ProbeResult;

// === impl Hub ===

impl Hub {
    pub(super) fn probed(&mut self, probed: Probed) {
        let Some(name) = self.ids.get(&probed.id) else {
            // From a member that left or a schedule slot that was replaced.
            return;
        };
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if probed.ends_burst {
            entry.bursting = false;
        }
        let outcome = probed.result.outcome;
        let members = self.entries.len();
        let name = name.clone();
        // The detector goes first: the silence that tips the checker into
        // impairment is held back like any after it.
        if let Some(state) = self
            .detector
            .observe(name.clone(), outcome, members, clock::now_ms())
        {
            self.checker_changed(state);
        }
        let impaired = self.detector.state().is_impaired();
        let recovered_at = self.recovered_at;
        let Some(entry) = self.entries.get_mut(&name) else {
            return;
        };
        if entry.reprobe && recovered_at.is_none_or(|at| probed.started >= at) {
            entry.reprobe = false;
        }
        let hold = outcome.is_silence() && (impaired || entry.reprobe);
        let first = entry.tracker.state() == HealthState::Unknown;
        Self::observe(entry, probed.result, hold, &mut self.version, &self.changes);
        if first && entry.tracker.state() != HealthState::Unknown {
            self.unprobed = self.unprobed.saturating_sub(1);
            self.check_first_round();
        }
    }

    /// Counts `result` for `entry`; with `hold`, only in its record (last
    /// probe, latency, error), not in its tracker.
    fn observe(
        entry: &mut Entry,
        result: ProbeResult,
        hold: bool,
        version: &mut u64,
        changes: &broadcast::Sender<Arc<HealthUpdate>>,
    ) {
        let now = clock::now_ms();
        match result.outcome {
            ProbeOutcome::Success => entry.probes_succeeded += 1,
            ProbeOutcome::Failure(_) => entry.probes_failed += 1,
        }
        entry.probe_duration.observe(result.latency);
        let status = &mut entry.status;
        status.last_probe_ms = Some(now);
        status.last_latency = Some(result.latency);
        if hold {
            debug!(
                target: "hc",
                "{} probe met silence in {:?} (held: the checker suspects itself): {}",
                status.name,
                result.latency,
                result.error.as_deref().unwrap_or("")
            );
            status.last_error = result.error;
            return;
        }
        let transition = entry.tracker.observe(result.outcome, now);
        status.consecutive_successes = entry.tracker.consecutive_successes();
        status.consecutive_failures = entry.tracker.consecutive_failures();
        status.last_error = result.error;
        match result.outcome {
            ProbeOutcome::Success => debug!(
                target: "hc",
                "{} probe ok in {:?}", status.name, result.latency
            ),
            ProbeOutcome::Failure(_) => debug!(
                target: "hc",
                "{} probe failed in {:?}: {}",
                status.name,
                result.latency,
                status.last_error.as_deref().unwrap_or("")
            ),
        }
        let Some(t) = transition else {
            return;
        };
        status.state = t.to;
        status.last_change_ms = entry.tracker.last_change_ms();
        let next = *version + 1;
        debug_assert!(next > *version, "versions only grow");
        *version = next;
        match (t.to.is_healthy(), &status.last_error) {
            (false, Some(err)) => info!(
                target: "hc",
                "{} {} -> {} ({err}) v{next}", status.name, t.from, t.to
            ),
            _ => info!(target: "hc", "{} {} -> {} v{next}", status.name, t.from, t.to),
        }
        // No receivers is fine: changes are only for whoever listens now.
        let _ = changes.send(Arc::new(HealthUpdate {
            version: next,
            kind: UpdateKind::Change(status.clone()),
        }));
    }

    /// Latches the first round as done once no member waits for its first
    /// probe and every DNS entry has had its first lookup.
    pub(super) fn check_first_round(&mut self) {
        if *self.first_round.borrow() {
            return;
        }
        if self.unprobed == 0 && self.dns.values().all(|g| g.looked_up) {
            info!(target: "hc", "first probe round done at v{}", self.version);
            self.first_round.send_replace(true);
        }
    }
}
