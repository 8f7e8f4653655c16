//! The hub's handle: the one way in. Every call is a command sent to the hub
//! task with a oneshot for its answer, so a caller never touches the state
//! the hub owns and every answer is as of one moment in the hub's order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tether_core::{CheckerState, HealthUpdate, ImpairedThreshold, PoolEntry, Target, TargetStatus};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::drain::DrainOutcome;
use super::membership::MembershipChange;
use super::metrics::{HubMetrics, WatcherGuard};
use super::report::{Report, ReportOutcome, cap};

/// A consistent starting point plus every change after it.
#[derive(Debug)]
pub struct Subscription {
    /// A `Snapshot` update at the current version, shared by every
    /// subscriber that asked within [`SNAPSHOT_REUSE`](super::SNAPSHOT_REUSE) at that version: 50
    /// subscribers of a 10,000-member pool hold one copy, not 50. Let go of
    /// it once sent.
    pub snapshot: Arc<HealthUpdate>,
    /// Changes with versions after the snapshot's.
    pub changes: broadcast::Receiver<Arc<HealthUpdate>>,
}

/// The hub is gone (the checker was shut down).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the checker hub has stopped")]
pub struct HubClosed;

pub(super) enum Command {
    Subscribe(oneshot::Sender<Subscription>),
    List(oneshot::Sender<(u64, Vec<TargetStatus>)>),
    Get(String, oneshot::Sender<Option<(u64, TargetStatus)>>),
    Report(Report, oneshot::Sender<ReportOutcome>),
    SetDraining(String, bool, oneshot::Sender<Option<DrainOutcome>>),
    SetPool(Vec<PoolEntry>, oneshot::Sender<MembershipChange>),
    Metrics(oneshot::Sender<HubMetrics>),
    SetThreshold(ImpairedThreshold, oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to the hub.
#[derive(Clone, Debug)]
pub struct HubHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) first_round: watch::Receiver<bool>,
    pub(super) checker: watch::Receiver<CheckerState>,
    pub(super) watchers: Arc<AtomicUsize>,
}

impl HubHandle {
    pub async fn subscribe(&self) -> Result<Subscription, HubClosed> {
        self.ask(Command::Subscribe).await
    }

