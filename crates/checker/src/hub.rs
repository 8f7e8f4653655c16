//! The hub: the one task that owns the pool's health and its version.
//!
//! Probe tasks send it results; it feeds each result to the target's
//! `HealthTracker`, keeps the published record current, and on every state
//! change bumps the version by one and broadcasts the change. Subscribers,
//! queries and the embedded proxy all ask the hub through its handle, so a
//! snapshot and the changes after it are always consistent.
//!
//! Passive health: [`HubHandle::report`] asks the hub to re-probe a target
//! now. The hub rate-limits reports and wakes the target's probe task, which
//! runs a short burst of probes; their results go through the same path as
//! scheduled ones (the target's tracker decides), so only probes ever change
//! state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use tether_core::{
    HealthState, HealthTracker, HealthUpdate, ProbeOutcome, Target, TargetStatus, UpdateKind,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::probe::{ProbeResult, Prober};

/// How many changes a slow subscriber may fall behind before it is sent a
/// fresh snapshot instead.
const CHANGE_BUFFER: usize = 4096;
/// The first probes of a fresh checker are spread over this much time.
const FIRST_PROBE_SPREAD: Duration = Duration::from_secs(1);
const COMMAND_BUFFER: usize = 256;
const RESULT_BUFFER: usize = 1024;
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
    /// A `Snapshot` update at the current version.
    pub snapshot: HealthUpdate,
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

enum Command {
    Subscribe(oneshot::Sender<Subscription>),
    List(oneshot::Sender<(u64, Vec<TargetStatus>)>),
    Get(String, oneshot::Sender<Option<(u64, TargetStatus)>>),
    Report(Report, oneshot::Sender<ReportOutcome>),
}

/// A cheap, cloneable way to talk to the hub.
#[derive(Clone, Debug)]
pub struct HubHandle {
    commands: mpsc::Sender<Command>,
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

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Subscribe(_) => "Subscribe",
            Command::List(_) => "List",
            Command::Get(..) => "Get",
            Command::Report(..) => "Report",
        })
    }
}

/// A running checker: the hub and one probe task per target. Dropping it
/// stops them all.
#[derive(Debug)]
pub struct Checker {
    handle: HubHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Checker {
    /// Starts the hub and the probe tasks. Must be called inside a tokio
    /// runtime.
    pub fn start(targets: Vec<Target>) -> Checker {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_BUFFER);
        let (res_tx, res_rx) = mpsc::channel(RESULT_BUFFER);
        let mut tasks = Vec::with_capacity(targets.len() + 1);
        let mut triggers = Vec::with_capacity(targets.len());
        for (index, target) in targets.iter().enumerate() {
            // One burst at a time: `bursting` keeps a second from being sent.
            let (trigger, bursts) = mpsc::channel(1);
            tasks.push(tokio::spawn(probe_loop(
                index,
                target.clone(),
                res_tx.clone(),
                bursts,
            )));
            triggers.push(trigger);
        }
        drop(res_tx);
        let hub = Hub::new(targets, triggers);
        tasks.push(tokio::spawn(hub.run(cmd_rx, res_rx)));
        Checker {
            handle: HubHandle { commands: cmd_tx },
            tasks,
        }
    }

