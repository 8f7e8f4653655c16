//! The hub: the one task that owns the pool's health and its version.
//!
//! The probe schedulers send it results; it feeds each result to the target's
//! `HealthTracker`, keeps the published record current, and on every state
//! change bumps the version by one and broadcasts the change. Subscribers,
//! queries and the embedded proxy all ask the hub through its handle, so a
//! snapshot and the changes after it are always consistent.
//!
//! Members are keyed by name. [`HubHandle::set_pool`] (a reload) and the
//! DNS tasks change membership at runtime; every member that joins or
//! leaves is published as one change too. Each member's place in the probe
//! schedule carries a generation id, so a result from a member that left,
//! or from a schedule slot that was replaced, is dropped rather than
//! counted for someone else.
//!
//! Passive health: [`HubHandle::report`] asks the hub to re-probe a target
//! now. The hub rate-limits reports and asks the target's scheduler for a
//! short burst of probes; their results go through the same path as
//! scheduled ones (the target's tracker decides), so only probes ever change
//! state.
//!
//! Draining: [`HubHandle::set_draining`] (the `Drain` and `Enable` RPCs)
//! flips a member's `draining` flag and publishes it as one change. The
//! flag is the operator's, not the probes': it survives state changes and
//! probe-setting resets, and goes with the member when it leaves (a url
//! change is a new member). It lives in memory only, so a restarted
//! checker starts with nothing draining.
//!
//! One file per job: `handle` (the API), `schedule` (when probes run),
//! `results` (what a result does), `impaired` (the checker's own state),
//! `membership` (reloads, DNS groups, reconcile), `report`, `drain` and
//! `metrics`; this file holds the state and the task that owns it.

mod drain;
mod handle;
mod impaired;
mod membership;
mod metrics;
mod report;
mod results;
mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use log::info;
use tether_core::{
    CheckerState, HealthTracker, HealthUpdate, ImpairedThreshold, ImpairmentDetector, PoolEntry,
    Target, TargetStatus, UpdateKind,
};
use tether_daemon::metrics::Histogram;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dns::{Resolve, Resolved, SystemResolver};

pub use drain::DrainOutcome;
pub use handle::{HubClosed, HubHandle, Subscription};
pub use membership::MembershipChange;
pub use metrics::{HubMetrics, TargetMetrics, WatcherGuard};
pub(crate) use report::cap;
pub use report::{MAX_REPORT_FIELD, MIN_REPORT_WINDOW, ReportOutcome};
pub use schedule::BURST_GAP;

use handle::Command;
use membership::DnsGroup;
use schedule::{Probed, Schedulers, Slot};

/// How many changes a slow subscriber may fall behind before it is sent a
/// fresh snapshot instead.
const CHANGE_BUFFER: usize = 4096;
/// A snapshot is built again for a new subscriber when the version moved
/// or the last one is older than this: records carry each member's last
/// probe time and latency, which change without a new version, and a
/// subscriber should not start from minutes-old probe details.
pub const SNAPSHOT_REUSE: Duration = Duration::from_secs(1);
const COMMAND_BUFFER: usize = 256;
const RESULT_BUFFER: usize = 1024;
const RESOLVED_BUFFER: usize = 64;

/// A running checker: the hub, which owns the probe schedulers of its members and one
/// resolving task per DNS entry. Dropping it stops them all. per DNS entry. Dropping it stops them all.
#[derive(Debug)]
pub struct Checker {
    handle: HubHandle,
    hub: JoinHandle<()>,
}

impl Checker {
    /// Starts the hub and the probe schedulers, resolving DNS entries with the
    /// system resolver. Takes `Target`s (static members) or `PoolEntry`s.
    /// Must be called inside a tokio runtime.
    pub fn start<E: Into<PoolEntry>>(entries: impl IntoIterator<Item = E>) -> Checker {
        Checker::start_with(entries, Arc::new(SystemResolver))
    }

