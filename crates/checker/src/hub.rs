//! The hub: the one task that owns the pool's health and its version.
//!
//! Probe tasks send it results; it feeds each result to the target's
//! `HealthTracker`, keeps the published record current, and on every state
//! change bumps the version by one and broadcasts the change. Subscribers,
//! queries and the embedded proxy all ask the hub through its handle, so a
//! snapshot and the changes after it are always consistent.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use tether_core::{HealthTracker, HealthUpdate, ProbeOutcome, Target, TargetStatus, UpdateKind};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::probe::{ProbeResult, Prober};

/// How many changes a slow subscriber may fall behind before it is sent a
/// fresh snapshot instead.
const CHANGE_BUFFER: usize = 4096;
const COMMAND_BUFFER: usize = 256;
const RESULT_BUFFER: usize = 1024;

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

enum Command {
    Subscribe(oneshot::Sender<Subscription>),
    List(oneshot::Sender<(u64, Vec<TargetStatus>)>),
    Get(String, oneshot::Sender<Option<(u64, TargetStatus)>>),
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
        for (index, target) in targets.iter().enumerate() {
            tasks.push(tokio::spawn(probe_loop(
                index,
                target.clone(),
                res_tx.clone(),
            )));
        }
        drop(res_tx);
        let hub = Hub::new(targets);
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

/// Probes one target forever, spread over its interval by a random first
/// offset so a large pool is never probed in lockstep.
async fn probe_loop(index: usize, target: Target, results: mpsc::Sender<(usize, ProbeResult)>) {
    let prober = Prober::new(&target);
    let interval = target.probe.interval;
    let offset = interval.mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = prober.probe().await;
        if results.send((index, result)).await.is_err() {
            return;
        }
    }
}

struct Entry {
    tracker: HealthTracker,
    status: TargetStatus,
}

struct Hub {
    version: u64,
    entries: Vec<Entry>,
    changes: broadcast::Sender<Arc<HealthUpdate>>,
}

// === impl Hub ===

impl Hub {
    fn new(targets: Vec<Target>) -> Hub {
        let entries = targets
            .into_iter()
            .map(|t| Entry {
                tracker: HealthTracker::new(t.probe.rise, t.probe.fall),
                status: TargetStatus::unknown(t.name, t.url, t.probe.kind),
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
        mut results: mpsc::Receiver<(usize, ProbeResult)>,
    ) {
        loop {
            tokio::select! {
                Some((index, result)) = results.recv() => self.observe(index, result),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.answer(cmd),
                    // Every handle is gone: nobody can ask any more.
                    None => return,
                },
            }
        }
    }

    fn answer(&self, cmd: Command) {
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
        }
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
