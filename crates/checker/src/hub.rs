//! The hub: the one task that owns the pool's health and its version.
//!
//! Probe tasks send it results; it feeds each result to the target's
//! `HealthTracker`, keeps the published record current, and on every state
//! change bumps the version by one and broadcasts the change. Subscribers,
//! queries and the embedded proxy all ask the hub through its handle, so a
//! snapshot and the changes after it are always consistent.
//!
//! Members are keyed by name. [`HubHandle::set_pool`] (a reload) and the
//! DNS tasks change membership at runtime; every member that joins or
//! leaves is published as one change too. Each member's probe task carries
//! a generation id, so a result from a member that left, or from a probe
//! task that was replaced, is dropped rather than counted for someone else.
//!
//! Passive health: [`HubHandle::report`] asks the hub to re-probe a target
//! now. The hub rate-limits reports and wakes the target's probe task, which
//! runs a short burst of probes; their results go through the same path as
//! scheduled ones (the target's tracker decides), so only probes ever change
//! state.
//!
//! Draining: [`HubHandle::set_draining`] (the `Drain` and `Enable` RPCs)
//! flips a member's `draining` flag and publishes it as one change. The
//! flag is the operator's, not the probes': it survives state changes and
//! probe-setting resets, and goes with the member when it leaves (a url
//! change is a new member). It lives in memory only, so a restarted
//! checker starts with nothing draining.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use log::{debug, info, warn};
use tether_core::target::DEFAULT_DNS_REFRESH;
use tether_core::{
    CheckerState, HealthState, HealthTracker, HealthUpdate, PoolEntry, ProbeOutcome, Target,
    TargetStatus, UpdateKind,
};
use tether_daemon::clock;
use tether_daemon::metrics::Histogram;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dns::{self, Resolve, Resolved, SystemResolver};
use crate::probe::{ProbeResult, Prober};

/// How many changes a slow subscriber may fall behind before it is sent a
/// fresh snapshot instead.
const CHANGE_BUFFER: usize = 4096;
/// A snapshot is built again for a new subscriber when the version moved
/// or the last one is older than this: records carry each member's last
/// probe time and latency, which change without a new version, and a
/// subscriber should not start from minutes-old probe details.
pub const SNAPSHOT_REUSE: Duration = Duration::from_secs(1);
/// The first probes of a fresh checker are spread over this much time.
const FIRST_PROBE_SPREAD: Duration = Duration::from_secs(1);
const COMMAND_BUFFER: usize = 256;
const RESULT_BUFFER: usize = 1024;
const RESOLVED_BUFFER: usize = 64;
/// The pause between two probes of a report burst.
pub const BURST_GAP: Duration = Duration::from_millis(50);
/// The shortest time between two report bursts of one target; a target's
/// own interval applies when it is longer.
pub const MIN_REPORT_WINDOW: Duration = Duration::from_secs(1);
/// Report fields (reason, reporter) are cut to this many bytes.
pub const MAX_REPORT_FIELD: usize = 256;

/// A consistent starting point plus every change after it.
#[derive(Debug)]
pub struct Subscription {
    /// A `Snapshot` update at the current version, shared by every
    /// subscriber that asked within [`SNAPSHOT_REUSE`] at that version: 50
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

/// What the hub did with a report (see [`HubHandle::report`]).
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

struct Report {
    name: String,
    reason: String,
    reporter: String,
}

/// What [`HubHandle::set_draining`] did.
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

/// What a membership change did, in the order it was published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Members that joined (state unknown until their first probe).
    pub added: Vec<String>,
    /// Members that left, including those whose url changed (they left and
    /// joined again under the same name).
    pub removed: Vec<String>,
    /// Members whose url stayed but whose probe settings changed (for a
    /// target given by host name, `dns_refresh` counts as one): probed
    /// afresh and published once as `unknown`; proxies keep the health
    /// they knew until the first new probe.
    pub reset: Vec<String>,
    /// The version after the change.
    pub version: u64,
}

impl MembershipChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.reset.is_empty()
    }

    /// What a reload log line says of it; `None` when nothing changed.
    pub fn summary(&self) -> Option<String> {
        (!self.is_empty()).then(|| {
            format!(
                "pool (added {:?}, removed {:?}, re-probed {:?})",
                self.added, self.removed, self.reset
            )
        })
    }
}