    pub fn handle(&self) -> HubHandle {
        self.handle.clone()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a probe task sends the hub: one probe's result.
#[derive(Debug)]
struct Probed {
    index: usize,
    result: ProbeResult,
    /// The last probe of a report burst: the target may be woken again.
    ends_burst: bool,
}

/// Probes one target forever. The first probe comes at a random offset
/// within the first second (or the interval, if shorter): soon enough that
/// a fresh checker knows its pool quickly even with long intervals, spread
/// enough that a large pool is never probed in lockstep; later probes keep
/// that phase. A report burst
/// (`bursts` says how many probes at most) runs between two ticks and
/// restarts the interval after it.
async fn probe_loop(
    index: usize,
    target: Target,
    results: mpsc::Sender<Probed>,
    mut bursts: mpsc::Receiver<u32>,
) {
    let prober = Prober::new(&target);
    let interval = target.probe.interval;
    let offset = interval.min(FIRST_PROBE_SPREAD).mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let probed = Probed { index, result: prober.probe().await, ends_burst: false };
                if results.send(probed).await.is_err() {
                    return;
                }
            }
            Some(probes) = bursts.recv() => {
                if !burst(index, &prober, probes, &results).await {
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
async fn burst(index: usize, prober: &Prober, probes: u32, results: &mpsc::Sender<Probed>) -> bool {
    let probes = probes.max(1);
    for n in 1..=probes {
        let result = prober.probe().await;
        let ends_burst = n == probes || result.outcome == ProbeOutcome::Success;
        let probed = Probed {
            index,
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

struct Entry {
    tracker: HealthTracker,
    status: TargetStatus,
    /// Wakes the probe task for a burst of at most this many probes.
    trigger: mpsc::Sender<u32>,
    /// A burst was asked for and its last result is not in yet.
    bursting: bool,
    /// The target's `fall`: the longest burst.
    fall: u32,
    /// Bursts of this target are at least this far apart.
    report_window: Duration,
    /// When the last counted burst was scheduled.
    last_burst: Option<Instant>,
}

struct Hub {
    version: u64,
    entries: Vec<Entry>,
    changes: broadcast::Sender<Arc<HealthUpdate>>,
}

// === impl Hub ===

impl Hub {
    fn new(targets: Vec<Target>, triggers: Vec<mpsc::Sender<u32>>) -> Hub {
        debug_assert_eq!(targets.len(), triggers.len());
        let entries = targets
            .into_iter()
            .zip(triggers)
            .map(|(t, trigger)| Entry {
                tracker: HealthTracker::new(t.probe.rise, t.probe.fall),
                fall: t.probe.fall.get(),
                report_window: t.probe.interval.max(MIN_REPORT_WINDOW),
                status: TargetStatus::unknown(t.name, t.url, t.probe.kind),
                trigger,
                bursting: false,
                last_burst: None,
            })
            .collect();
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Hub {
            version: 0,
            entries,
            changes,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut results: mpsc::Receiver<Probed>,
    ) {
        loop {
            tokio::select! {
                Some(probed) = results.recv() => {
                    if probed.ends_burst
                        && let Some(entry) = self.entries.get_mut(probed.index)
                    {
                        entry.bursting = false;
                    }
                    self.observe(probed.index, probed.result);
                }
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
                    .iter()
                    .find(|e| e.status.name == name)
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
        }
    }

    /// Decides on a report and, if it passes, wakes the probe task.
    ///
    /// A healthy target gets a burst of the failures it still lacks to
    /// fall, at most one burst per `report_window`. A target still unknown
    /// gets its first probe now; that one is not counted against the window,
    /// as it can happen only once (the state never returns to unknown).
    fn report(&mut self, name: &str) -> ReportOutcome {
        let Some(entry) = self.entries.iter_mut().find(|e| e.status.name == name) else {
            return ReportOutcome::UnknownTarget;
        };
        let now = Instant::now();
        let (probes, counted) = match entry.tracker.state() {
            HealthState::Unhealthy => return ReportOutcome::AlreadyUnhealthy,
            HealthState::Unknown => (1, false),
            HealthState::Healthy => (
                entry
                    .fall
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
        // Full cannot happen while no burst is on; closed means the probe
        // task is gone and there is nobody to wake.
        if entry.trigger.try_send(probes).is_err() {
            return ReportOutcome::RateLimited;
        }
        entry.bursting = true;
        if counted {
            entry.last_burst = Some(now);
        }
        ReportOutcome::Scheduled
    }

    fn statuses(&self) -> Vec<TargetStatus> {
        self.entries.iter().map(|e| e.status.clone()).collect()
    }

    fn snapshot(&self) -> HealthUpdate {
        HealthUpdate {
            version: self.version,
            kind: UpdateKind::Snapshot(self.statuses()),
        }
    }

    fn observe(&mut self, index: usize, result: ProbeResult) {
        let now = now_ms();
        let Some(entry) = self.entries.get_mut(index) else {
            warn!(target: "hc", "probe result for unknown target index {index}");
            return;
        };
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
            ProbeOutcome::Failure => debug!(
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
        let next = self.version + 1;
        debug_assert!(next > self.version, "versions only grow");
        self.version = next;
        match (t.to.is_healthy(), &status.last_error) {
            (false, Some(err)) => info!(
                target: "hc",
                "{} {} -> {} ({err}) v{next}", status.name, t.from, t.to
            ),
            _ => info!(target: "hc", "{} {} -> {} v{next}", status.name, t.from, t.to),
        }
        // No receivers is fine: changes are only for whoever listens now.
        let _ = self.changes.send(Arc::new(HealthUpdate {
            version: next,
            kind: UpdateKind::Change(status.clone()),
        }));
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
