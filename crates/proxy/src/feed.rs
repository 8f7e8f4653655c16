//! The health feed: the one task that owns the proxy's view of the pool and
//! republishes the routing table when it changes.
//!
//! It subscribes to the first reachable source, applies the snapshot and
//! every change in order, and asks again on a version gap. When a stream
//! breaks it keeps the last table (fail static: the proxy goes on serving on
//! the last health it knew), moves on to the next checker, and after a whole
//! round of failures waits a capped, jittered, exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use tether_core::{Applied, HealthUpdate, PoolView};

use crate::source::{Source, Updates};
use crate::table::{self, TableCell};

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Runs the feed forever (the caller aborts it on shutdown).
pub async fn run(source: Source, cell: Arc<TableCell>) {
    let mut feed = Feed {
        view: PoolView::new(),
        cell,
    };
    let count = source.count().max(1);
    let mut index = 0;
    let mut failed_in_round = 0;
    let mut rounds_failed = 0u32;
    loop {
        let label = source.label(index);
        let end = match source.open(index).await {
            Ok(updates) => {
                info!(target: "proxy", "health feed: subscribed to {label}");
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
    view: PoolView,
    cell: Arc<TableCell>,
}

impl Feed {
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
            let is_snapshot = matches!(update.kind, tether_core::UpdateKind::Snapshot(_));
            if !synced && !is_snapshot {
                // A subscription must start with a snapshot.
                return End::Gap {
                    have: self.view.version(),
                    got: update.version,
                };
            }
            synced = true;
            match self.apply(update) {
                Ok(()) => {}
                Err(gap) => return gap,
            }
        }
    }

    fn apply(&mut self, update: HealthUpdate) -> Result<(), End> {
        let version = update.version;
        match self.view.apply(update) {
            Ok(Applied::Changed) => {
                let routes = table::build(&self.view, &self.cell.load());
                info!(
                    target: "proxy",
                    "routing table v{version}: {}/{} healthy [{}]",
                    routes.healthy().len(),
                    routes.members().len(),
                    summary(&routes)
                );
                self.cell.store(routes);
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
