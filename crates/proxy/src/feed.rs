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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use log::{debug, info, warn};
use tether_core::{Applied, CheckerView, HealthState, HealthUpdate, TargetStatus};
use tether_daemon::tls::ClientTls;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::config::CheckerDns;
use crate::source::{Endpoint, Place, Source, Updates};
use crate::stats::ProxyStats;
use crate::table::{self, TableCell};

const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// At most this long between two attempts on one checker, so a checker
/// that comes back is followed within about a second (one connect and a
/// Watch per proxy per second is nothing to a checker).
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// The longest the proxy waits, after its first snapshot, for every member
/// to have a first probe result before it serves on what it has. A checker
/// probes each target within its first second, so this is only reached
/// when probes time out.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(5);
/// Views in flight from followers to the merger; a follower waits when the
/// merger is this far behind.
const EVENTS: usize = 64;
/// A lookup of a checker name taking longer than this (or than the
/// refresh) counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

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

// === names ===

/// A checker url whose host is a name (`expand = "dns"`).
struct Name {
    order: usize,
    uri: http::Uri,
    host: String,
    port: u16,
    tls: Option<ClientTls>,
}

impl Name {
    /// The endpoint of one of its addresses.
    fn endpoint(&self, addr: SocketAddr) -> Option<Endpoint> {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let uri = format!("{scheme}://{addr}").parse().ok()?;
        Some(Endpoint::Checker {
            uri,
            tls: self.tls.clone(),
            name: Some(format!("{}:{}", self.host, self.port)),
        })
    }
}

