//! When each member is probed: a few scheduler tasks (one per runtime
//! worker thread) own every member's [`Prober`] and its next due time,
//! start each probe as a short-lived task when it falls due, and take the
//! prober back when the probe is done. A task decides nothing: the hub
//! counts the results.
//!
//! Why not a task per member: a checker holds 10,000 members, nearly all
//! idle, and what one keeps while it waits is memory times 10,000. A parked
//! task holds its future (the prober, a timer entry, the wake-up for report
//! bursts, the result sender) for its whole life. Here an idle member is
//! its prober (its settings and, for HTTP and gRPC, the kept connection's
//! socket, see `probe/`) in a map, plus one entry in its scheduler's queue;
//! a probe's task, buffers and timeout timer exist only while it runs.
//!
//! The queue is a binary heap of `(due, member id)` per scheduler, with a
//! single armed timer for its head: O(log n) per probe, 24 bytes per
//! member, and a probe falls due at tokio's timer resolution (1 ms), not at
//! a wheel's coarser slot. An entry is dropped lazily: it counts only if
//! its member still exists, is idle, and is due at exactly that time (a
//! report burst or removal moves or ends a member without searching the
//! heap).
//!
//! Timing is the same as one `tokio::time::interval` per member with
//! `MissedTickBehavior::Delay`, as before: the first probe at a random
//! offset within the first second (or the interval, if shorter), later
//! probes keep that phase (`due + interval`, never drifting by the probe's
//! own duration), and a probe that overran its slot is followed by the
//! next one at once, then `interval` apart. Probes of one scheduler run
//! concurrently: a slow or silent target never holds up the others.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use log::warn;
use tether_core::target::DEFAULT_DNS_REFRESH;
use tether_core::{ProbeOutcome, Target};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::Owned;
use crate::dns::Resolve;
use crate::probe::{ProbeResult, Prober};

/// The first probes of a fresh checker are spread over this much time.
const FIRST_PROBE_SPREAD: Duration = Duration::from_secs(1);
/// The pause between two probes of a report burst.
pub const BURST_GAP: Duration = Duration::from_millis(50);

/// What the schedulers send the hub: one probe's result.
#[derive(Debug)]
pub(super) struct Probed {
    /// The member's generation id.
    pub(super) id: u64,
    pub(super) result: ProbeResult,
    /// The last probe of a report burst: the target may be woken again.
    pub(super) ends_burst: bool,
    /// When the probe started: one that started before the checker
    /// recovered is no fresh look (see `impaired.rs`).
    pub(super) started: Instant,
}

/// What the hub asks of a scheduler.
enum Command {
    Add {
        id: u64,
        prober: Box<Prober>,
        interval: Duration,
    },
    Remove(u64),
    /// A report burst of at most this many probes.
    Burst(u64, u32),
}

/// The schedulers of one hub; dropping it stops them and their probes.
pub(super) struct Schedulers {
    shards: Vec<mpsc::UnboundedSender<Command>>,
    _tasks: Vec<Owned>,
}

impl Schedulers {
    /// One scheduler per runtime worker thread. Must be called inside a
    /// tokio runtime.
    pub(super) fn start(results: &mpsc::Sender<Probed>) -> Schedulers {
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let (shards, tasks) = (0..workers)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let shard = Shard::new(results.clone());
                (tx, Owned(tokio::spawn(shard.run(rx))))
            })
            .unzip();
        Schedulers {
            shards,
            _tasks: tasks,
        }
    }

    /// Starts probing `target` under generation `id` (with `host` as its
    /// Host when that is not the url's, and its name looked up every
    /// `lookup`); the returned slot stops it when dropped.
    pub(super) fn add(
        &self,
        id: u64,
        target: &Target,
        host: Option<&str>,
        lookup: Option<Duration>,
        resolver: Arc<dyn Resolve>,
    ) -> Slot {
        let refresh = lookup.unwrap_or(DEFAULT_DNS_REFRESH);
        let prober = Prober::new(target).with_resolver(resolver, refresh);
        let prober = match host {
            Some(host) => prober.with_host(host),
            None => prober,
        };
        // Ids grow by one per member: consecutive members spread evenly.
        let index = usize::try_from(id).unwrap_or(0) % self.shards.len();
        let tx = self.shards[index].clone();
        // A scheduler only stops with its hub, which owns this one.
        let _ = tx.send(Command::Add {
            id,
            prober: Box::new(prober),
            interval: target.probe.interval,
        });
        Slot { id, tx }
    }
}

/// A member's place in its scheduler: asks for report bursts, and takes
/// the member out of the schedule when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
}

impl Slot {
    /// Runs a report burst of at most `probes` probes: now if the member
    /// is idle, else right after its running probe.
    pub(super) fn burst(&self, probes: u32) {
        let _ = self.tx.send(Command::Burst(self.id, probes));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Remove(self.id));
    }
}

