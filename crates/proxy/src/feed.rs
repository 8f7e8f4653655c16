//! The health feed: the one task that owns the proxy's view of the pool and
//! republishes the routing table when it changes.
//!
//! It subscribes to the first reachable source, applies the snapshot and
//! every change in order, and asks again on a version gap. When a stream
//! breaks it keeps the last table (fail static: the proxy goes on serving on
//! the last health it knew), moves on to the next checker, and after a whole
//! round of failures waits a capped, jittered, exponential backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{debug, info, warn};
use tether_core::{Applied, CheckerView, HealthState, HealthUpdate};
use tokio::time::Instant;

use crate::source::{Source, Updates};
use crate::stats::ProxyStats;
use crate::table::{self, TableCell};

const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// At most this long between two rounds of attempts, so a checker that comes
/// back is followed within about a second (one connect and a Watch per
/// proxy per second is nothing to a checker).
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// The longest the proxy waits, after its first snapshot, for every member
/// to have a first probe result before it serves on what it has. A checker
/// probes each target within its first second, so this is only reached
/// when probes time out.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the feed until the task is dropped (the caller stops it when the
/// drain starts).
pub async fn run(source: Source, cell: Arc<TableCell>, stats: Arc<ProxyStats>) {
    let mut feed = Feed {
        view: CheckerView::new(),
        cell,
        stats,
        settle_by: None,
    };
    let mut subscriptions = 0u64;
    let count = source.count().max(1);
    let mut index = 0;
    let mut failed_in_round = 0;
    let mut rounds_failed = 0u32;
    loop {
        let label = source.label(index);
        let end = match source.open(index).await {
            Ok(updates) => {
                info!(target: "proxy", "health feed: subscribed to {label}");
                if subscriptions > 0 {
                    feed.stats.health_stream_reconnects.inc();
                }
                subscriptions += 1;
                feed.follow(updates).await
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
            End::Failed { synced, reason } => {
                feed.view.stream_up = false;
                warn!(target: "proxy", "health feed: {label}: {reason}; keeping the last table");
                if synced {
                    // This source worked: give every source a fresh round.
                    failed_in_round = 0;
                    rounds_failed = 0;
                }
            }
        }
        index = (index + 1) % count;
        failed_in_round += 1;
        if failed_in_round >= count {
            failed_in_round = 0;
            let wait = backoff(rounds_failed);
            rounds_failed = rounds_failed.saturating_add(1);
            debug!(target: "proxy", "health feed: retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Full-jitter exponential backoff: a random wait in [d/2, d] where d
/// doubles per failed round up to the cap.
fn backoff(rounds_failed: u32) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1u32 << rounds_failed.min(16))
        .min(BACKOFF_CAP);
    d.mul_f64(0.5 + fastrand::f64() / 2.0)
}

enum End {
    Gap { have: Option<u64>, got: u64 },
    Failed { synced: bool, reason: String },
}

struct Feed {
    /// What the source says; the routing table is built from the merge of
    /// such views.
    view: CheckerView,
    cell: Arc<TableCell>,
    stats: Arc<ProxyStats>,
    /// Set at the first snapshot while some member has no verdict yet.
    settle_by: Option<Instant>,
}

impl Feed {
    async fn follow(&mut self, mut updates: Updates) -> End {
        let mut synced = false;
        loop {
            let next = match self.settle_by {
                Some(deadline) => tokio::select! {
                    next = updates.next() => next,
                    () = tokio::time::sleep_until(deadline) => {
                        self.settle("some members have no first probe result yet; serving on the others");
                        continue;
                    }
                },
                None => updates.next().await,
            };
            let update = match next {
                Ok(Some(u)) => u,
                Ok(None) => {
                    return End::Failed {
                        synced,
                        reason: "stream ended".to_owned(),
                    };
                }
                Err(reason) => return End::Failed { synced, reason },
            };
            let is_snapshot = matches!(update.kind, tether_core::UpdateKind::Snapshot(_));
            if !synced && !is_snapshot {
                // A subscription must start with a snapshot.
                return End::Gap {
                    have: self.view.pool.version(),
                    got: update.version,
                };
            }
            synced = true;
            self.view.stream_up = true;
            match self.apply(update) {
                Ok(()) => {}
                Err(gap) => return gap,
            }
        }
    }

    fn apply(&mut self, update: HealthUpdate) -> Result<(), End> {
        let version = update.version;
        match self.view.pool.apply(update) {
            Ok(Applied::Changed) => {
                let Some(merged) = tether_core::merge([&self.view]) else {
                    return Ok(());
                };
                let routes = table::build(Some(version), &merged, &self.cell.load());
                info!(
                    target: "proxy",
                    "routing table v{version}: {}/{} healthy [{}]",
                    routes.healthy().len(),
                    routes.members().len(),
                    summary(&routes)
                );
                self.cell.store(routes);
                self.stats.health_version.set(version);
                self.stats.health_updates.inc();
                self.check_settled();
                Ok(())
            }
            Ok(Applied::Stale) => Ok(()),
            Err(gap) => Err(End::Gap {
                have: gap.have,
                got: gap.got,
            }),
        }
    }
}

impl Feed {
    /// Startup rule: serve once every member has a first verdict (known
    /// from an earlier table counts), or the deadline after the first
    /// snapshot has passed. Once settled, always settled: members added
    /// later simply get no traffic until they are probed healthy.
    fn check_settled(&mut self) {
        if self.stats.is_settled() {
            return;
        }
        let table = self.cell.load();
        let targets = self.view.pool.targets();
        let all_known = !targets.is_empty()
            && targets.iter().all(|t| {
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