    /// [`start`](Checker::start) with a resolver of the caller's (tests).
    pub fn start_with<E: Into<PoolEntry>>(
        entries: impl IntoIterator<Item = E>,
        resolver: Arc<dyn Resolve>,
    ) -> Checker {
        Checker::start_configured(entries, resolver, ImpairedThreshold::DEFAULT)
    }

    /// [`start_with`](Checker::start_with) and `[health]
    /// impaired_threshold`.
    pub fn start_configured<E: Into<PoolEntry>>(
        entries: impl IntoIterator<Item = E>,
        resolver: Arc<dyn Resolve>,
        threshold: ImpairedThreshold,
    ) -> Checker {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_BUFFER);
        let (first_tx, first_rx) = watch::channel(false);
        let (checker_tx, checker_rx) = watch::channel(CheckerState::ok());
        let watchers = Arc::new(AtomicUsize::new(0));
        let mut hub = Hub::new(resolver, first_tx, watchers.clone(), checker_tx);
        hub.detector.set_threshold(threshold);
        hub.set_pool(entries.into_iter().map(Into::into).collect());
        // Nobody has subscribed yet: the pool so far is version 0's.
        hub.started = true;
        let task = tokio::spawn(hub.run(cmd_rx));
        Checker {
            handle: HubHandle {
                commands: cmd_tx,
                first_round: first_rx,
                checker: checker_rx,
                watchers,
            },
            hub: task,
        }
    }

    pub fn handle(&self) -> HubHandle {
        self.handle.clone()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        // The hub's tasks are aborted when the hub (their owner) is dropped.
        self.hub.abort();
    }
}

/// A task the hub owns: aborted when the hub lets go of it.
#[derive(Debug)]
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One member of the pool.
struct Entry {
    /// Generation id: its probes' results carry it.
    id: u64,
    target: Target,
    tracker: HealthTracker,
    status: TargetStatus,
    /// Its place in the probe schedule: asks for bursts, and ends its
    /// probing when dropped.
    probe: Slot,
    /// A burst was asked for and its last result is not in yet.
    bursting: bool,
    /// Bursts of this target are at least this far apart.
    report_window: Duration,
    /// When the last counted burst was scheduled.
    last_burst: Option<Instant>,
    probes_succeeded: u64,
    probes_failed: u64,
    probe_duration: Arc<Histogram>,
    /// The checker recovered from impairment and this member has not been
    /// probed afresh since: its silence is still held.
    reprobe: bool,
    /// See [`membership::Wanted::lookup`].
    lookup: Option<Duration>,
}

struct Hub {
    version: u64,
    /// Members by name, and their names in pool order (new members at the
    /// end, as a receiver applying changes sees them).
    entries: HashMap<String, Entry>,
    order: Vec<String>,
    /// Member generation id -> name, for probe results.
    ids: HashMap<u64, String>,
    next_id: u64,
    /// The configured pool, in config order.
    pool: Vec<PoolEntry>,
    /// DNS entries by entry name.
    dns: HashMap<String, DnsGroup>,
    changes: broadcast::Sender<Arc<HealthUpdate>>,
    results: mpsc::Receiver<Probed>,
    /// Who probes the members, and sends `results`.
    schedulers: Schedulers,
    resolved_tx: mpsc::Sender<Resolved>,
    answers: mpsc::Receiver<Resolved>,
    resolver: Arc<dyn Resolve>,
    /// Members without a first probe result yet (only counted until the
    /// first round is done).
    unprobed: usize,
    first_round: watch::Sender<bool>,
    /// Open gRPC Watch streams (counted by the service).
    watchers: Arc<AtomicUsize>,
    /// False while the initial pool is set up: it is the state of version
    /// 0, not a series of changes.
    started: bool,
    /// The last snapshot handed out, and when it was built; see
    /// [`SNAPSHOT_REUSE`].
    shared: Option<(Arc<HealthUpdate>, Instant)>,
    /// Whether the checker suspects itself; see `impaired.rs`.
    detector: ImpairmentDetector<String>,
    /// The detector's state, for readers outside the hub.
    checker_tx: watch::Sender<CheckerState>,
    /// When the checker last stopped being impaired.
    recovered_at: Option<Instant>,
}

