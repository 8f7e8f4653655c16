//! Several checkers' views of one pool, merged into the one view a proxy
//! routes on: shared health without shared fate.
//!
//! Each checker is a voter. Only a *live* checker (its stream is up and it
//! does not call itself impaired) votes, and only on the members it knows;
//! `unknown` abstains. A member is unhealthy when more of its voters say
//! unhealthy than healthy: a strict majority of the verdicts, so a tie keeps
//! it in rotation. One live checker therefore rules alone, exactly as a
//! proxy following a single checker always did.
//!
//! Membership is the union of the live checkers' pools, in the order they
//! are first seen (checker order, then each checker's own order), so a
//! member one checker has not learned of yet (a reload or DNS change that
//! reached one checker first) is not lost; it takes votes only from the
//! checkers that know it.

use std::collections::HashMap;

use crate::health::HealthState;
use crate::pool::PoolView;
use crate::status::{Impairment, TargetStatus};

/// What one checker says: the pool as its stream told it, and whether its
/// word counts now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckerView {
    /// Its pool, its own version and what it says of itself (impaired or
    /// not); kept while the stream is down so an operator can see what it
    /// said last.
    pub pool: PoolView,
    /// A Watch stream is open and its snapshot has arrived.
    pub stream_up: bool,
}

impl CheckerView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this checker votes: its stream is up and it is not
    /// impaired.
    pub fn is_live(&self) -> bool {
        self.stream_up && !self.is_impaired()
    }

    /// The checker says its own probes cannot be trusted (most members are
    /// silent to it at once): its verdicts do not count until it recovers.
    pub fn is_impaired(&self) -> bool {
        self.impairment().is_some()
    }

    pub fn impairment(&self) -> Option<&Impairment> {
        self.pool.checker().impaired.as_ref()
    }

    /// Names of the members this checker calls unhealthy, in its order.
    pub fn unhealthy(&self) -> impl Iterator<Item = &str> {
        self.pool
            .targets()
            .iter()
            .filter(|t| t.state == HealthState::Unhealthy)
            .map(|t| t.name.as_str())
    }
}

/// The merged pool: one record per member, whose `state` is the vote's
/// outcome (`Unknown` when no live checker that knows it has a verdict) and
/// whose `draining` is set when any live checker that knows it drains it
/// (an operator drains through one checker). The other fields come from
/// the first voter that agrees with the outcome, else the first that knows
/// the member; a name two checkers give different urls keeps the first
/// checker's.
///
/// `None` when no checker is live: the caller keeps what it had (fail
/// static), since "nobody can tell" is not "everything is down".
pub fn merge<'a>(views: impl IntoIterator<Item = &'a CheckerView>) -> Option<Vec<TargetStatus>> {
    let mut tallies: Vec<Tally<'a>> = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    let mut any_live = false;
    for view in views.into_iter().filter(|v| v.is_live()) {
        any_live = true;
        for t in view.pool.targets() {
            let i = *index.entry(t.name.as_str()).or_insert_with(|| {
                tallies.push(Tally::default());
                tallies.len() - 1
            });
            tallies[i].add(t);
        }
    }
    if !any_live {
        return None;
    }
    Some(tallies.into_iter().map(Tally::outcome).collect())
}

/// The votes on one member.
#[derive(Default)]
struct Tally<'a> {
    /// Every live checker's record of it, in checker order.
    records: Vec<&'a TargetStatus>,
    healthy: usize,
    unhealthy: usize,
    draining: bool,
}

impl<'a> Tally<'a> {
    fn add(&mut self, t: &'a TargetStatus) {
        match t.state {
            HealthState::Healthy => self.healthy += 1,
            HealthState::Unhealthy => self.unhealthy += 1,
            HealthState::Unknown => {}
        }
        self.draining |= t.draining;
        self.records.push(t);
    }

