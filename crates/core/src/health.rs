//! The health state machine of one target.
//!
//! The first probe result sets the state directly, so a fresh pool becomes
//! usable after one round of probes. After that, `fall` consecutive failures
//! turn a healthy target unhealthy and `rise` consecutive successes turn an
//! unhealthy one healthy; a single result of the other kind resets the count.

use std::fmt;
use std::num::NonZeroU32;

/// What is known of a target's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// No probe result yet. Receives no traffic.
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }

    pub const fn is_healthy(self) -> bool {
        matches!(self, HealthState::Healthy)
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    Failure(FailureClass),
}

impl ProbeOutcome {
    pub const fn is_failure(self) -> bool {
        matches!(self, ProbeOutcome::Failure(_))
    }

    /// A failure that was silence (see [`FailureClass::Silence`]).
    pub const fn is_silence(self) -> bool {
        matches!(self, ProbeOutcome::Failure(FailureClass::Silence))
    }
}

/// How a probe failed. The two say different things about who is at
/// fault, which is what lets a checker tell its own trouble from its
/// targets': a checker that hears mostly silence suspects its own network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The target was reached and said no: an HTTP status outside
    /// 200-399, a refused connection, a failed TLS handshake. Only a host
    /// that is there can answer.
    Answer,
    /// Nothing came back: a connect or read timeout, an unreachable
    /// network or host, a name that does not resolve. The target may be
    /// down, or the path to it (the checker's own network) may be.
    Silence,
}

impl FailureClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::Answer => "answer",
            FailureClass::Silence => "silence",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state caused by one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
}

/// Counts consecutive probe results and decides state changes.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    state: HealthState,
    successes: u32,
    failures: u32,
    rise: NonZeroU32,
    fall: NonZeroU32,
    last_change_ms: Option<u64>,
}

impl HealthTracker {
    pub fn new(rise: NonZeroU32, fall: NonZeroU32) -> Self {
        HealthTracker {
            state: HealthState::Unknown,
            successes: 0,
            failures: 0,
            rise,
            fall,
            last_change_ms: None,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Epoch milliseconds of the last state change, if any.
    pub fn last_change_ms(&self) -> Option<u64> {
        self.last_change_ms
    }

    /// Records one probe result observed at `now_ms` (epoch milliseconds)
    /// and returns the transition it caused, if any.
    pub fn observe(&mut self, outcome: ProbeOutcome, now_ms: u64) -> Option<Transition> {
        match outcome {
            ProbeOutcome::Success => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
            }
            ProbeOutcome::Failure(_) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
            }
        }
        debug_assert!(self.successes == 0 || self.failures == 0);

        let next = match (self.state, outcome) {
            (HealthState::Unknown, ProbeOutcome::Success) => HealthState::Healthy,
            (HealthState::Unknown, ProbeOutcome::Failure(_)) => HealthState::Unhealthy,
            (HealthState::Healthy, ProbeOutcome::Failure(_))
                if self.failures >= self.fall.get() =>
            {
                HealthState::Unhealthy
            }
            (HealthState::Unhealthy, ProbeOutcome::Success)
                if self.successes >= self.rise.get() =>
            {
                HealthState::Healthy
            }
            (state, _) => state,
        };
        if next == self.state {
            return None;
        }
        let transition = Transition {
            from: self.state,
            to: next,
        };
        self.state = next;
        self.last_change_ms = Some(now_ms);
        Some(transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;
    use ProbeOutcome::*;

    const FAIL: ProbeOutcome = Failure(FailureClass::Answer);

    fn tracker(rise: u32, fall: u32) -> HealthTracker {
        HealthTracker::new(
            NonZeroU32::new(rise).expect("rise"),
            NonZeroU32::new(fall).expect("fall"),
        )
    }

    #[test]
    fn starts_unknown() {
        let t = tracker(2, 3);
        assert_eq!(t.state(), Unknown);
        assert_eq!(t.last_change_ms(), None);
    }

    #[test]
    fn first_success_sets_healthy_directly() {
        let mut t = tracker(5, 5);
        let tr = t.observe(Success, 10);
        assert_eq!(
            tr,
            Some(Transition {
                from: Unknown,
                to: Healthy
            })
        );
        assert_eq!(t.last_change_ms(), Some(10));
    }

    #[test]
    fn first_failure_sets_unhealthy_directly() {
        let mut t = tracker(5, 5);
        assert_eq!(t.observe(FAIL, 1).map(|t| t.to), Some(Unhealthy));
    }

    #[test]
    fn fall_consecutive_failures_turn_healthy_unhealthy() {
        let mut t = tracker(2, 3);
        t.observe(Success, 0);
        assert_eq!(t.observe(FAIL, 1), None);
        assert_eq!(t.observe(FAIL, 2), None);
        assert_eq!(
            t.observe(FAIL, 3),
            Some(Transition {
                from: Healthy,
                to: Unhealthy
            })
        );
        assert_eq!(t.last_change_ms(), Some(3));
        assert_eq!(t.consecutive_failures(), 3);
    }

    #[test]
    fn rise_consecutive_successes_turn_unhealthy_healthy() {
        let mut t = tracker(2, 3);
        t.observe(FAIL, 0);
        assert_eq!(t.observe(Success, 1), None);
        assert_eq!(t.observe(Success, 2).map(|t| t.to), Some(Healthy));
    }

    #[test]
    fn opposite_result_resets_the_count() {
        let mut t = tracker(2, 3);
        t.observe(Success, 0);
        t.observe(FAIL, 1);
        t.observe(FAIL, 2);
        t.observe(Success, 3);
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.consecutive_successes(), 1);
        t.observe(FAIL, 4);
        t.observe(FAIL, 5);
        assert_eq!(t.state(), Healthy, "the success in between reset the count");
        assert_eq!(t.observe(FAIL, 6).map(|t| t.to), Some(Unhealthy));
    }

    #[test]
    fn same_state_results_cause_no_transition() {
        let mut t = tracker(1, 1);
        t.observe(Success, 0);
        for i in 1..10 {
            assert_eq!(t.observe(Success, i), None);
        }
        assert_eq!(t.last_change_ms(), Some(0));
    }

    #[test]
    fn rise_and_fall_of_one_flip_on_every_change() {
        let mut t = tracker(1, 1);
        t.observe(Success, 0);
        assert_eq!(t.observe(FAIL, 1).map(|t| t.to), Some(Unhealthy));
        assert_eq!(t.observe(Success, 2).map(|t| t.to), Some(Healthy));
    }
}
