//! What the checker says about a target and about itself, and the
//! versioned updates that carry both to proxies and other watchers.

use std::time::Duration;

use crate::health::HealthState;
use crate::target::ProbeKind;

/// The health record of one target, as published by a checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    pub name: String,
    pub url: String,
    /// The Host requests and probes send, `host:port`, when it is not the
    /// url's: a member of a DNS entry is sent to one address but keeps the
    /// template url's host (`backend:8080`). `None`: the url's host:port.
    pub host: Option<String>,
    pub state: HealthState,
    pub probe_kind: ProbeKind,
    /// Epoch milliseconds of the last probe's end.
    pub last_probe_ms: Option<u64>,
    pub last_latency: Option<Duration>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Why the last probe failed; empty after a success.
    pub last_error: Option<String>,
    /// Epoch milliseconds of the last state change.
    pub last_change_ms: Option<u64>,
    /// An operator drained it (`Drain`): it takes no new clients but keeps
    /// its sticky ones. Independent of `state`, which probes alone set.
    pub draining: bool,
}

impl TargetStatus {
    /// A record for a target nothing is known of yet.
    pub fn unknown(name: impl Into<String>, url: impl Into<String>, kind: ProbeKind) -> Self {
        TargetStatus {
            name: name.into(),
            url: url.into(),
            host: None,
            state: HealthState::Unknown,
            probe_kind: kind,
            last_probe_ms: None,
            last_latency: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last_error: None,
            last_change_ms: None,
            draining: false,
        }
    }
}

/// What a checker says about itself. A receiver that merges several
/// checkers weighs each one's verdicts by it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckerState {
    /// `Some` while the checker suspects its own network: most of its
    /// probes meet silence at once. It then publishes no verdict caused by
    /// silence, so its members keep their last state. `None` (the default,
    /// and what a checker that predates this field means) is not impaired.
    pub impaired: Option<Impairment>,
}

impl CheckerState {
    /// Not impaired.
    pub const fn ok() -> Self {
        CheckerState { impaired: None }
    }

    pub fn impaired(since_ms: u64, reason: impl Into<String>) -> Self {
        CheckerState {
            impaired: Some(Impairment {
                since_ms,
                reason: reason.into(),
            }),
        }
    }

    pub const fn is_impaired(&self) -> bool {
        self.impaired.is_some()
    }
}

/// Why and since when a checker is impaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impairment {
    /// Epoch milliseconds when it became impaired.
    pub since_ms: u64,
    /// For people: what the checker saw, e.g. "3 of 4 members silent".
    pub reason: String,
}

/// One message of a health stream. Versions grow by exactly one per change,
/// so a receiver that sees a jump knows it missed something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthUpdate {
    pub version: u64,
    pub kind: UpdateKind,
}

impl HealthUpdate {
    /// A snapshot from a checker that is not impaired.
    pub fn snapshot(version: u64, targets: Vec<TargetStatus>) -> Self {
        Self::snapshot_of(version, targets, CheckerState::ok())
    }

    pub fn snapshot_of(version: u64, targets: Vec<TargetStatus>, checker: CheckerState) -> Self {
        HealthUpdate {
            version,
            kind: UpdateKind::Snapshot { targets, checker },
        }
    }

    pub fn change(version: u64, status: TargetStatus) -> Self {
        HealthUpdate {
            version,
            kind: UpdateKind::Change(status),
        }
    }

    pub fn removed(version: u64, name: impl Into<String>) -> Self {
        HealthUpdate {
            version,
            kind: UpdateKind::Removed(name.into()),
        }
    }

    pub fn checker(version: u64, state: CheckerState) -> Self {
        HealthUpdate {
            version,
            kind: UpdateKind::Checker(state),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// The whole pool and the checker's own state as of `version`;
    /// replaces whatever the receiver had.
    Snapshot {
        targets: Vec<TargetStatus>,
        checker: CheckerState,
    },
    /// One target's new record; applies on top of `version - 1`. A name
    /// the receiver does not know is a member that joined the pool.
    Change(TargetStatus),
    /// The member of this name left the pool; applies on top of
    /// `version - 1`.
    Removed(String),
    /// The checker's own state changed (it became impaired, or stopped
    /// being); applies on top of `version - 1`. Members are unchanged.
    Checker(CheckerState),
}
