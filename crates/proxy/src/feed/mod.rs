//! The health feed: one task per checker follows its stream, and one task
//! owns the merge of what they say and republishes the routing table when
//! it changes.
//!
//! A follower applies its checker's snapshot and every change in order,
//! asks again on a version gap, and after a broken stream reconnects with
//! its own capped, jittered, exponential backoff. It sends its whole view
//! (pool, version, stream up or not, impaired or not) to the merger after
//! every change; the merger alone writes the table. Versions are each
//! checker's own, so a gap is a matter between one follower and one checker.
//!
//! With `[health_source] expand = "dns"`, a checker url whose host is a
//! name is looked up every `dns_refresh` by a task of its own, which keeps
//! one follower per address (a headless Service's pods).
//!
//! The merge is `tether_core::merge`: a member leaves rotation only when a
//! majority of the live checkers that know it say it is unhealthy. With no
//! live checker the table stays as it was (fail static). Embedded mode is
//! the same code with one endpoint, the in-process hub.
//!
//! Files: `follow.rs` (one checker's stream), `names.rs` (checker names
//! expanded by DNS); this one holds the merger, the one writer of the
//! table.

mod follow;
mod names;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use log::info;
use tether_core::{CheckerView, HealthState, TargetStatus};
use tether_daemon::clock;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::source::{Endpoint, Place, Source};
use crate::stats::ProxyStats;
use crate::table::{self, TableCell};
use follow::follow;
use names::{Name, expand};

/// The longest the proxy waits, after its first snapshot, for every member
/// to have a first probe result before it serves on what it has. A checker
/// probes each target within its first second, so this is only reached
/// when probes time out.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(5);
/// Views in flight from followers to the merger; a follower waits when the
/// merger is this far behind.
const EVENTS: usize = 64;

/// What the feed knows of every checker, for the admin endpoint and for
/// reports. The merger replaces it after every event.
#[derive(Debug, Default)]
pub struct FeedStatus {
    /// In config order; the addresses of one name in address order.
    pub checkers: Vec<CheckerEntry>,
    /// How many routing tables the merge has published; `None` before the
    /// first. This is the routing table's version.
    pub generation: Option<u64>,
}

/// One checker as the feed sees it.
#[derive(Clone, Debug)]
pub struct CheckerEntry {
    /// The feed's own number for it, never reused.
    id: usize,
    /// Where it sorts: its config entry, then its address for a name.
    order: (usize, Option<SocketAddr>),
    pub endpoint: Endpoint,
    pub label: String,
    pub view: Arc<CheckerView>,
}

impl FeedStatus {
    /// Checkers whose word counts now.
    pub fn live(&self) -> impl Iterator<Item = &CheckerEntry> {
        self.checkers.iter().filter(|c| c.view.is_live())
    }
}

/// Where the merger publishes [`FeedStatus`].
pub type FeedCell = ArcSwap<FeedStatus>;

/// A new cell: no checker known yet.
pub fn cell() -> Arc<FeedCell> {
    Arc::new(ArcSwap::from_pointee(FeedStatus::default()))
}

/// Runs the feed until the task is dropped (the caller stops it when the
/// drain starts); the followers and name lookups stop with it.
pub async fn run(
    source: Source,
    status: Arc<FeedCell>,
    cell: Arc<TableCell>,
    stats: Arc<ProxyStats>,
) {
    let (tx, rx) = mpsc::channel(EVENTS);
    let ids = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let mut checkers = Vec::new();
    for (order, place) in source.places().into_iter().enumerate() {
        match place {
            Place::Fixed(endpoint) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                checkers.push(CheckerEntry {
                    id,
                    order: (order, None),
                    label: endpoint.label(),
                    endpoint: endpoint.clone(),
                    view: Arc::default(),
                });
                tasks.spawn(follow(id, endpoint, tx.clone(), stats.clone()));
            }
            Place::Dns {
                uri,
                host,
                port,
                tls,
                dns,
            } => {
                let name = Name {
                    order,
                    uri,
                    host,
                    port,
                    tls,
                };
                tasks.spawn(expand(name, dns, ids.clone(), tx.clone(), stats.clone()));
            }
        }
    }
    drop(tx);
    let merger = Merger {
        checkers,
        status,
        cell,
        stats,
        merged: None,
        generation: 0,
        settle_by: None,
    };
    merger.run(rx).await;
    // Dropping the set aborts the followers and lookups.
    drop(tasks);
}