/// One member in its scheduler.
struct Member {
    /// `None` while a probe of it runs (the probe task has it).
    prober: Option<Box<Prober>>,
    interval: Duration,
    /// When its next scheduled probe is due; a queue entry at another
    /// time is stale.
    due: Instant,
    /// The running probe, to stop it if the member leaves.
    running: Option<AbortHandle>,
    /// A burst asked for while a probe ran: it runs next.
    burst: Option<u32>,
}

/// What a probe task hands back.
struct Done {
    id: u64,
    prober: Box<Prober>,
    /// It was a burst: the interval starts again from its end.
    burst: bool,
    /// The hub is gone.
    hub_gone: bool,
}

/// One scheduler: its members, their queue, and their running probes.
struct Shard {
    members: HashMap<u64, Member>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    running: JoinSet<Done>,
    results: mpsc::Sender<Probed>,
}

impl Shard {
    fn new(results: mpsc::Sender<Probed>) -> Shard {
        Shard {
            members: HashMap::new(),
            queue: BinaryHeap::new(),
            running: JoinSet::new(),
            results,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // Armed for the head of the queue; parked far away when it is
        // empty (a `Sleep` is reset in place, never made again).
        let far = || Instant::now() + Duration::from_secs(86_400);
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        loop {
            let head = self.queue.peek().map(|Reverse((at, _))| *at);
            let armed = head.unwrap_or_else(far);
            if timer.deadline() != armed {
                timer.as_mut().reset(armed);
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // The hub is gone.
                    None => return,
                },
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    match done {
                        Ok(done) if done.hub_gone => return,
                        Ok(done) => self.done(done),
                        // Aborted: its member left. A panic is a bug; the
                        // member is no longer probed, as a panicked task
                        // per member would not be either.
                        Err(e) if e.is_panic() => warn!(target: "hc", "a probe panicked: {e}"),
                        Err(_) => {}
                    }
                }
                () = &mut timer, if head.is_some() => self.fire(Instant::now()),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                id,
                prober,
                interval,
            } => {
                let offset = interval.min(FIRST_PROBE_SPREAD).mul_f64(fastrand::f64());
                let due = Instant::now() + offset;
                self.members.insert(
                    id,
                    Member {
                        prober: Some(prober),
                        interval,
                        due,
                        running: None,
                        burst: None,
                    },
                );
                self.queue.push(Reverse((due, id)));
            }
            Command::Remove(id) => {
                if let Some(Member {
                    running: Some(probe),
                    ..
                }) = self.members.remove(&id)
                {
                    probe.abort();
                }
            }
            Command::Burst(id, probes) => {
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                match member.prober.take() {
                    Some(prober) => self.start_burst(id, prober, probes),
                    // The latest ask wins, as it did with one task each.
                    None => member.burst = Some(probes),
                }
            }
        }
    }

    /// Starts every probe that is due at `now`.
    fn fire(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            let Some(member) = self.members.get_mut(&id) else {
                continue; // left
            };
            if member.due != at {
                continue; // moved by a burst
            }
            let Some(prober) = member.prober.take() else {
                continue; // running a burst
            };
            let results = self.results.clone();
            let probe = self.running.spawn(async move {
                let started = Instant::now();
                let mut prober = prober;
                let result = prober.probe().await;
                let probed = Probed {
                    id,
                    result,
                    ends_burst: false,
                    started,
                };
                let hub_gone = results.send(probed).await.is_err();
                Done {
                    id,
                    prober,
                    burst: false,
                    hub_gone,
                }
            });
            member.running = Some(probe);
        }
    }

    fn start_burst(&mut self, id: u64, mut prober: Box<Prober>, probes: u32) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let results = self.results.clone();
        let probe = self.running.spawn(async move {
            let hub_gone = !burst(id, &mut prober, probes, &results).await;
            Done {
                id,
                prober,
                burst: true,
                hub_gone,
            }
        });
        member.running = Some(probe);
    }

    /// A probe or burst ended: schedule the member's next probe.
    fn done(&mut self, done: Done) {
        let Done {
            id, prober, burst, ..
        } = done;
        let Some(member) = self.members.get_mut(&id) else {
            return; // left while probed
        };
        member.running = None;
        if let Some(probes) = member.burst.take() {
            self.start_burst(id, prober, probes);
            return;
        }
        let now = Instant::now();
        member.due = if burst {
            now + member.interval
        } else {
            (member.due + member.interval).max(now)
        };
        member.prober = Some(prober);
        self.queue.push(Reverse((member.due, id)));
    }
}

/// Up to `probes` (at least one) probes [`BURST_GAP`] apart, ending at the
/// first success; the last result says it ends the burst. False when the
/// hub is gone.
async fn burst(id: u64, prober: &mut Prober, probes: u32, results: &mpsc::Sender<Probed>) -> bool {
    let probes = probes.max(1);
    for n in 1..=probes {
        let started = Instant::now();
        let result = prober.probe().await;
        let ends_burst = n == probes || result.outcome == ProbeOutcome::Success;
        let probed = Probed {
            id,
            result,
            ends_burst,
            started,
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