/// The hub's numbers for `/metrics`.
#[derive(Clone, Debug)]
pub struct HubMetrics {
    pub version: u64,
    /// gRPC Watch streams open right now.
    pub watch_subscribers: usize,
    /// See [`HubHandle::first_round_done`].
    pub first_round_done: bool,
    /// Every current member, in pool order.
    pub targets: Vec<TargetMetrics>,
}

/// One member's probe counts, cumulative since it joined the pool.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    pub name: String,
    pub probes_succeeded: u64,
    pub probes_failed: u64,
    /// Every probe's duration; the hub keeps observing into it.
    pub probe_duration: Arc<Histogram>,
}

enum Command {
    Subscribe(oneshot::Sender<Subscription>),
    List(oneshot::Sender<(u64, Vec<TargetStatus>)>),
    Get(String, oneshot::Sender<Option<(u64, TargetStatus)>>),
    Report(Report, oneshot::Sender<ReportOutcome>),
    SetDraining(String, bool, oneshot::Sender<Option<DrainOutcome>>),
    SetPool(Vec<PoolEntry>, oneshot::Sender<MembershipChange>),
    Metrics(oneshot::Sender<HubMetrics>),
}

/// A cheap, cloneable way to talk to the hub.
#[derive(Clone, Debug)]
pub struct HubHandle {
    commands: mpsc::Sender<Command>,
    first_round: watch::Receiver<bool>,
    watchers: Arc<AtomicUsize>,
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
    /// longer there leaves and its probe task stops, a name whose url
    /// changed leaves and joins again, and a name whose url stayed but
    /// whose probe settings changed is reset (new probe task, `unknown`,
    /// counters kept). Each of these bumps the version by one and goes out
    /// on Watch. A DNS entry that is new or changed is resolved at once;
    /// its members join when the answer arrives, so they are not in the
    /// returned change. Duplicate names: the first wins, later ones are
    /// ignored with a warning (config validation refuses them).
    pub async fn set_pool(&self, entries: Vec<PoolEntry>) -> Result<MembershipChange, HubClosed> {
        self.ask(|tx| Command::SetPool(entries, tx)).await
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
    /// [`ReportOutcome::Scheduled`], the target's probe task runs up to
    /// `fall` probes back to back ([`BURST_GAP`] apart, stopping at the first
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
    /// `reason` is only logged (cut to [`MAX_REPORT_FIELD`] bytes); the
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

/// One open Watch stream, counted while it lives.
#[derive(Debug)]
pub struct WatcherGuard(Arc<AtomicUsize>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
        })
    }
}

/// A running checker: the hub, which owns one probe task per member and one
/// resolving task per DNS entry. Dropping it stops them all.
#[derive(Debug)]
pub struct Checker {
    handle: HubHandle,
    hub: JoinHandle<()>,
}

