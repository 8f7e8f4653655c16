//! Who is in the pool. A reload ([`HubHandle::set_pool`](super::HubHandle::set_pool)) and the
//! resolving tasks of `expand = "dns"` entries say what the pool should be;
//! `reconcile` brings the members in line, one published change per member
//! that joins, leaves or is reset, each with a fresh schedule slot under a new
//! generation id so a late result of a replaced task is dropped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use tether_core::{HealthState, HealthTracker, PoolEntry, Target, TargetStatus, UpdateKind};

use super::report::MIN_REPORT_WINDOW;
use super::schedule::Slot;
use super::{Entry, Hub, Owned};
use crate::dns::{self, Resolved};
use tether_daemon::clock;

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

// === impl Hub ===

impl Hub {
    pub(super) fn set_pool(&mut self, pool: Vec<PoolEntry>) -> MembershipChange {
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
    pub(super) fn reconcile(&mut self) -> MembershipChange {
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

    fn spawn_probe(&mut self, member: &Wanted) -> (u64, Slot) {
        self.next_id += 1;
        let id = self.next_id;
        let slot = self.schedulers.add(
            id,
            &member.target,
            member.host.as_deref(),
            member.lookup,
            self.resolver.clone(),
        );
        self.ids.insert(id, member.target.name.clone());
        (id, slot)
    }

    fn add(&mut self, member: Wanted) {
        let (id, probe) = self.spawn_probe(&member);
        let status = member.status();
        let target = member.target;
        let entry = Entry {
            id,
            tracker: HealthTracker::new(target.probe.rise, target.probe.fall),
            status,
            report_window: target.probe.interval.max(MIN_REPORT_WINDOW),
            probe,
            bursting: false,
            last_burst: None,
            probes_succeeded: 0,
            probes_failed: 0,
            probe_duration: Arc::default(),
            reprobe: false,
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
        let members = self.entries.len();
        if let Some(state) = self
            .detector
            .forget(&entry.status.name, members, clock::now_ms())
        {
            self.checker_changed(state);
        }
        if entry.tracker.state() == HealthState::Unknown {
            self.unprobed = self.unprobed.saturating_sub(1);
        }
        let v = self.publish(UpdateKind::Removed(name.to_owned()));
        info!(target: "hc", "{name} left the pool ({}) v{v}", entry.target.url);
        // Dropping `entry` takes it out of the probe schedule.
    }

    /// Same name and url, new probe settings: a new schedule slot and tracker,
    /// state unknown; the counters stay (the member never left).
    fn reset(&mut self, member: Wanted) {
        let (id, probe) = self.spawn_probe(&member);
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
        entry.probe = probe;
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

    pub(super) fn resolved(&mut self, answer: Resolved) {
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
}

/// A member the configured pool stands for.
#[derive(Clone, Debug)]
pub(super) struct Wanted {
    pub(super) target: Target,
    /// The Host its requests and probes send when that is not the url's
    /// (a DNS member keeps its entry's host).
    pub(super) host: Option<String>,
    /// A static target given by host name: how long one lookup stands
    /// (`[health] dns_refresh`). `None` for an address, which is never
    /// looked up, so a changed refresh re-probes only the members it
    /// applies to.
    pub(super) lookup: Option<Duration>,
}

/// Whether probes of `target` look its host up (a name, not an address).
fn looks_up(target: &Target) -> bool {
    target
        .host_port()
        .is_some_and(|(host, _)| host.parse::<std::net::IpAddr>().is_err())
}

impl Wanted {
    pub(super) fn status(&self) -> TargetStatus {
        let t = &self.target;
        TargetStatus {
            host: self.host.clone(),
            ..TargetStatus::unknown(&t.name, &t.url, t.probe.kind)
        }
    }
}

/// An `expand = "dns"` entry: its resolving task and the addresses of its
/// last usable answer.
pub(super) struct DnsGroup {
    entry: PoolEntry,
    /// The resolving task's generation id.
    id: u64,
    /// Sorted, without duplicates.
    addrs: Vec<SocketAddr>,
    /// The first lookup has answered (or failed).
    pub(super) looked_up: bool,
    _task: Option<Owned>,
}
