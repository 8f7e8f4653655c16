//! Telling a checker's own trouble from its targets'.
//!
//! One backend that stops answering is a backend problem. Most of them
//! going silent at once (timeouts, unreachable networks, names that do not
//! resolve) is far likelier the checker's own network: a cut cable, a
//! partition, a broken resolver. Publishing that as "every backend is down"
//! would make every proxy that follows the checker answer 503 while every
//! backend is fine. [`ImpairmentDetector`] watches each member's latest
//! probe outcome and says when the checker should suspect itself: silence
//! from more than the threshold of the members. An answer (a status, a
//! refused connection) is never silence: a host that says no is there.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

use crate::health::ProbeOutcome;
use crate::status::CheckerState;

/// The share of members whose silence makes a checker impaired; silence
/// must hit *more* than this share. In (0, 1]; 1 never impairs.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct ImpairedThreshold(f64);

impl ImpairedThreshold {
    /// More than half of the members silent at once.
    pub const DEFAULT: ImpairedThreshold = ImpairedThreshold(0.5);

    /// `None` unless `share` is in (0, 1].
    pub fn new(share: f64) -> Option<Self> {
        (share > 0.0 && share <= 1.0).then_some(ImpairedThreshold(share))
    }

    pub const fn get(self) -> f64 {
        self.0
    }
}

impl Default for ImpairedThreshold {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for ImpairedThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Decides from probe outcomes whether the checker is impaired. The
/// window is each member's latest probe: every member is probed once per
/// interval, so these are the outcomes of about the last interval (plus a
/// timeout for the silent ones).
///
/// Only with two or more members: a single silent member says nothing
/// about the checker.
#[derive(Clone, Debug)]
pub struct ImpairmentDetector<K> {
    threshold: ImpairedThreshold,
    /// Members whose latest probe met silence.
    silent: HashSet<K>,
    state: CheckerState,
}

impl<K: Hash + Eq> ImpairmentDetector<K> {
    pub fn new(threshold: ImpairedThreshold) -> Self {
        ImpairmentDetector {
            threshold,
            silent: HashSet::new(),
            state: CheckerState::ok(),
        }
    }

    pub fn state(&self) -> &CheckerState {
        &self.state
    }

    pub fn threshold(&self) -> ImpairedThreshold {
        self.threshold
    }

    /// Takes effect at the next [`observe`](Self::observe) or
    /// [`forget`](Self::forget).
    pub fn set_threshold(&mut self, threshold: ImpairedThreshold) {
        self.threshold = threshold;
    }

    /// Records `member`'s latest outcome, with `members` in the pool now
    /// and `now_ms` in epoch milliseconds, and returns the checker's new
    /// state if it changed.
    pub fn observe(
        &mut self,
        member: K,
        outcome: ProbeOutcome,
        members: usize,
        now_ms: u64,
    ) -> Option<CheckerState> {
        if outcome.is_silence() {
            self.silent.insert(member);
        } else {
            self.silent.remove(&member);
        }
        self.decide(members, now_ms)
    }

    /// `member` left the pool: its outcome no longer counts.
    pub fn forget(&mut self, member: &K, members: usize, now_ms: u64) -> Option<CheckerState> {
        self.silent.remove(member);
        self.decide(members, now_ms)
    }

    fn decide(&mut self, members: usize, now_ms: u64) -> Option<CheckerState> {
        debug_assert!(
            self.silent.len() <= members,
            "silent members are pool members"
        );
        let silent = self.silent.len();
        // `silent / members > threshold`, without dividing.
        let impaired = members >= 2 && silent as f64 > self.threshold.get() * members as f64;
        if impaired == self.state.is_impaired() {
            return None;
        }
        self.state = if impaired {
            CheckerState::impaired(now_ms, format!("{silent} of {members} members silent"))
        } else {
            CheckerState::ok()
        };
        Some(self.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::FailureClass;

    const OK: ProbeOutcome = ProbeOutcome::Success;
    const SILENT: ProbeOutcome = ProbeOutcome::Failure(FailureClass::Silence);
    const NO: ProbeOutcome = ProbeOutcome::Failure(FailureClass::Answer);

    fn detector() -> ImpairmentDetector<&'static str> {
        ImpairmentDetector::new(ImpairedThreshold::DEFAULT)
    }

    #[test]
    fn threshold_is_a_share_in_zero_to_one() {
        assert_eq!(ImpairedThreshold::new(0.0), None);
        assert_eq!(ImpairedThreshold::new(-0.1), None);
        assert_eq!(ImpairedThreshold::new(1.01), None);
        assert_eq!(ImpairedThreshold::new(f64::NAN), None);
        assert_eq!(
            ImpairedThreshold::new(1.0).map(ImpairedThreshold::get),
            Some(1.0)
        );
        assert_eq!(ImpairedThreshold::default().get(), 0.5);
    }

    #[test]
    fn silence_from_more_than_half_impairs_and_answers_bring_it_back() {
        let mut d = detector();
        assert_eq!(d.observe("a", SILENT, 4, 10), None);
        assert_eq!(
            d.observe("b", SILENT, 4, 20),
            None,
            "half is not more than half"
        );
        let got = d.observe("c", SILENT, 4, 30).expect("impaired");
        let i = got.impaired.expect("impaired");
        assert_eq!(i.since_ms, 30);
        assert_eq!(i.reason, "3 of 4 members silent");
        assert!(d.state().is_impaired());
        // Further silence changes nothing; the time stays the first one.
        assert_eq!(d.observe("d", SILENT, 4, 40), None);
        assert_eq!(d.state().impaired.as_ref().map(|i| i.since_ms), Some(30));
        assert_eq!(d.observe("a", OK, 4, 50), None, "3 of 4 still silent");
        assert_eq!(d.observe("b", NO, 4, 60), Some(CheckerState::ok()));
        assert!(!d.state().is_impaired());
    }

    #[test]
    fn answers_are_not_silence() {
        let mut d = detector();
        for m in ["a", "b", "c"] {
            assert_eq!(
                d.observe(m, NO, 3, 1),
                None,
                "a 503 or a refusal is an answer"
            );
        }
        assert!(!d.state().is_impaired());
    }

    #[test]
    fn one_member_never_impairs() {
        let mut d = detector();
        assert_eq!(d.observe("a", SILENT, 1, 1), None);
        assert!(!d.state().is_impaired());
        // A second member makes it count.
        assert!(d.observe("b", SILENT, 2, 2).is_some());
        // Back to one member: the rule no longer applies.
        assert_eq!(d.forget(&"b", 1, 3), Some(CheckerState::ok()));
    }

    #[test]
    fn a_member_that_leaves_stops_counting() {
        let mut d = detector();
        d.observe("a", SILENT, 3, 1);
        assert!(d.observe("b", SILENT, 3, 2).is_some());
        assert_eq!(d.forget(&"b", 2, 3), Some(CheckerState::ok()), "1 of 2");
    }

    #[test]
    fn a_threshold_of_one_never_impairs() {
        let mut d = ImpairmentDetector::new(ImpairedThreshold::new(1.0).expect("valid"));
        for m in ["a", "b", "c"] {
            assert_eq!(d.observe(m, SILENT, 3, 1), None);
        }
        let mut low = ImpairmentDetector::new(ImpairedThreshold::new(0.2).expect("valid"));
        assert!(low.observe("a", SILENT, 3, 1).is_some(), "1 of 3 > 0.2");
    }
}