/// Looks `name` up now and every `dns.refresh`, and keeps one follower per
/// address it has: a new address gets one, a vanished address's stops. A
/// lookup that fails or answers nothing keeps the addresses there were
/// (a DNS blip is not a checker's failure), logged once per failing streak.
async fn expand(
    name: Name,
    dns: CheckerDns,
    ids: Arc<AtomicUsize>,
    tx: mpsc::Sender<Event>,
    stats: Arc<ProxyStats>,
) {
    let label = format!("{}:{}", name.host, name.port);
    let mut followers: BTreeMap<SocketAddr, (usize, AbortHandle)> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    let mut failing = false;
    let mut ticker = tokio::time::interval(dns.refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let lookup = dns.resolver.0.resolve(&name.host, name.port);
        let answer = match tokio::time::timeout(LOOKUP_TIMEOUT.min(dns.refresh), lookup).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
            Ok(Ok(_)) => Err("no addresses".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in time".to_owned()),
        };
        let addrs: BTreeSet<SocketAddr> = match answer {
            Ok(addrs) => addrs.into_iter().collect(),
            Err(why) => {
                if !failing {
                    warn!(target: "proxy", "health feed: cannot look up checkers at {label}: {why}; keeping the {} addresses it had", followers.len());
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            info!(target: "proxy", "health feed: {label} resolves again");
            failing = false;
        }
        let gone: Vec<SocketAddr> = followers
            .keys()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        let added: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| !followers.contains_key(a))
            .copied()
            .collect();
        for addr in &gone {
            if let Some((id, handle)) = followers.remove(addr) {
                handle.abort();
                if tx.send(Event::Gone { id }).await.is_err() {
                    return;
                }
            }
        }
        for addr in &added {
            let Some(endpoint) = name.endpoint(*addr) else {
                continue;
            };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let entry = CheckerEntry {
                id,
                order: (name.order, Some(*addr)),
                label: endpoint.label(),
                endpoint: endpoint.clone(),
                view: Arc::default(),
            };
            // Announced before its follower starts, so the merger knows the
            // id before any view of it arrives.
            if tx.send(Event::Added(Box::new(entry))).await.is_err() {
                return;
            }
            let handle = tasks.spawn(follow(id, endpoint, tx.clone(), stats.clone()));
            followers.insert(*addr, (id, handle));
        }
        if !gone.is_empty() || !added.is_empty() {
            let now: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            info!(target: "proxy", "health feed: checkers at {label}: {} (added {}, gone {})", now.join(" "), added.len(), gone.len());
        }
        // Reap followers that ended (the merger went away).
        while tasks.try_join_next().is_some() {}
    }
}

// === followers ===

/// Follows one checker for as long as the merger listens.
async fn follow(id: usize, endpoint: Endpoint, tx: mpsc::Sender<Event>, stats: Arc<ProxyStats>) {
    let label = endpoint.label();
    let mut follower = Follower {
        id,
        view: CheckerView::new(),
        tx,
    };
    let mut subscriptions = 0u64;
    let mut failures = 0u32;
    loop {
        let end = match endpoint.open().await {
            Ok(updates) => {
                info!(target: "proxy", "health feed: subscribed to {label}");
                if subscriptions > 0 {
                    stats.health_stream_reconnects.inc();
                }
                subscriptions += 1;
                follower.follow(updates).await
            }
            Err(e) => End::Failed {
                synced: false,
                reason: e,
            },
        };
        match end {
            End::Gap { have, got } => {
                warn!(target: "proxy", "health feed: version gap from {label} (have {have:?}, got v{got}); asking again");
                continue;
            }
            End::MergerGone => return,
            End::Failed { synced, reason } => {
                // "keeping the last table" is what tests and the fault suite
                // wait for; with other live checkers their merge rules.
                warn!(target: "proxy", "health feed: {label}: {reason}; its view no longer counts (keeping the last table while no checker is live)");
                if follower.view.stream_up {
                    follower.view.stream_up = false;
                    if !follower.send().await {
                        return;
                    }
                }
                if synced {
                    // This checker worked: start the backoff afresh.
                    failures = 0;
                }
            }
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        debug!(target: "proxy", "health feed: retrying {label} in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// Full-jitter exponential backoff: a random wait in [d/2, d] where d
/// doubles per failed attempt up to the cap.
fn backoff(failures: u32) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_CAP);
    d.mul_f64(0.5 + fastrand::f64() / 2.0)
}

enum End {
    Gap { have: Option<u64>, got: u64 },
    Failed { synced: bool, reason: String },
    MergerGone,
}

struct Follower {
    id: usize,
    view: CheckerView,
    tx: mpsc::Sender<Event>,
}

impl Follower {
    async fn follow(&mut self, mut updates: Updates) -> End {
        let mut synced = false;
        loop {
            let update = match updates.next().await {
                Ok(Some(u)) => u,
                Ok(None) => {
                    return End::Failed {
                        synced,
                        reason: "stream ended".to_owned(),
                    };
                }
                Err(reason) => return End::Failed { synced, reason },
            };
            let is_snapshot = matches!(update.kind, tether_core::UpdateKind::Snapshot { .. });
            if !synced && !is_snapshot {
                // A subscription must start with a snapshot.
                return End::Gap {
                    have: self.view.pool.version(),
                    got: update.version,
                };
            }
            synced = true;
            match self.apply(update) {
                Ok(false) => {}
                Ok(true) => {
                    if !self.send().await {
                        return End::MergerGone;
                    }
                }
                Err(gap) => return gap,
            }
        }
    }

    /// Applies one update; `Ok(true)` when the view changed (a stream that
    /// just came up is a change even if its snapshot is the one it had).
    fn apply(&mut self, update: HealthUpdate) -> Result<bool, End> {
        let came_up = !self.view.stream_up;
        self.view.stream_up = true;
        // The pool view also keeps what the checker says of itself: a
        // snapshot's checker state, or a versioned `UpdateKind::Checker`
        // (impaired or recovered), which changes whether it is live.
        match self.view.pool.apply(update) {
            Ok(Applied::Changed) => Ok(true),
            Ok(Applied::Stale) => Ok(came_up),
            Err(gap) => Err(End::Gap {
                have: gap.have,
                got: gap.got,
            }),
        }
    }

    /// Tells the merger; `false` when it is gone.
    async fn send(&self) -> bool {
        let event = Event::View {
            id: self.id,
            view: Arc::new(self.view.clone()),
        };
        self.tx.send(event).await.is_ok()
    }
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
            let routes = table::build(Some(self.generation), &merged, &self.cell.load());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for round in 0..40 {
            let d = backoff(round);
            assert!(d <= BACKOFF_CAP, "{d:?}");
            assert!(d >= BACKOFF_BASE / 2, "{d:?}");
        }
        assert!(backoff(20) >= BACKOFF_CAP / 2);
    }
}