// === impl Hub ===

impl Hub {
    fn new(
        resolver: Arc<dyn Resolve>,
        first_round: watch::Sender<bool>,
        watchers: Arc<AtomicUsize>,
        checker_tx: watch::Sender<CheckerState>,
    ) -> Hub {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let (results_tx, results) = mpsc::channel(RESULT_BUFFER);
        let (resolved_tx, answers) = mpsc::channel(RESOLVED_BUFFER);
        Hub {
            version: 0,
            entries: HashMap::new(),
            order: Vec::new(),
            ids: HashMap::new(),
            next_id: 0,
            pool: Vec::new(),
            dns: HashMap::new(),
            changes,
            schedulers: Schedulers::start(&results_tx),
            results,
            resolved_tx,
            answers,
            resolver,
            unprobed: 0,
            first_round,
            watchers,
            started: false,
            shared: None,
            detector: ImpairmentDetector::new(ImpairedThreshold::DEFAULT),
            checker_tx,
            recovered_at: None,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                Some(probed) = self.results.recv() => self.probed(probed),
                Some(answer) = self.answers.recv() => self.resolved(answer),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.answer(cmd),
                    // Every handle is gone: nobody can ask any more.
                    None => return,
                },
            }
        }
    }

    fn answer(&mut self, cmd: Command) {
        // A requester that gave up has dropped its receiver; nothing to do.
        match cmd {
            Command::Subscribe(tx) => {
                let _ = tx.send(Subscription {
                    snapshot: self.snapshot(),
                    changes: self.changes.subscribe(),
                });
            }
            Command::List(tx) => {
                let _ = tx.send((self.version, self.statuses()));
            }
            Command::SetThreshold(threshold, tx) => {
                self.set_threshold(threshold);
                let _ = tx.send(());
            }
            Command::Get(name, tx) => {
                let found = self
                    .entries
                    .get(&name)
                    .map(|e| (self.version, e.status.clone()));
                let _ = tx.send(found);
            }
            Command::Report(report, tx) => {
                let outcome = self.report(&report.name);
                info!(
                    target: "hc",
                    "report for {:?} from {:?} ({:?}): {outcome}",
                    cap(&report.name), report.reporter, report.reason
                );
                let _ = tx.send(outcome);
            }
            Command::SetDraining(name, draining, tx) => {
                let _ = tx.send(self.set_draining(&name, draining));
            }
            Command::SetPool(entries, tx) => {
                let _ = tx.send(self.set_pool(entries));
            }
            Command::Metrics(tx) => {
                let _ = tx.send(self.metrics());
            }
        }
    }

    fn statuses(&self) -> Vec<TargetStatus> {
        self.order
            .iter()
            .filter_map(|name| self.entries.get(name))
            .map(|e| e.status.clone())
            .collect()
    }

    /// The current snapshot, shared with whoever asked at the same version
    /// less than [`SNAPSHOT_REUSE`] ago.
    fn snapshot(&mut self) -> Arc<HealthUpdate> {
        if let Some((snapshot, built)) = &self.shared
            && snapshot.version == self.version
            && built.elapsed() < SNAPSHOT_REUSE
        {
            return snapshot.clone();
        }
        let snapshot = Arc::new(HealthUpdate {
            version: self.version,
            kind: UpdateKind::Snapshot {
                targets: self.statuses(),
                checker: self.detector.state().clone(),
            },
        });
        self.shared = Some((snapshot.clone(), Instant::now()));
        snapshot
    }

    /// Bumps the version and sends `kind` to every subscriber.
    fn publish(&mut self, kind: UpdateKind) -> u64 {
        if !self.started {
            return self.version;
        }
        let next = self.version + 1;
        debug_assert!(next > self.version, "versions only grow");
        self.version = next;
        // No receivers is fine: changes are only for whoever listens now.
        let _ = self.changes.send(Arc::new(HealthUpdate {
            version: next,
            kind,
        }));
        next
    }
}