    /// The current version and every target's latest record.
    pub async fn list(&self) -> Result<(u64, Vec<TargetStatus>), HubClosed> {
        self.ask(Command::List).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<(u64, TargetStatus)>, HubClosed> {
        let name = name.to_owned();
        self.ask(|tx| Command::Get(name, tx)).await
    }

    /// Drains the member `name` (`draining = true`: no new clients, sticky
    /// ones stay) or enables it again (`false`). A real change bumps the
    /// version and goes out on Watch; asking for the flag it already has
    /// changes nothing. `None` if the pool has no member of that name.
    pub async fn set_draining(
        &self,
        name: &str,
        draining: bool,
    ) -> Result<Option<DrainOutcome>, HubClosed> {
        let name = name.to_owned();
        self.ask(|tx| Command::SetDraining(name, draining, tx))
            .await
    }

    /// Makes `targets` the whole pool (a reload without DNS entries); see
    /// [`set_pool`](HubHandle::set_pool).
    pub async fn set_targets(&self, targets: Vec<Target>) -> Result<MembershipChange, HubClosed> {
        self.set_pool(targets.into_iter().map(PoolEntry::fixed).collect())
            .await
    }

    /// Makes `entries` the pool (a reload). Members are matched by name:
    /// a new name joins (`unknown`, probed within a second), a name no
    /// longer there leaves and its probing stops, a name whose url
    /// changed leaves and joins again, and a name whose url stayed but
    /// whose probe settings changed is reset (new schedule slot, `unknown`,
    /// counters kept). Each of these bumps the version by one and goes out
    /// on Watch. A DNS entry that is new or changed is resolved at once;
    /// its members join when the answer arrives, so they are not in the
    /// returned change. Duplicate names: the first wins, later ones are
    /// ignored with a warning (config validation refuses them).
    pub async fn set_pool(&self, entries: Vec<PoolEntry>) -> Result<MembershipChange, HubClosed> {
        self.ask(|tx| Command::SetPool(entries, tx)).await
    }

    /// What the checker says about itself now (impaired or not).
    pub fn checker_state(&self) -> CheckerState {
        self.checker.borrow().clone()
    }

    /// [`checker_state`](HubHandle::checker_state), as it changes.
    pub fn watch_checker_state(&self) -> watch::Receiver<CheckerState> {
        self.checker.clone()
    }

    /// Applies `[health] impaired_threshold` (a reload).
    pub async fn set_impaired_threshold(
        &self,
        threshold: ImpairedThreshold,
    ) -> Result<(), HubClosed> {
        self.ask(|tx| Command::SetThreshold(threshold, tx)).await
    }

    /// The version, open Watch streams and per-member probe counts.
    pub async fn metrics(&self) -> Result<HubMetrics, HubClosed> {
        self.ask(Command::Metrics).await
    }

    /// Whether the first probe round is done: every member there was
    /// since the start had its first probe result and every DNS entry its
    /// first lookup (answered or failed). Once true it stays true, also
    /// across reloads, so readiness does not flap.
    pub fn first_round_done(&self) -> bool {
        *self.first_round.borrow()
    }

    /// Waits until [`first_round_done`](HubHandle::first_round_done).
    pub async fn first_round(&self) -> Result<(), HubClosed> {
        let mut rx = self.first_round.clone();
        rx.wait_for(|done| *done)
            .await
            .map(|_| ())
            .map_err(|_| HubClosed)
    }

    /// Counts one gRPC Watch stream for [`HubMetrics::watch_subscribers`]
    /// until the returned guard is dropped.
    pub fn count_watcher(&self) -> WatcherGuard {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherGuard(self.watchers.clone())
    }

    /// Passive health: someone (a proxy) saw `name` fail and asks for it to
    /// be re-probed now. This never changes state by itself: when it answers
    /// [`ReportOutcome::Scheduled`], the target's scheduler runs up to
    /// `fall` probes back to back ([`BURST_GAP`](super::BURST_GAP) apart, stopping at the first
    /// success) and their results count like any scheduled probe's, so a
    /// confirmed failure is published as a change and an unconfirmed report
    /// changes nothing. The interval restarts after the burst.
    ///
    /// Rate limit: at most one burst per healthy target per
    /// max(interval, 1 s), and none while one runs
    /// ([`ReportOutcome::RateLimited`]). A target that is already unhealthy
    /// gets none ([`ReportOutcome::AlreadyUnhealthy`]). A target still
    /// unknown (no probe result yet, e.g. just after a checker restart) gets
    /// its first probe now, outside the window: that can happen only once.
    /// `reason` is only logged (cut to [`MAX_REPORT_FIELD`](super::MAX_REPORT_FIELD) bytes); the
    /// report is logged on `hc` at info.
    pub async fn report(&self, name: &str, reason: &str) -> Result<ReportOutcome, HubClosed> {
        self.report_from(name, reason, "local").await
    }

    /// [`report`](HubHandle::report) naming who reports (e.g. a proxy's
    /// listen address); `reporter` is only logged, cut like `reason`.
    pub async fn report_from(
        &self,
        name: &str,
        reason: &str,
        reporter: &str,
    ) -> Result<ReportOutcome, HubClosed> {
        let report = Report {
            name: name.to_owned(),
            reason: cap(reason).to_owned(),
            reporter: cap(reporter).to_owned(),
        };
        self.ask(|tx| Command::Report(report, tx)).await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, HubClosed> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| HubClosed)?;
        rx.await.map_err(|_| HubClosed)
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Subscribe(_) => "Subscribe",
            Command::List(_) => "List",
            Command::Get(..) => "Get",
            Command::Report(..) => "Report",
            Command::SetDraining(..) => "SetDraining",
            Command::SetPool(..) => "SetPool",
            Command::Metrics(_) => "Metrics",
            Command::SetThreshold(..) => "SetThreshold",
        })
    }
}