impl Checker {
    /// Starts the hub and the probe tasks, resolving DNS entries with the
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
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_BUFFER);
        let (first_tx, first_rx) = watch::channel(false);
        let watchers = Arc::new(AtomicUsize::new(0));
        let mut hub = Hub::new(resolver, first_tx, watchers.clone());
        hub.set_pool(entries.into_iter().map(Into::into).collect());
        // Nobody has subscribed yet: the pool so far is version 0's.
        hub.started = true;
        let task = tokio::spawn(hub.run(cmd_rx));
        Checker {
            handle: HubHandle {
                commands: cmd_tx,
                first_round: first_rx,
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

/// What a probe task sends the hub: one probe's result.
#[derive(Debug)]
struct Probed {
    /// The member's generation id.
    id: u64,
    result: ProbeResult,
    /// The last probe of a report burst: the target may be woken again.
    ends_burst: bool,
}

/// Probes one target forever. The first probe comes at a random offset
/// within the first second (or the interval, if shorter): soon enough that
/// a fresh checker knows its pool quickly even with long intervals, spread
/// enough that a large pool is never probed in lockstep; later probes keep
/// that phase. A report burst (`trigger` says how many probes at most)
/// runs between two ticks and restarts the interval after it.
///
/// A checker runs one of these per member, 10,000 of them idle at almost
/// any time, so what one keeps while it waits is memory times 10,000: the
/// probe itself runs boxed (its future, hyper's and the timer's state,
/// is a few KiB), and the member's record is let go of once the prober is
/// made.
async fn probe_loop(
    id: u64,
    member: Wanted,
    results: mpsc::Sender<Probed>,
    trigger: Arc<Trigger>,
    resolver: Arc<dyn Resolve>,
) {
    let (mut prober, interval) = {
        let Wanted {
            target,
            host,
            lookup,
        } = member;
        let refresh = lookup.unwrap_or(DEFAULT_DNS_REFRESH);
        let prober = Prober::new(&target).with_resolver(resolver, refresh);
        let prober = match &host {
            Some(host) => prober.with_host(host),
            None => prober,
        };
        (prober, target.probe.interval)
    };
    let offset = interval.min(FIRST_PROBE_SPREAD).mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let result = Box::pin(prober.probe()).await;
                let probed = Probed { id, result, ends_burst: false };
                if results.send(probed).await.is_err() {
                    return;
                }
            }
            () = trigger.notify.notified() => {
                let probes = trigger.probes.load(Ordering::Acquire);
                if !Box::pin(burst(id, &mut prober, probes, &results)).await {
                    return;
                }
                ticker.reset();
            }
        }
    }
}

/// Up to `probes` (at least one) probes [`BURST_GAP`] apart, ending at the
/// first success; the last result says it ends the burst. False when the
/// hub is gone.
async fn burst(id: u64, prober: &mut Prober, probes: u32, results: &mpsc::Sender<Probed>) -> bool {
    let probes = probes.max(1);
    for n in 1..=probes {
        let result = prober.probe().await;
        let ends_burst = n == probes || result.outcome == ProbeOutcome::Success;
        let probed = Probed {
            id,
            result,
            ends_burst,
        };
        if results.send(probed).await.is_err() {
            return false;
        }
        if ends_burst {
            break;
        }
        tokio::time::sleep(BURST_GAP).await;
    }
    true
}

/// Wakes a probe task for a report burst of at most `probes` probes. One
/// per member: a tokio channel would do, but its state is cache-padded,
/// ~700 bytes a member.
#[derive(Debug, Default)]
struct Trigger {
    probes: AtomicU32,
    notify: Notify,
}