/// What followers and name lookups tell the merger.
#[derive(Debug)]
enum Event {
    /// Checker `id` now says `view`.
    View { id: usize, view: Arc<CheckerView> },
    /// A new address of a name; its follower starts right after.
    Added(Box<CheckerEntry>),
    /// An address a name no longer has; its follower was stopped.
    Gone { id: usize },
}

// === the merger ===

struct Merger {
    checkers: Vec<CheckerEntry>,
    status: Arc<FeedCell>,
    cell: Arc<TableCell>,
    stats: Arc<ProxyStats>,
    /// The last merge a table was built from.
    merged: Option<Vec<TargetStatus>>,
    generation: u64,
    /// Set at the first table while some member has no verdict yet.
    settle_by: Option<Instant>,
}

impl Merger {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        self.republish();
        loop {
            let next = match self.settle_by {
                Some(deadline) => tokio::select! {
                    next = events.recv() => next,
                    () = tokio::time::sleep_until(deadline) => {
                        self.settle("some members have no first probe result yet; serving on the others");
                        continue;
                    }
                },
                None => events.recv().await,
            };
            let Some(event) = next else { return };
            match event {
                Event::View { id, view } => {
                    // A view of an address already gone is dropped.
                    let Some(entry) = self.checkers.iter_mut().find(|c| c.id == id) else {
                        continue;
                    };
                    entry.view = view;
                }
                Event::Added(entry) => {
                    let at = self.checkers.partition_point(|c| c.order < entry.order);
                    self.checkers.insert(at, *entry);
                }
                Event::Gone { id } => self.checkers.retain(|c| c.id != id),
            }
            self.republish();
        }
    }

    fn republish(&mut self) {
        let live = self.checkers.iter().filter(|c| c.view.is_live()).count();
        self.stats.checkers_live.set(live as u64);
        // No live checker: `None`, and the table stays (fail static).
        if let Some(merged) = tether_core::merge(self.checkers.iter().map(|c| &*c.view))
            && self.merged.as_ref() != Some(&merged)
        {
            self.generation += 1;
            let routes = table::build(
                Some(self.generation),
                &merged,
                &self.cell.load(),
                clock::now_ms(),
            );
            info!(
                target: "proxy",
                "routing table v{} from {live} of {} checkers: {}/{} healthy [{}]",
                self.generation,
                self.checkers.len(),
                routes.healthy().len(),
                routes.members().len(),
                summary(&routes)
            );
            self.cell.store(routes);
            self.stats.health_updates.inc();
            self.merged = Some(merged);
            self.check_settled();
        }
        self.status.store(Arc::new(FeedStatus {
            checkers: self.checkers.clone(),
            generation: (self.generation > 0).then_some(self.generation),
        }));
    }

    /// Startup rule: serve once every member has a first verdict (known
    /// from an earlier table counts), or the deadline after the first
    /// table has passed. Once settled, always settled: members added
    /// later simply get no traffic until they are probed healthy.
    fn check_settled(&mut self) {
        if self.stats.is_settled() {
            return;
        }
        let Some(merged) = &self.merged else { return };
        let table = self.cell.load();
        let all_known = !merged.is_empty()
            && merged.iter().all(|t| {
                t.state != HealthState::Unknown
                    || table
                        .lookup(&t.name)
                        .and_then(|i| table.member(i))
                        .is_some_and(|m| m.healthy)
            });
        if all_known {
            self.settle("every member has a first verdict; serving");
        } else if self.settle_by.is_none() {
            self.settle_by = Some(Instant::now() + STARTUP_DEADLINE);
        }
    }

    /// Logged before the flag is set, so the line precedes any request
    /// served because of it.
    fn settle(&mut self, why: &str) {
        self.settle_by = None;
        if !self.stats.is_settled() {
            info!(target: "proxy", "startup: {why}");
            self.stats.settled.store(true, Ordering::Relaxed);
        }
    }
}

/// `name=up name=down ...`, cut short for large pools so one change does
/// not write a huge line.
fn summary(routes: &table::Routes) -> String {
    const SHOWN: usize = 16;
    let mut out: Vec<String> = routes
        .members()
        .iter()
        .take(SHOWN)
        .map(|m| format!("{}={}", m.name, if m.healthy { "up" } else { "down" }))
        .collect();
    if routes.members().len() > SHOWN {
        out.push(format!("... {} more", routes.members().len() - SHOWN));
    }
    out.join(" ")
}