    fn outcome(self) -> TargetStatus {
        let state = if self.healthy + self.unhealthy == 0 {
            HealthState::Unknown
        } else if self.unhealthy > self.healthy {
            HealthState::Unhealthy
        } else {
            HealthState::Healthy
        };
        debug_assert!(!self.records.is_empty(), "a tally has a record");
        let first = self.records[0];
        let pick = self
            .records
            .iter()
            .copied()
            .find(|r| r.state == state && r.url == first.url)
            .unwrap_or(first);
        TargetStatus {
            state,
            draining: self.draining,
            ..pick.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{CheckerState, HealthUpdate};
    use crate::target::ProbeKind;
    use HealthState::*;
    use proptest::prelude::*;

    fn status(name: &str, state: HealthState) -> TargetStatus {
        let mut s = TargetStatus::unknown(name, format!("http://{name}:80"), ProbeKind::Tcp);
        s.state = state;
        s
    }

    fn checker(live: bool, targets: &[(&str, HealthState)]) -> CheckerView {
        let mut pool = PoolView::new();
        pool.apply(HealthUpdate::snapshot(
            1,
            targets.iter().map(|(n, s)| status(n, *s)).collect(),
        ))
        .expect("snapshot");
        CheckerView {
            pool,
            stream_up: live,
        }
    }

    fn impair(view: &mut CheckerView) {
        let next = view.pool.version().expect("a snapshot") + 1;
        view.pool
            .apply(HealthUpdate::checker(
                next,
                CheckerState::impaired(5, "3 of 4 members silent"),
            ))
            .expect("next version");
    }

    fn states(merged: &[TargetStatus]) -> Vec<(&str, HealthState)> {
        merged.iter().map(|t| (t.name.as_str(), t.state)).collect()
    }

    #[test]
    fn one_live_checker_rules_alone() {
        let a = checker(true, &[("x", Healthy), ("y", Unhealthy), ("z", Unknown)]);
        let merged = merge([&a]).expect("live");
        assert_eq!(
            states(&merged),
            [("x", Healthy), ("y", Unhealthy), ("z", Unknown)]
        );
    }

    #[test]
    fn a_tie_keeps_the_member_in() {
        let a = checker(true, &[("x", Healthy)]);
        let b = checker(true, &[("x", Unhealthy)]);
        assert_eq!(states(&merge([&a, &b]).expect("live")), [("x", Healthy)]);
        assert_eq!(states(&merge([&b, &a]).expect("live")), [("x", Healthy)]);
    }

    #[test]
    fn a_majority_takes_it_out() {
        let a = checker(true, &[("x", Unhealthy)]);
        let b = checker(true, &[("x", Healthy)]);
        let c = checker(true, &[("x", Unhealthy)]);
        assert_eq!(
            states(&merge([&a, &b, &c]).expect("live")),
            [("x", Unhealthy)]
        );
    }

    #[test]
    fn dead_and_impaired_checkers_do_not_vote() {
        let a = checker(true, &[("x", Healthy)]);
        let down = checker(false, &[("x", Unhealthy)]);
        let mut impaired = checker(true, &[("x", Unhealthy)]);
        impair(&mut impaired);
        assert!(!impaired.is_live() && impaired.is_impaired());
        assert_eq!(impaired.impairment().map(|i| i.since_ms), Some(5));
        assert_eq!(
            states(&merge([&a, &down, &impaired]).expect("live")),
            [("x", Healthy)]
        );
        assert_eq!(merge([&down, &impaired]), None, "no live checker");
        assert_eq!(merge([]), None);
    }

    #[test]
    fn unknown_abstains() {
        // A restarted checker knows nothing yet: the other one rules.
        let a = checker(true, &[("x", Unhealthy), ("y", Healthy)]);
        let b = checker(true, &[("x", Unknown), ("y", Unknown)]);
        assert_eq!(
            states(&merge([&a, &b]).expect("live")),
            [("x", Unhealthy), ("y", Healthy)]
        );
        // Nobody knows: unknown (the table keeps what it knew).
        let c = checker(true, &[("x", Unknown)]);
        assert_eq!(states(&merge([&b, &c]).expect("live"))[0], ("x", Unknown));
    }

    #[test]
    fn membership_is_the_union_and_votes_come_from_those_who_know() {
        let a = checker(true, &[("x", Healthy), ("y", Unhealthy)]);
        let b = checker(true, &[("y", Healthy), ("z", Unhealthy)]);
        let c = checker(true, &[("y", Unhealthy)]);
        let gone = checker(false, &[("w", Healthy)]);
        assert_eq!(
            states(&merge([&a, &b, &c, &gone]).expect("live")),
            [("x", Healthy), ("y", Unhealthy), ("z", Unhealthy)]
        );
    }

    #[test]
    fn one_live_drain_drains_and_records_agree_with_the_outcome() {
        let a = checker(true, &[("x", Unhealthy)]);
        let b = checker(true, &[("x", Healthy)]);
        let mut drained = status("x", Healthy);
        drained.draining = true;
        drained.last_change_ms = Some(7);
        let mut pool = PoolView::new();
        pool.apply(HealthUpdate::snapshot(2, vec![drained]))
            .expect("snapshot");
        let c = CheckerView {
            pool,
            stream_up: true,
        };
        let merged = merge([&a, &b, &c]).expect("live");
        assert_eq!(merged[0].state, Healthy);
        assert!(merged[0].draining);
        // The record is a healthy voter's (b's: no last change), not a's.
        assert_eq!(merged[0].last_change_ms, None);
    }

    #[test]
    fn conflicting_urls_keep_the_first_checkers() {
        let a = checker(true, &[("x", Healthy)]);
        let mut b = CheckerView {
            stream_up: true,
            ..CheckerView::new()
        };
        let mut other = status("x", Unhealthy);
        other.url = "http://elsewhere:1".into();
        b.pool
            .apply(HealthUpdate::snapshot(1, vec![other.clone(), other]))
            .expect("snapshot");
        let merged = merge([&a, &b]).expect("live");
        assert_eq!(merged[0].url, "http://x:80");
    }

    fn state() -> impl Strategy<Value = HealthState> {
        prop_oneof![Just(Unknown), Just(Healthy), Just(Unhealthy)]
    }

    proptest! {
        /// For any set of checkers (live or not) and any member they may or
        /// may not know: no live checker means no verdict; otherwise the
        /// members are the live ones' union, and a member is out exactly
        /// when more live checkers that know it say unhealthy than healthy.
        #[test]
        fn the_vote_is_a_strict_majority_of_live_verdicts(
            checkers in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), proptest::collection::vec(proptest::option::of(state()), 4)),
                0..7,
            )
        ) {
            let names = ["m0", "m1", "m2", "m3"];
            let views: Vec<CheckerView> = checkers
                .iter()
                .map(|(up, impaired, says)| {
                    let targets: Vec<(&str, HealthState)> = names
                        .iter()
                        .zip(says)
                        .filter_map(|(n, s)| s.map(|s| (*n, s)))
                        .collect();
                    let mut v = checker(*up, &targets);
                    if *impaired {
                        impair(&mut v);
                    }
                    v
                })
                .collect();
            let merged = merge(&views);
            let live: Vec<_> = checkers.iter().filter(|(up, imp, _)| *up && !*imp).collect();
            if live.is_empty() {
                prop_assert_eq!(merged, None);
                return Ok(());
            }
            let merged = merged.expect("some checker is live");
            for (i, name) in names.iter().enumerate() {
                let said: Vec<HealthState> = live.iter().filter_map(|(_, _, s)| s[i]).collect();
                let got = merged.iter().find(|t| t.name == *name).map(|t| t.state);
                if said.is_empty() {
                    prop_assert_eq!(got, None);
                    continue;
                }
                let up = said.iter().filter(|s| **s == Healthy).count();
                let down = said.iter().filter(|s| **s == Unhealthy).count();
                let want = if up + down == 0 {
                    Unknown
                } else if down > up {
                    Unhealthy
                } else {
                    Healthy
                };
                prop_assert_eq!(got, Some(want));
            }
        }
    }
}