impl Trigger {
    fn burst(&self, probes: u32) {
        self.probes.store(probes, Ordering::Release);
        // Kept as a permit if the task is busy probing: it bursts next.
        self.notify.notify_one();
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
    /// Generation id: its probe task's results carry it.
    id: u64,
    target: Target,
    tracker: HealthTracker,
    status: TargetStatus,
    /// Wakes the probe task for a burst.
    trigger: Arc<Trigger>,
    /// A burst was asked for and its last result is not in yet.
    bursting: bool,
    /// Bursts of this target are at least this far apart.
    report_window: Duration,
    /// When the last counted burst was scheduled.
    last_burst: Option<Instant>,
    probes_succeeded: u64,
    probes_failed: u64,
    probe_duration: Arc<Histogram>,
    _task: Owned,
    /// See [`Wanted::lookup`].
    lookup: Option<Duration>,
}

/// A member the configured pool stands for.
#[derive(Clone, Debug)]
struct Wanted {
    target: Target,
    /// The Host its requests and probes send when that is not the url's
    /// (a DNS member keeps its entry's host).
    host: Option<String>,
    /// A static target given by host name: how long one lookup stands
    /// (`[health] dns_refresh`). `None` for an address, which is never
    /// looked up, so a changed refresh re-probes only the members it
    /// applies to.
    lookup: Option<Duration>,
}

/// Whether probes of `target` look its host up (a name, not an address).
fn looks_up(target: &Target) -> bool {
    target
        .host_port()
        .is_some_and(|(host, _)| host.parse::<std::net::IpAddr>().is_err())
}

impl Wanted {
    fn status(&self) -> TargetStatus {
        let t = &self.target;
        TargetStatus {
            host: self.host.clone(),
            ..TargetStatus::unknown(&t.name, &t.url, t.probe.kind)
        }
    }
}

/// An `expand = "dns"` entry: its resolving task and the addresses of its
/// last usable answer.
struct DnsGroup {
    entry: PoolEntry,
    /// The resolving task's generation id.
    id: u64,
    /// Sorted, without duplicates.
    addrs: Vec<SocketAddr>,
    /// The first lookup has answered (or failed).
    looked_up: bool,
    _task: Option<Owned>,
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
    results_tx: mpsc::Sender<Probed>,
    results: mpsc::Receiver<Probed>,
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
}

// === impl Hub ===

impl Hub {
    fn new(
        resolver: Arc<dyn Resolve>,
        first_round: watch::Sender<bool>,
        watchers: Arc<AtomicUsize>,
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
            results_tx,
            results,
            resolved_tx,
            answers,
            resolver,
            unprobed: 0,
            first_round,
            watchers,
            started: false,
            shared: None,
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

    /// Decides on a report and, if it passes, wakes the probe task.
    ///
    /// A healthy target gets a burst of the failures it still lacks to
    /// fall, at most one burst per `report_window`. A target still unknown
    /// gets its first probe now; that one is not counted against the window,
    /// as it can happen only once (the state never returns to unknown).
    fn report(&mut self, name: &str) -> ReportOutcome {
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
        entry.trigger.burst(probes);
        entry.bursting = true;
        if counted {
            entry.last_burst = Some(now);
        }
        ReportOutcome::Scheduled
    }

    fn set_draining(&mut self, name: &str, draining: bool) -> Option<DrainOutcome> {
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
                checker: CheckerState::ok(),
            },
        });
        self.shared = Some((snapshot.clone(), Instant::now()));
        snapshot
    }

    fn metrics(&self) -> HubMetrics {
        let targets = self
            .order
            .iter()
            .filter_map(|name| self.entries.get(name))
            .map(|e| TargetMetrics {
                name: e.status.name.clone(),
                probes_succeeded: e.probes_succeeded,
                probes_failed: e.probes_failed,
                probe_duration: e.probe_duration.clone(),
            })
            .collect();
        HubMetrics {
            version: self.version,
            watch_subscribers: self.watchers.load(Ordering::Relaxed),
            first_round_done: *self.first_round.borrow(),
            targets,
        }
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

    // --- membership ---

    fn set_pool(&mut self, pool: Vec<PoolEntry>) -> MembershipChange {
        let mut dns = std::mem::take(&mut self.dns);
        for entry in pool.iter().filter(|e| e.is_dns()) {
            let name = &entry.target.name;
            if self.dns.contains_key(name) {
                continue; // a duplicate name; `desired` warns
            }
            let group = match dns.remove(name) {
                Some(old) if old.entry == *entry => old,
                // The same host and port: its addresses still stand while
                // the new task resolves again.
                Some(old) if old.entry.target.url == entry.target.url => {
                    self.dns_group(entry.clone(), old.addrs, old.looked_up)
                }
                _ => self.dns_group(entry.clone(), Vec::new(), false),
            };
            self.dns.insert(name.clone(), group);
        }
        // Groups left in `dns` are gone from the config; dropping them
        // stops their tasks, and `reconcile` removes their members.
        drop(dns);
        self.pool = pool;
        let change = self.reconcile();
        self.check_first_round();
        change
    }

    /// A DNS group with a fresh resolving task.
    fn dns_group(&mut self, entry: PoolEntry, addrs: Vec<SocketAddr>, looked_up: bool) -> DnsGroup {
        self.next_id += 1;
        let id = self.next_id;
        let task = match (entry.target.host_port(), entry.dns_refresh) {
            (Some((host, port)), Some(every)) => {
                let job = dns::Job {
                    entry: entry.target.name.clone(),
                    id,
                    host: host.to_owned(),
                    port,
                    every,
                };
                let task = dns::resolve_loop(job, self.resolver.clone(), self.resolved_tx.clone());
                Some(Owned(tokio::spawn(task)))
            }
            _ => {
                warn!(target: "hc", "{}: cannot resolve url {:?}", entry.target.name, entry.target.url);
                None
            }
        };
        DnsGroup {
            looked_up: looked_up || task.is_none(),
            entry,
            id,
            addrs,
            _task: task,
        }
    }

    /// The members the configured pool stands for now, in config order.
    fn desired(&self) -> Vec<Wanted> {
        let mut out: Vec<Wanted> = Vec::with_capacity(self.pool.len());
        let mut names = HashSet::with_capacity(self.pool.len());
        let members = self.pool.iter().flat_map(|entry| -> Vec<Wanted> {
            match self.dns.get(&entry.target.name) {
                Some(group) if entry.is_dns() => {
                    let host = entry.member_host().map(str::to_owned);
                    group
                        .addrs
                        .iter()
                        .map(|&a| Wanted {
                            target: entry.member(a),
                            host: host.clone(),
                            lookup: None,
                        })
                        .collect()
                }
                _ => vec![Wanted {
                    lookup: looks_up(&entry.target).then_some(entry.host_refresh),
                    target: entry.target.clone(),
                    host: None,
                }],
            }
        });
        for w in members {
            if names.insert(w.target.name.clone()) {
                out.push(w);
            } else {
                let t = &w.target;
                warn!(target: "hc", "ignoring a second member named {:?} ({})", t.name, t.url);
            }
        }
        out
    }

    /// Brings the members in line with [`desired`](Hub::desired), one
    /// published change per member that leaves, joins or is reset.
    fn reconcile(&mut self) -> MembershipChange {
        let desired = self.desired();
        let wanted: HashMap<&str, &Wanted> = desired
            .iter()
            .map(|w| (w.target.name.as_str(), w))
            .collect();
        let mut change = MembershipChange::default();
        // A member whose url or Host changed leaves and joins afresh.
        let leaving: Vec<String> = self
            .order
            .iter()
            .filter(|name| {
                let e = &self.entries[name.as_str()];
                wanted
                    .get(name.as_str())
                    .is_none_or(|w| w.target.url != e.target.url || w.host != e.status.host)
            })
            .cloned()
            .collect();
        for name in leaving {
            self.remove(&name);
            change.removed.push(name);
        }
        for member in desired {
            match self.entries.get(&member.target.name) {
                None => {
                    let name = member.target.name.clone();
                    self.add(member);
                    change.added.push(name);
                }
                Some(e) if e.target.probe != member.target.probe || e.lookup != member.lookup => {
                    let name = member.target.name.clone();
                    self.reset(member);
                    change.reset.push(name);
                }
                Some(_) => {}
            }
        }
        change.version = self.version;
        change
    }

    fn spawn_probe(&mut self, member: &Wanted) -> (u64, Arc<Trigger>, Owned) {
        self.next_id += 1;
        let id = self.next_id;
        // One burst at a time: `bursting` keeps a second from being asked.
        let trigger = Arc::new(Trigger::default());
        let task = tokio::spawn(probe_loop(
            id,
            member.clone(),
            self.results_tx.clone(),
            trigger.clone(),
            self.resolver.clone(),
        ));
        self.ids.insert(id, member.target.name.clone());
        (id, trigger, Owned(task))
    }

    fn add(&mut self, member: Wanted) {
        let (id, trigger, task) = self.spawn_probe(&member);
        let status = member.status();
        let target = member.target;
        let entry = Entry {
            id,
            tracker: HealthTracker::new(target.probe.rise, target.probe.fall),
            status,
            report_window: target.probe.interval.max(MIN_REPORT_WINDOW),
            trigger,
            bursting: false,
            last_burst: None,
            probes_succeeded: 0,
            probes_failed: 0,
            probe_duration: Arc::default(),
            _task: task,
            lookup: member.lookup,
            target,
        };
        let status = entry.status.clone();
        self.order.push(status.name.clone());
        self.entries.insert(status.name.clone(), entry);
        self.unprobed += 1;
        if self.started {
            let v = self.publish(UpdateKind::Change(status.clone()));
            info!(target: "hc", "{} joined the pool ({}) v{v}", status.name, status.url);
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(entry) = self.entries.remove(name) else {
            return;
        };
        self.ids.remove(&entry.id);
        self.order.retain(|n| n != name);
        if entry.tracker.state() == HealthState::Unknown {
            self.unprobed = self.unprobed.saturating_sub(1);
        }
        let v = self.publish(UpdateKind::Removed(name.to_owned()));
        info!(target: "hc", "{name} left the pool ({}) v{v}", entry.target.url);
        // Dropping `entry` stops its probe task.
    }

    /// Same name and url, new probe settings: a new probe task and tracker,
    /// state unknown; the counters stay (the member never left).
    fn reset(&mut self, member: Wanted) {
        let (id, trigger, task) = self.spawn_probe(&member);
        let status = member.status();
        let (target, lookup) = (member.target, member.lookup);
        let Some(entry) = self.entries.get_mut(&target.name) else {
            return;
        };
        self.ids.remove(&entry.id);
        if entry.tracker.state() != HealthState::Unknown {
            self.unprobed += 1;
        }
        entry.id = id;
        entry.trigger = trigger;
        entry._task = task;
        entry.bursting = false;
        entry.last_burst = None;
        entry.report_window = target.probe.interval.max(MIN_REPORT_WINDOW);
        entry.tracker = HealthTracker::new(target.probe.rise, target.probe.fall);
        // The operator's drain outlives a change of probe settings.
        entry.status = TargetStatus {
            draining: entry.status.draining,
            ..status
        };
        entry.target = target;
        entry.lookup = lookup;
        let status = entry.status.clone();
        let v = self.publish(UpdateKind::Change(status.clone()));
        info!(target: "hc", "{} probe settings changed: probing afresh v{v}", status.name);
    }

    fn resolved(&mut self, answer: Resolved) {
        let Some(group) = self.dns.get_mut(&answer.entry) else {
            return;
        };
        if group.id != answer.id {
            return; // from a task that has been replaced
        }
        let first = !group.looked_up;
        group.looked_up = true;
        let name = &group.entry.target.name;
        let url = &group.entry.target.url;
        match answer.result {
            // A DNS blip must not empty a pool: keep the last members.
            Err(e) => warn!(
                target: "hc",
                "{name}: cannot resolve {url}: {e}; keeping its {} members",
                group.addrs.len()
            ),
            Ok(addrs) if addrs.is_empty() => warn!(
                target: "hc",
                "{name}: {url} resolved to no address; keeping its {} members",
                group.addrs.len()
            ),
            Ok(mut addrs) => {
                addrs.sort_unstable();
                addrs.dedup();
                if addrs != group.addrs {
                    debug!(target: "hc", "{name}: {url} resolved to {addrs:?}");
                    group.addrs = addrs;
                    self.reconcile();
                }
            }
        }
        if first {
            self.check_first_round();
        }
    }

    // --- probes ---

    fn probed(&mut self, probed: Probed) {
        let Some(name) = self.ids.get(&probed.id) else {
            // From a member that left or a probe task that was replaced.
            return;
        };
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if probed.ends_burst {
            entry.bursting = false;
        }
        let first = entry.tracker.state() == HealthState::Unknown;
        Self::observe(entry, probed.result, &mut self.version, &self.changes);
        if first && entry.tracker.state() != HealthState::Unknown {
            self.unprobed = self.unprobed.saturating_sub(1);
            self.check_first_round();
        }
    }

    fn observe(
        entry: &mut Entry,
        result: ProbeResult,
        version: &mut u64,
        changes: &broadcast::Sender<Arc<HealthUpdate>>,
    ) {
        let now = clock::now_ms();
        match result.outcome {
            ProbeOutcome::Success => entry.probes_succeeded += 1,
            ProbeOutcome::Failure(_) => entry.probes_failed += 1,
        }
        entry.probe_duration.observe(result.latency);
        let transition = entry.tracker.observe(result.outcome, now);
        let status = &mut entry.status;
        status.last_probe_ms = Some(now);
        status.last_latency = Some(result.latency);
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
    fn check_first_round(&mut self) {
        if *self.first_round.borrow() {
            return;
        }
        if self.unprobed == 0 && self.dns.values().all(|g| g.looked_up) {
            info!(target: "hc", "first probe round done at v{}", self.version);
            self.first_round.send_replace(true);
        }
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
