//! Passive health: a proxy saw a member fail and asks for a re-probe. The
//! hub decides here whether a burst runs (rate limit, state) and wakes the
//! member's scheduler; what the burst finds goes the way of every probe
//! result, so a report alone never changes a state.

use std::time::Duration;

use tether_core::HealthState;
use tokio::time::Instant;

use super::Hub;

/// The shortest time between two report bursts of one target; a target's
/// own interval applies when it is longer.
pub const MIN_REPORT_WINDOW: Duration = Duration::from_secs(1);
/// Report fields (reason, reporter) are cut to this many bytes.
pub const MAX_REPORT_FIELD: usize = 256;

/// What the hub did with a report (see [`HubHandle::report`](super::HubHandle::report)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// A burst of re-probes was scheduled and starts at once.
    Scheduled,
    /// No burst: one is running, or one for the healthy target started
    /// less than max(interval, 1 s) ago.
    RateLimited,
    /// No burst: the target is already unhealthy, so there is nothing to
    /// confirm; its scheduled probes decide when it comes back.
    AlreadyUnhealthy,
    /// The pool has no target of that name.
    UnknownTarget,
}

impl ReportOutcome {
    /// Whether a re-probe was scheduled (the wire's `accepted`).
    pub const fn accepted(self) -> bool {
        matches!(self, ReportOutcome::Scheduled)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Scheduled => "scheduled",
            ReportOutcome::RateLimited => "rate-limited",
            ReportOutcome::AlreadyUnhealthy => "already unhealthy",
            ReportOutcome::UnknownTarget => "unknown target",
        }
    }
}

impl std::fmt::Display for ReportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) struct Report {
    pub(super) name: String,
    pub(super) reason: String,
    pub(super) reporter: String,
}

// === impl Hub ===

impl Hub {
    /// Decides on a report and, if it passes, asks for the burst.
    ///
    /// A healthy target gets a burst of the failures it still lacks to
    /// fall, at most one burst per `report_window`. A target still unknown
    /// gets its first probe now; that one is not counted against the window,
    /// as it can happen only once (the state never returns to unknown).
    pub(super) fn report(&mut self, name: &str) -> ReportOutcome {
        let Some(entry) = self.entries.get_mut(name) else {
            return ReportOutcome::UnknownTarget;
        };
        let now = Instant::now();
        let (probes, counted) = match entry.tracker.state() {
            HealthState::Unhealthy => return ReportOutcome::AlreadyUnhealthy,
            HealthState::Unknown => (1, false),
            HealthState::Healthy => (
                entry
                    .target
                    .probe
                    .fall
                    .get()
                    .saturating_sub(entry.tracker.consecutive_failures())
                    .max(1),
                true,
            ),
        };
        let recent = entry
            .last_burst
            .is_some_and(|at| now.duration_since(at) < entry.report_window);
        if entry.bursting || (counted && recent) {
            return ReportOutcome::RateLimited;
        }
        entry.probe.burst(probes);
        entry.bursting = true;
        if counted {
            entry.last_burst = Some(now);
        }
        ReportOutcome::Scheduled
    }
}

/// `s` cut to at most [`MAX_REPORT_FIELD`] bytes, on a char boundary.
pub(crate) fn cap(s: &str) -> &str {
    if s.len() <= MAX_REPORT_FIELD {
        return s;
    }
    let mut end = MAX_REPORT_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_short_fields_and_cuts_on_a_char_boundary() {
        assert_eq!(cap("connect refused"), "connect refused");
        let long = "é".repeat(200); // 400 bytes
        let cut = cap(&long);
        assert!(cut.len() <= MAX_REPORT_FIELD, "{}", cut.len());
        assert_eq!(cut.len(), MAX_REPORT_FIELD);
        let odd = format!("x{long}");
        assert_eq!(cap(&odd).len(), MAX_REPORT_FIELD - 1);
    }
}
