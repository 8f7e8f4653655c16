//! A receiver's view of the pool and of the checker that sends it, kept in
//! step with a versioned update stream.

use crate::status::{CheckerState, HealthUpdate, TargetStatus, UpdateKind};

/// The pool as a health stream told it, in the checker's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolView {
    version: Option<u64>,
    targets: Vec<TargetStatus>,
    checker: CheckerState,
}

/// What applying an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The view changed; republish whatever is built from it.
    Changed,
    /// A duplicate or an older message; nothing changed.
    Stale,
}

/// An update whose version does not follow the view's: the receiver missed
/// something and must ask for a fresh snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub have: Option<u64>,
    pub got: u64,
}

impl PoolView {
    pub fn new() -> Self {
        Self::default()
    }

    /// The version of the last applied update; `None` before the first
    /// snapshot.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn targets(&self) -> &[TargetStatus] {
        &self.targets
    }

    /// What the checker last said about itself (not impaired before the
    /// first snapshot, and from a checker that never says).
    pub fn checker(&self) -> &CheckerState {
        &self.checker
    }

    /// Applies one update. A snapshot always applies (it is the way out of a
    /// gap, and a restarted checker starts counting again). A change applies
    /// only on top of the version right before it.
    pub fn apply(&mut self, update: HealthUpdate) -> Result<Applied, Gap> {
        match update.kind {
            UpdateKind::Snapshot { targets, checker } => {
                if self.version == Some(update.version)
                    && self.targets == targets
                    && self.checker == checker
                {
                    return Ok(Applied::Stale);
                }
                self.version = Some(update.version);
                self.targets = targets;
                self.checker = checker;
                Ok(Applied::Changed)
            }
            UpdateKind::Change(status) => {
                if !self.follows(update.version)? {
                    return Ok(Applied::Stale);
                }
                match self.targets.iter_mut().find(|t| t.name == status.name) {
                    Some(slot) => *slot = status,
                    None => self.targets.push(status),
                }
                Ok(self.advance(update.version))
            }
            UpdateKind::Removed(name) => {
                if !self.follows(update.version)? {
                    return Ok(Applied::Stale);
                }
                // A removal of a name the view never had still moves the
                // version: the sender counted it.
                self.targets.retain(|t| t.name != name);
                Ok(self.advance(update.version))
            }
            UpdateKind::Checker(state) => {
                if !self.follows(update.version)? {
                    return Ok(Applied::Stale);
                }
                self.checker = state;
                Ok(self.advance(update.version))
            }
        }
    }

    /// Whether a change at `version` applies on top of this view: `Ok(true)`
    /// if it is the next version, `Ok(false)` if it is stale, a gap if it
    /// skips ahead or no snapshot came first.
    fn follows(&self, version: u64) -> Result<bool, Gap> {
        let have = self.version.ok_or(Gap {
            have: None,
            got: version,
        })?;
        if version <= have {
            return Ok(false);
        }
        if version != have + 1 {
            return Err(Gap {
                have: Some(have),
                got: version,
            });
        }
        Ok(true)
    }

    fn advance(&mut self, version: u64) -> Applied {
        debug_assert!(
            self.version.is_none_or(|v| v < version),
            "versions only grow"
        );
        self.version = Some(version);
        Applied::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthState;
    use crate::target::ProbeKind;

    fn status(name: &str, state: HealthState) -> TargetStatus {
        let mut s = TargetStatus::unknown(name, format!("http://{name}:80"), ProbeKind::Tcp);
        s.state = state;
        s
    }

    fn snapshot(version: u64, targets: Vec<TargetStatus>) -> HealthUpdate {
        HealthUpdate::snapshot(version, targets)
    }

    fn change(version: u64, s: TargetStatus) -> HealthUpdate {
        HealthUpdate::change(version, s)
    }

    #[test]
    fn snapshot_then_ordered_changes_apply() {
        let mut v = PoolView::new();
        let a = status("a", HealthState::Healthy);
        assert_eq!(v.apply(snapshot(3, vec![a])), Ok(Applied::Changed));
        let a2 = status("a", HealthState::Unhealthy);
        assert_eq!(v.apply(change(4, a2.clone())), Ok(Applied::Changed));
        assert_eq!(v.targets(), &[a2]);
        assert_eq!(v.version(), Some(4));
    }

    #[test]
    fn change_before_any_snapshot_is_a_gap() {
        let mut v = PoolView::new();
        let got = v.apply(change(1, status("a", HealthState::Healthy)));
        assert_eq!(got, Err(Gap { have: None, got: 1 }));
    }

    #[test]
    fn skipped_version_is_a_gap_and_changes_nothing() {
        let mut v = PoolView::new();
        let a = status("a", HealthState::Healthy);
        v.apply(snapshot(1, vec![a.clone()])).expect("snapshot");
        let got = v.apply(change(3, status("a", HealthState::Unhealthy)));
        assert_eq!(
            got,
            Err(Gap {
                have: Some(1),
                got: 3
            })
        );
        assert_eq!(v.targets(), &[a]);
        assert_eq!(v.version(), Some(1));
    }

    #[test]
    fn duplicate_or_old_change_is_stale() {
        let mut v = PoolView::new();
        v.apply(snapshot(5, vec![status("a", HealthState::Healthy)]))
            .expect("snapshot");
        let old = change(5, status("a", HealthState::Unhealthy));
        assert_eq!(v.apply(old), Ok(Applied::Stale));
        assert_eq!(v.targets()[0].state, HealthState::Healthy);
    }

    #[test]
    fn change_of_a_new_name_appends() {
        let mut v = PoolView::new();
        v.apply(snapshot(0, vec![status("a", HealthState::Healthy)]))
            .expect("snapshot");
        v.apply(change(1, status("b", HealthState::Healthy)))
            .expect("change");
        let names: Vec<_> = v.targets().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn removal_takes_the_member_out_with_the_change_rules() {
        let mut v = PoolView::new();
        assert_eq!(
            v.apply(HealthUpdate::removed(1, "a")),
            Err(Gap { have: None, got: 1 })
        );
        let (a, b) = (
            status("a", HealthState::Healthy),
            status("b", HealthState::Healthy),
        );
        v.apply(snapshot(3, vec![a.clone(), b.clone()]))
            .expect("snapshot");
        assert_eq!(v.apply(HealthUpdate::removed(3, "a")), Ok(Applied::Stale));
        assert_eq!(
            v.apply(HealthUpdate::removed(5, "a")),
            Err(Gap {
                have: Some(3),
                got: 5
            })
        );
        assert_eq!(v.targets(), &[a.clone(), b.clone()]);
        assert_eq!(v.apply(HealthUpdate::removed(4, "a")), Ok(Applied::Changed));
        assert_eq!(v.targets(), std::slice::from_ref(&b));
        assert_eq!(v.version(), Some(4));
        // Removing a name the view lacks still counts the version.
        assert_eq!(
            v.apply(HealthUpdate::removed(5, "zz")),
            Ok(Applied::Changed)
        );
        assert_eq!(v.targets(), &[b]);
        assert_eq!(v.version(), Some(5));
    }

    #[test]
    fn a_removed_member_can_join_again_at_the_end() {
        let mut v = PoolView::new();
        let (a, b) = (
            status("a", HealthState::Healthy),
            status("b", HealthState::Healthy),
        );
        v.apply(snapshot(0, vec![a, b])).expect("snapshot");
        v.apply(HealthUpdate::removed(1, "a")).expect("removed");
        v.apply(change(2, status("a", HealthState::Unknown)))
            .expect("added");
        let names: Vec<_> = v.targets().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(v.targets()[1].state, HealthState::Unknown);
    }

    #[test]
    fn snapshot_with_lower_version_replaces_after_checker_restart() {
        let mut v = PoolView::new();
        v.apply(snapshot(40, vec![status("a", HealthState::Healthy)]))
            .expect("snapshot");
        let fresh = vec![status("a", HealthState::Unhealthy)];
        assert_eq!(v.apply(snapshot(0, fresh.clone())), Ok(Applied::Changed));
        assert_eq!(v.targets(), &fresh[..]);
        assert_eq!(v.version(), Some(0));
    }

    #[test]
    fn identical_snapshot_is_stale() {
        let mut v = PoolView::new();
        let s = vec![status("a", HealthState::Healthy)];
        v.apply(snapshot(2, s.clone())).expect("snapshot");
        assert_eq!(v.apply(snapshot(2, s)), Ok(Applied::Stale));
    }
    #[test]
    fn checker_state_comes_with_snapshots_and_changes_with_the_rules() {
        let mut v = PoolView::new();
        assert!(!v.checker().is_impaired());
        let impaired = CheckerState::impaired(1_000, "3 of 4 members silent");
        assert_eq!(
            v.apply(HealthUpdate::checker(1, impaired.clone())),
            Err(Gap { have: None, got: 1 })
        );
        let a = status("a", HealthState::Healthy);
        let snap = HealthUpdate::snapshot_of(2, vec![a.clone()], impaired.clone());
        assert_eq!(v.apply(snap.clone()), Ok(Applied::Changed));
        assert_eq!(v.checker(), &impaired);
        assert_eq!(v.apply(snap), Ok(Applied::Stale));
        // The same members at the same version with another checker state
        // is news, not a duplicate.
        let same_members = HealthUpdate::snapshot(2, vec![a.clone()]);
        assert_eq!(v.apply(same_members), Ok(Applied::Changed));
        assert!(!v.checker().is_impaired());
        assert_eq!(
            v.apply(HealthUpdate::checker(4, impaired.clone())),
            Err(Gap {
                have: Some(2),
                got: 4
            })
        );
        assert_eq!(
            v.apply(HealthUpdate::checker(3, impaired.clone())),
            Ok(Applied::Changed)
        );
        assert_eq!(v.checker(), &impaired);
        assert_eq!(v.targets(), std::slice::from_ref(&a), "members unchanged");
        assert_eq!(v.version(), Some(3));
        assert_eq!(
            v.apply(HealthUpdate::checker(3, CheckerState::ok())),
            Ok(Applied::Stale)
        );
        assert!(v.checker().is_impaired());
        assert_eq!(
            v.apply(HealthUpdate::checker(4, CheckerState::ok())),
            Ok(Applied::Changed)
        );
        assert!(!v.checker().is_impaired());
    }
}
